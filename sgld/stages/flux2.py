"""FLUX.2 stages: prompt encoding (Qwen3 for [klein], Mistral Small for [dev]), patchified latents with 4D
position ids, the empirical timestep shift (for ``FlowMatchTimestepStage``), and the batch-norm latent decode,
as ``Flux2KleinPipeline`` and ``Flux2Pipeline`` do them."""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from sgld.checks import open_input_image
from sgld.models.placement import Placement
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.decoding import PackedImageDecodingStage
from sgld.stages.text_encoding import chat_prompts, encode_branches


class Flux2TextEncodingStage(Stage):
    """Sets each branch's ``encoder_hidden_states`` (N, 512, 3 x hidden) and the shared ``txt_ids``.

    [klein]: each prompt goes through Qwen3's chat template (one user turn, thinking off), padded to
    ``max_length``; the hidden states of ``layers`` are stacked. The negative branch exists when
    the family guides the request; its text is the request's negative prompt (the reference always
    uses "", sgld's default).
    """

    name = "encode_prompt"
    layers = (9, 18, 27)  # the text encoder layers whose hidden states the DiT reads, stacked per token

    def __init__(self, tokenizer, text_encoder, placement: Placement, out_dtype: torch.dtype, guided,
                 max_length: int = 512):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.placement = placement
        self.out_dtype = out_dtype
        self.guided = guided  # (Request) -> bool
        self.max_length = max_length

    def tokenize(self, texts: list[str]) -> dict:
        """The text encoder's ``input_ids`` and ``attention_mask`` for ``texts``."""
        return self.tokenizer(chat_prompts(self.tokenizer, texts, thinking=False), padding="max_length",
                              max_length=self.max_length, truncation=True, return_tensors="pt")

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), max_length, 3 x hidden) on the run's device, from one text-encoder call."""
        inputs = self.tokenize(texts)
        with self.placement.active("text_encoder", self.text_encoder) as encoder:
            device = next(encoder.parameters()).device
            out = encoder(input_ids=inputs["input_ids"].to(device), attention_mask=inputs["attention_mask"].to(device),
                          output_hidden_states=True, use_cache=False)
        stacked = torch.stack([out.hidden_states[k] for k in self.layers], dim=1)  # (N, layers, L, D)
        n, layers, length, dim = stacked.shape
        embeds = stacked.permute(0, 2, 1, 3).reshape(n, length, layers * dim)
        return embeds.to(device=self.placement.device, dtype=self.out_dtype)

    def forward(self, req: Request) -> Request:
        return self.forward_batch([req])[0]

    def forward_batch(self, reqs: list[Request]) -> list[Request]:
        branches = encode_branches(reqs, self.guided, lambda texts: self.encode(texts).split(1))
        cond = branches[0][0]
        # (t, h, w, l) = (0, 0, 0, token index); the DiT reads the first sample's ids.
        txt_ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(cond.shape[1]))
        for req, (cond, uncond) in zip(reqs, branches):
            req.cond_kwargs = {"encoder_hidden_states": cond}
            req.uncond_kwargs = None if uncond is None else {"encoder_hidden_states": uncond}
            req.model_kwargs["txt_ids"] = txt_ids.unsqueeze(0).to(cond.device)
        return reqs


class MistralTextEncodingStage(Flux2TextEncodingStage):
    """FLUX.2 [dev]: Mistral Small 3.x after FLUX.2's system message (its chat template, text only), layers 10/20/30.

    ``tokenizer`` is the folder's Pixtral processor or just its tokenizer (with the processor's chat
    template): for text both give the same ids.
    """

    layers = (10, 20, 30)

    def tokenize(self, texts: list[str]) -> dict:
        from diffusers.pipelines.flux2.pipeline_flux2 import format_input

        return self.tokenizer.apply_chat_template(
            format_input(texts), add_generation_prompt=False, tokenize=True, return_dict=True, return_tensors="pt",
            padding="max_length", truncation=True, max_length=self.max_length)


class Flux2LatentStage(Stage):
    """Noise drawn directly in the patchified shape (1, 4C, H/2s, W/2s), packed to tokens, with ``img_ids``.

    The CPU generator seeded with the request's seed gives the same noise on any device.
    ``guidance_embeds`` ([dev]): the guidance scale is a DiT input.
    """

    name = "prepare_latents"

    def __init__(self, channels: int, vae_scale_factor: int, device: torch.device, dtype: torch.dtype,
                 guidance_embeds: bool = False):
        self.channels, self.vae_scale_factor, self.device, self.dtype = channels, vae_scale_factor, device, dtype
        self.guidance_embeds = guidance_embeds

    def forward(self, req: Request) -> Request:
        f = self.vae_scale_factor * 2
        h, w = req.height // f, req.width // f
        generator = torch.Generator("cpu").manual_seed(req.seed)
        noise = randn_tensor((1, self.channels * 4, h, w), generator=generator, device=self.device, dtype=self.dtype)
        req.latents = noise.reshape(1, self.channels * 4, h * w).permute(0, 2, 1)
        ids = torch.cartesian_prod(torch.arange(1), torch.arange(h), torch.arange(w), torch.arange(1))
        req.model_kwargs["img_ids"] = ids.unsqueeze(0).to(self.device)
        if self.guidance_embeds:
            req.model_kwargs["guidance"] = torch.full([1], req.guidance_scale, device=self.device, dtype=torch.float32)
        return req


