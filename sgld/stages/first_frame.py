"""Image-to-video conditioning for Wan: the input image as the video's first frame.

Two ways, as diffusers' ``WanImageToVideoPipeline`` does them:
- Wan2.1 I2V / Wan2.2 I2V A14B: the image, followed by black frames, is VAE-encoded to a
  whole-video condition; a 4-channel mask marks the first frame; mask and condition are
  concatenated to the noise on the channel axis at every step (``req.condition_channels``).
  Wan2.1 I2V also cross-attends to the image's CLIP vision tokens.
- Wan2.2 TI2V-5B: the image alone is encoded to one latent frame that replaces the first
  latent frame at every step, whose tokens get timestep 0 (``req.first_frame_latents``).

The denoise loop gives the DiT these conditions through the adapters at the end (``DitAdapter``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sgld.checks import open_input_image
from sgld.models.placement import Placement
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.dit_adapter import DitAdapter
from sgld.stages.latent_norm import LatentNorm

if TYPE_CHECKING:
    from PIL.Image import Image


def input_image(req: Request) -> Image:
    """The request's input image (PIL RGB), opened once and kept on the request."""
    if req.condition_image is None:
        req.condition_image = [open_input_image(req.image_paths[0])]
    return req.condition_image[0]


class ImageEmbeddingStage(Stage):
    """Wan2.1 I2V: the CLIP vision encoder's penultimate hidden states, given to both CFG branches."""

    name = "encode_image"

    def __init__(self, image_processor, image_encoder, placement: Placement, out_dtype: torch.dtype):
        self.image_processor = image_processor
        self.image_encoder = image_encoder
        self.placement = placement
        self.out_dtype = out_dtype

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        pixels = self.image_processor(images=input_image(req), return_tensors="pt")
        with self.placement.active("image_encoder", self.image_encoder) as encoder:
            param = next(encoder.parameters())
            values = pixels["pixel_values"].to(device=param.device, dtype=param.dtype)
            tokens = encoder(pixel_values=values, output_hidden_states=True).hidden_states[-2]
        tokens = tokens.to(device=self.placement.device, dtype=self.out_dtype)
        req.cond_kwargs["encoder_hidden_states_image"] = tokens
        if req.uncond_kwargs is not None:
            req.uncond_kwargs["encoder_hidden_states_image"] = tokens
        return req


class FirstFrameConditionStage(Stage):
    """VAE-encodes the input image (resized to the output size) into the first-frame condition.

    ``first_frame_only`` (Wan2.2 TI2V): one latent frame in ``req.first_frame_latents``;
    otherwise mask + whole-video condition in ``req.condition_channels``. Without an input
    image (TI2V from text) the stage does nothing.
    """

    name = "condition_latents"

    def __init__(self, vae, placement: Placement, first_frame_only: bool):
        from diffusers.video_processor import VideoProcessor

        self.vae = vae
        self.placement = placement
        self.first_frame_only = first_frame_only
        self.spatial = vae.config.scale_factor_spatial
        self.temporal = vae.config.scale_factor_temporal
        self.video_processor = VideoProcessor(vae_scale_factor=self.spatial)
        self.norm = LatentNorm.of(vae)

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        if not req.image_path:
            return req
        image = self.video_processor.preprocess(input_image(req), height=req.height, width=req.width)
        image = image.to(dtype=torch.float32).unsqueeze(2)  # (1, 3, 1, H, W)
        if self.first_frame_only:
            video = image
        else:  # the first frame, then black: the model learned to continue from it
            video = torch.cat([image, image.new_zeros(1, 3, req.num_frames - 1, req.height, req.width)], dim=2)
        with self.placement.active("vae", self.vae) as vae:
            param = next(vae.parameters())
            latents = vae.encode(video.to(device=param.device, dtype=vae.dtype)).latent_dist.mode()
        device = req.latents.device
        latents = latents.to(device=device, dtype=torch.float32)
        latents = self.norm.normalize(latents)
        if self.first_frame_only:
            req.first_frame_latents = latents
        else:
            req.condition_channels = torch.cat([self._first_frame_mask(req, device), latents], dim=1)
        return req

    def _first_frame_mask(self, req: Request, device: torch.device) -> torch.Tensor:
        """(1, temporal factor, latent frames, h, w): ones over the first frame's pixel frames, zeros after."""
        h, w = req.height // self.spatial, req.width // self.spatial
        mask = torch.zeros(1, 1, req.num_frames, h, w)
        mask[:, :, 0] = 1
        # The first latent frame stands for one pixel frame, the others for `temporal` each:
        # repeat the first so every latent frame covers `temporal` mask entries.
        mask = torch.cat([mask[:, :, :1].repeat_interleave(self.temporal, dim=2), mask[:, :, 1:]], dim=2)
        mask = mask.view(1, -1, self.temporal, h, w).transpose(1, 2)
        return mask.to(device)


class ChannelConditionDit(DitAdapter):
    """Wan2.1/2.2 I2V and HunyuanVideo-1.5: ``req.condition_channels`` follow the noise on the channel axis."""

    def model_input(self, latents: torch.Tensor, req: Request) -> torch.Tensor:
        if req.condition_channels is not None:
            latents = torch.cat([latents, req.condition_channels], dim=1)
        return latents.to(self.dtype)


class FirstFrameDit(DitAdapter):
    """Wan2.2 TI2V (``expand_timesteps``): a timestep per latent token, and the given first frame kept clean.

    ``patch`` is the DiT's spatial patch (h, w): one timestep per (frame, h / ph, w / pw) token. With an
    input image (``req.first_frame_latents``) the noisy first frame is replaced by it in every call and
    after the last step, and its tokens get timestep 0.
    """

    def __init__(self, dtype: torch.dtype, patch: tuple[int, int]):
        super().__init__(dtype)
        self.patch = patch

    def model_input(self, latents: torch.Tensor, req: Request) -> torch.Tensor:
        return self._with_first_frame(latents, req).to(self.dtype)

    def timestep(self, t: torch.Tensor, latents: torch.Tensor, batch: int, req: Request) -> torch.Tensor:
        frames, height, width = latents.shape[2:]
        grid = torch.ones(frames, height // self.patch[0], width // self.patch[1], dtype=torch.float32,
                          device=latents.device)
        if req.first_frame_latents is not None:
            grid[0] = 0  # the given first frame is clean
        return (grid * t).flatten().expand(batch, -1)

    def finish(self, latents: torch.Tensor, req: Request) -> torch.Tensor:
        return self._with_first_frame(latents, req)

    @staticmethod
    def _with_first_frame(latents: torch.Tensor, req: Request) -> torch.Tensor:
        if req.first_frame_latents is None:
            return latents
        return torch.cat([req.first_frame_latents.to(latents.dtype), latents[:, :, 1:]], dim=2)
