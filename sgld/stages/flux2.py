"""FLUX.2 stages: prompt encoding (Qwen3 for [klein], Mistral Small for [dev]), patchified latents with 4D
position ids, the empirical timestep shift (for ``FlowMatchTimestepStage``), and the batch-norm latent decode,
as ``Flux2KleinPipeline`` and ``Flux2Pipeline`` do them."""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

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
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(latents.device, latents.dtype)
        latents = latents * std + mean
        b, c4, h, w = latents.shape
        return latents.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, h * 2, w * 2)