# Reference images: the reference shrinks larger ones to this area, and refuses sides under 64 pixels or beyond 8:1.
REFERENCE_MAX_AREA = 1024 * 1024
REFERENCE_MIN_SIDE = 64
REFERENCE_MAX_ASPECT = 8


def _latent_norm(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The FLUX.2 VAE's batch-norm mean and std over patchified latents, on ``like``'s device and dtype."""
    mean = vae.bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(like.device, like.dtype)
    return mean, std


class Flux2ReferenceImageStage(Stage):
    """Reference images (``--image-path``, one or several): their latent tokens follow the noise tokens in every DiT call.

    As the reference pipelines: each image above 1 MP is shrunk to it, cropped to multiples of 16 and
    VAE-encoded (mode), patchified, normalised with the VAE's batch-norm statistics and packed; image
    i's position ids carry time 10 (i + 1), so the DiT tells the images apart from the output and
    each other. Without images the stage does nothing.
    """

    name = "condition_latents"

    def __init__(self, vae, placement: Placement, vae_scale_factor: int):
        from diffusers.pipelines.flux2.image_processor import Flux2ImageProcessor

        self.vae, self.placement = vae, placement
        self.multiple = vae_scale_factor * 2
        self.processor = Flux2ImageProcessor(vae_scale_factor=self.multiple)

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        from diffusers import Flux2KleinPipeline

        if not req.image_paths:
            return req
        tokens, ids = [], []
        for index, path in enumerate(req.image_paths):
            pixels = self._pixels(open_input_image(path))
            with self.placement.active("vae", self.vae) as vae:
                param = next(vae.parameters())
                latents = vae.encode(pixels.to(param.device, vae.dtype)).latent_dist.mode()
                latents = Flux2KleinPipeline._patchify_latents(latents)
                mean, std = _latent_norm(vae, latents)
                latents = (latents - mean) / std
            _, _, height, width = latents.shape
            tokens.append(Flux2KleinPipeline._pack_latents(latents))
            time = torch.tensor([10 * (index + 1)])
            ids.append(torch.cartesian_prod(time, torch.arange(height), torch.arange(width), torch.arange(1)))
        device = req.latents.device
        req.condition_tokens = torch.cat(tokens, dim=1).to(device)
        image_ids = torch.cat(ids).unsqueeze(0).to(device)
        req.model_kwargs["img_ids"] = torch.cat([req.model_kwargs["img_ids"], image_ids], dim=1)
        return req

    def _pixels(self, image) -> torch.Tensor:
        """The image as the reference prepares it: at most 1 MP, cropped to multiples of 16, in [-1, 1]."""
        if image.width * image.height > REFERENCE_MAX_AREA:
            image = self.processor._resize_to_target_area(image, REFERENCE_MAX_AREA)
        width, height = image.width // self.multiple * self.multiple, image.height // self.multiple * self.multiple
        return self.processor.preprocess(image, height=height, width=width, resize_mode="crop")


def check_reference_image(path: str) -> None:
    """Raise UserError when a reference image is too small or too elongated for FLUX.2 (the reference's limits)."""
    from sgld.errors import UserError

    image = open_input_image(path)
    short, long = sorted(image.size)
    if short < REFERENCE_MIN_SIDE:
        raise UserError(f"image_path {path!r} is {image.width}x{image.height}; FLUX.2 reference images need sides of "
                        f"at least {REFERENCE_MIN_SIDE} pixels", param="image_path")
    if long > REFERENCE_MAX_ASPECT * short:
        raise UserError(f"image_path {path!r} is {image.width}x{image.height}; FLUX.2 takes reference images up to "
                        f"{REFERENCE_MAX_ASPECT}:1", param="image_path")


def empirical_shift(config, tokens: int, steps: int) -> float:
    """FLUX.2's timestep shift, fitted on the token count and the step count (for ``FlowMatchTimestepStage``)."""
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    return compute_empirical_mu(image_seq_len=tokens, num_steps=steps)


class Flux2VaeDecodingStage(PackedImageDecodingStage):
    """Tokens back to (4C, h, w), the VAE's batch-norm statistics undone, then 2x2 unpatchified for the decoder."""

    def unpack(self, latents: torch.Tensor, req: Request) -> torch.Tensor:
        f = self.vae_scale_factor * 2
        return latents.permute(0, 2, 1).reshape(latents.shape[0], -1, req.height // f, req.width // f)  # row-major ids

    def decoder_latents(self, latents: torch.Tensor, vae) -> torch.Tensor:
        mean, std = _latent_norm(vae, latents)
        latents = latents * std + mean
        b, c4, h, w = latents.shape
        return latents.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, h * 2, w * 2)
