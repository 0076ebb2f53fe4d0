"""HunyuanVideo-1.5's condition inputs: the first frame (image-to-video) or their empty stand-ins (text-to-video).

The DiT takes the noise concatenated on the channel axis with a condition video (the first
frame's latents, zeros after) and a mask (1 on the first latent frame), and cross-attends to
SigLIP's tokens of the first frame. Text-to-video gives zero channels, as
``HunyuanVideo15Pipeline`` does, and no vision tokens: the reference's 729 all-zero tokens are
masked out by the DiT, so leaving them out changes nothing and keeps attention mask-free.
"""

from __future__ import annotations

import torch

from sgld.models.placement import Placement
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.first_frame import ChannelConditionDit, input_image
from sgld.stages.latent_norm import LatentNorm


class Hunyuan15ConditionStage(Stage):
    """Sets ``condition_channels`` (condition latents + mask) and both branches' ``image_embeds``.

    ``image_encoder`` None: text-to-video (zero channels, no vision tokens of width ``image_dim``).
    Otherwise the input image is resized and centre-cropped to the output size, VAE-encoded (its
    mode) into the first latent frame, and read by SigLIP (last hidden state).
    """

    name = "condition_latents"

    def __init__(self, vae, placement: Placement, out_dtype: torch.dtype, image_dim: int,
                 image_encoder=None, feature_extractor=None):
        from diffusers.pipelines.hunyuan_video1_5.image_processor import HunyuanVideo15ImageProcessor

        self.vae = vae
        self.placement = placement
        self.out_dtype = out_dtype
        self.image_dim = image_dim
        self.image_encoder, self.feature_extractor = image_encoder, feature_extractor
        self.processor = HunyuanVideo15ImageProcessor(vae_scale_factor=vae.config.spatial_compression_ratio,
                                                      do_resize=False, do_convert_rgb=True)
        self.norm = LatentNorm.of(vae)

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        batch, channels, frames, height, width = req.latents.shape
        device = req.latents.device
        condition = torch.zeros(batch, channels + 1, frames, height, width, device=device)
        if self.image_encoder is None:
            embeds = torch.zeros(batch, 0, self.image_dim, device=self.placement.device, dtype=self.out_dtype)
        else:
            image = self.processor.resize(input_image(req), height=req.height, width=req.width, resize_mode="crop")
            embeds = self._siglip(image)
            condition[:, :channels, :1] = self._first_frame_latents(image, req).to(device)
            condition[:, channels, 0] = 1.0
        req.condition_channels = condition
        for branch in (req.cond_kwargs, req.uncond_kwargs):
            if branch is not None:
                branch["image_embeds"] = embeds
        return req

    def _siglip(self, image) -> torch.Tensor:
        pixels = self.feature_extractor.preprocess(images=image, do_resize=True, return_tensors="pt", do_convert_rgb=True)
        with self.placement.active("image_encoder", self.image_encoder) as encoder:
            param = next(encoder.parameters())
            tokens = encoder(pixel_values=pixels["pixel_values"].to(param.device, param.dtype)).last_hidden_state
        return tokens.to(device=self.placement.device, dtype=self.out_dtype)

    def _first_frame_latents(self, image, req: Request) -> torch.Tensor:
        pixels = self.processor.preprocess(image, height=req.height, width=req.width).unsqueeze(2)
        with self.placement.active("vae", self.vae) as vae:
            param = next(vae.parameters())
            latents = vae.encode(pixels.to(param.device, vae.dtype)).latent_dist.mode()
        return self.norm.normalize(latents).float()


class Hunyuan15Dit(ChannelConditionDit):
    """The condition channels after the noise, and the timestep in the DiT's dtype (the reference casts it so)."""

    def timestep(self, t: torch.Tensor, latents: torch.Tensor, batch: int, req: Request) -> torch.Tensor:
        return t.expand(batch).to(self.dtype)
