"""LTX-2's decoders: video tokens through the video VAE, audio tokens through the audio VAE (a mel spectrogram)
and the vocoder (the waveform)."""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from sgld.models.placement import Placement
from sgld.parallel.state import ParallelState
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.decoding import to_uint8_images
from sgld.stages.ltx2_latents import LatentGrid, Ltx2Latents


def grid_of(req: Request) -> LatentGrid:
    """The latent grid a request's latents have now (stage 2's after a two-stage upsample)."""
    kwargs = req.model_kwargs
    return LatentGrid(kwargs["num_frames"], kwargs["height"], kwargs["width"], kwargs["audio_num_frames"])


class Ltx2VideoDecodingStage(Stage):
    """Unpacks and denormalises the video tokens, decodes them to uint8 frames (rank 0 only in parallel runs).

    A VAE with timestep conditioning (none in LTX-2.0) decodes at the reference's decode timestep 0, with its
    noise drawn from the request's generator as the reference draws it.
    """

    name = "decode"

    def __init__(self, latents: Ltx2Latents, placement: Placement, parallel: ParallelState):
        self.latents = latents
        self.placement = placement
        self.parallel = parallel

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        if not self.parallel.is_main:
            return req
        latents = self.latents.unpack(req.latents, grid_of(req))
        vae = self.latents.vae
        timestep = None
        if vae.config.timestep_conditioning:
            noise = randn_tensor(latents.shape, generator=req.generator, device=latents.device, dtype=latents.dtype)
            timestep = torch.tensor([0.0], device=latents.device, dtype=latents.dtype)
            latents = latents + 0.0 * noise  # decode noise scale = decode timestep = 0, as the reference's default
        latents = self.latents.denormalize(latents)
        with self.placement.active("vae", vae):
            param = next(vae.parameters())
            video = vae.decode(latents.to(device=param.device, dtype=vae.dtype),
                               None if timestep is None else timestep.to(param.device), return_dict=False)[0]
        req.frames = to_uint8_images(video[0].transpose(0, 1))
        return req


class Ltx2AudioDecodingStage(Stage):
    """Audio tokens -> mel spectrogram (audio VAE) -> waveform (vocoder): float32 (channels, samples) on the CPU.

    The waveform is (4 L - 3) x the vocoder's upsampling long (the causal VAE drops 3 mel frames), a few tens of
    milliseconds short of the video; the writers pad it to the video's length.
    """

    name = "decode_audio"

    def __init__(self, latents: Ltx2Latents, vocoder, placement: Placement, parallel: ParallelState):
        self.latents = latents
        self.vocoder = vocoder
        self.placement = placement
        self.parallel = parallel

    @torch.no_grad()
    def forward(self, req: Request) -> Request:
        if not self.parallel.is_main:
            return req
        tokens = self.latents.denormalize_audio(req.audio_latents)
        latents = self.latents.unpack_audio(tokens, grid_of(req))
        audio_vae = self.latents.audio_vae
        with self.placement.active("audio_vae", audio_vae):
            param = next(audio_vae.parameters())
            mel = audio_vae.decode(latents.to(device=param.device, dtype=audio_vae.dtype), return_dict=False)[0]
        with self.placement.active("vocoder", self.vocoder) as vocoder:
            param = next(vocoder.parameters())
            wave = vocoder(mel.to(device=param.device, dtype=param.dtype))
        req.waveform = wave[0].float().cpu().numpy()
        req.sample_rate = int(self.vocoder.config.output_sampling_rate)
        return req
