"""LTX-2: text (or text + first frame) to video with its sound, in one denoise of two latents; optionally the
two-stage recipe (half size, the x2 latent upsampler, a 3-step refine with the distilled LoRA) in the same request."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from diffusers.pipelines.ltx2.utils import resolve_default_image_crf

from sgld.config.schema import MASKLESS_BACKENDS, RunConfig
from sgld.errors import UserError
from sgld.families import FAMILIES
from sgld.models.lora import Adapter
from sgld.parallel.ltx2_plan import ltx2_cp_plan
from sgld.parallel.state import ParallelState
from sgld.pipelines.base import Pipeline
from sgld.request import Request
from sgld.stages.base import Stage
from sgld.stages.ltx2_decoding import Ltx2AudioDecodingStage, Ltx2VideoDecodingStage
from sgld.stages.ltx2_denoising import Ltx2DenoisingStage
from sgld.stages.ltx2_guidance import GuidanceTerms
from sgld.stages.ltx2_latents import Ltx2LatentStage, Ltx2Latents
from sgld.stages.ltx2_text import Ltx2TextEncodingStage
from sgld.stages.ltx2_timesteps import Ltx2TimestepStage
from sgld.stages.ltx2_two_stage import STAGE_2_SIGMAS, Ltx2RefineSetupStage, Ltx2UpsampleStage
from sgld.stages.validation import InputValidationStage

log = logging.getLogger(__name__)

# The stage-2 LoRA's adapter name (as diffusers' recipe names it).
STAGE_2_ADAPTER = "stage_2_distilled"


class Ltx2Pipeline(Pipeline):
    """Gemma 3 + text connectors -> the audio-video DiT (x0-space guidance, two schedulers) -> video VAE, and
    audio VAE + vocoder for the sound.

    A request with ``image_path`` is image-to-video (``LTX2ImageToVideoPipeline``: the image is the clean first
    frame). The two-stage parts (``latent_upsampler/`` and the stage-2 LoRA at the folder's root) load in
    ``finish_setup`` when the folder has them; the LoRA is one more adapter of the run's ``LoraSet``, switched on
    around the refine pass only.
    """

    spec = FAMILIES["ltx2"]

    def __init__(self, components: dict[str, Any], run: RunConfig, device: torch.device, parallel: ParallelState):
        super().__init__(components, run, device, parallel)
        transformer, connectors = components["transformer"], components["connectors"]
        registers = connectors.config.video_connector_num_learnable_registers
        if run.model.attention_backend in MASKLESS_BACKENDS and not registers:
            raise UserError(f"attention_backend='{run.model.attention_backend}' takes no attention mask, and this "
                            "LTX-2 folder's text connectors keep their padding masked (no learnable registers); "
                            "use auto, fa3, cudnn, flash or efficient", param="attention_backend")
        transformer._cp_plan = ltx2_cp_plan(transformer.config)  # diffusers' misses split RoPE (see its module)
        step_hooks = self.configure_one_dit("text_encoder", "connectors", "vae", "audio_vae", "vocoder")
        self.latents = Ltx2Latents(transformer, components["vae"], components["audio_vae"])
        self.terms = GuidanceTerms.of(run.model.sampling_defaults.av_guidance)
        self.sample_rate = int(components["vocoder"].config.output_sampling_rate)
        self.upsampler: Optional[torch.nn.Module] = None
        self.stage_2_adapter: Optional[Adapter] = None
        scheduler, dtype = components["scheduler"], transformer.dtype
        denoise = dict(placement=self.placement, parallel=parallel, step_hooks=step_hooks)
        self.stages = [
            InputValidationStage(self.check_request),
            Ltx2TextEncodingStage(components["tokenizer"], components["text_encoder"], connectors, self.placement,
                                  dtype, self.spec.guided),
            Ltx2LatentStage(self.latents, self.placement, resolve_default_image_crf(components["text_encoder"])),
            Ltx2TimestepStage(scheduler, device),
            Ltx2DenoisingStage(transformer, terms=self.terms, refine_steps=len(STAGE_2_SIGMAS), **denoise),
        ]
        self.two_stage_stages = [
            Ltx2UpsampleStage(self.latents, None, self.placement),
            Ltx2RefineSetupStage(self.latents, scheduler, device),
            # Stage 2 runs unguided (the recipe's guidance 1; its STG and modality terms off as well).
            Ltx2DenoisingStage(transformer, terms=replace(self.terms, stg=(0.0, 0.0), modality=(1.0, 1.0)),
                               refine=True, around=self._stage_2_lora, **denoise),
        ]
        self.stages += [
            Ltx2VideoDecodingStage(self.latents, self.placement, parallel),
            Ltx2AudioDecodingStage(self.latents, components["vocoder"], self.placement, parallel),
        ]
        # Until finish_setup finds the upsampler and the LoRA, two-stage requests are refused as for a folder without.
        self.constraints = replace(self.constraints, two_stage_missing=("latent_upsampler/ (not loaded)",))

    def finish_setup(self, folder: Path | None = None) -> None:
        """The two-stage parts first (the stage-2 LoRA joins the run's adapters before their set is made, and
        before compile), then the base set-up."""
        missing = self.spec.two_stage_missing(folder) if folder is not None else ("the model folder",)
        if not missing:
            missing = self._load_two_stage(folder)
        self.constraints = replace(self.constraints, two_stage_missing=missing)
        super().finish_setup(folder)

    def _load_two_stage(self, folder: Path) -> tuple[str, ...]:
        """Load the latent upsampler (VAE precision, placed with the VAE) and name the stage-2 LoRA; what is
        missing for two stages (nothing when both load)."""
        from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

        from sgld.model_builders.random_weights import (
            RANDOM_LORA_SUFFIX, build_random_module, is_random_folder, random_lora_file,
        )
        from sgld.models.components import DTYPES
        from sgld.models.safetensors_only import require_safetensors

        sub = folder / self.spec.upsampler
        config = LTX2LatentUpsamplerModel.load_config(sub)
        scale = config.get("rational_spatial_scale", 2.0) if config.get("use_rational_resampler", True) else 2.0
        if not config.get("spatial_upsample", True) or config.get("temporal_upsample") or scale != 2.0:
            return (f"{self.spec.upsampler}/ holds no x2 spatial upsampler (spatial_upsample, temporal_upsample, "
                    f"scale: {config.get('spatial_upsample')}, {config.get('temporal_upsample')}, {scale})",)
        dtype, random = DTYPES[self.run.vae.precision], is_random_folder(folder)
        if random:  # benchmarks: made on the device, seeded, as the folder's other components
            upsampler = build_random_module("ltx2", LTX2LatentUpsamplerModel, sub, dtype, self.device, seed=99)
        else:
            require_safetensors(sub)
            upsampler = LTX2LatentUpsamplerModel.from_pretrained(folder, subfolder=self.spec.upsampler,
                                                                 torch_dtype=dtype, use_safetensors=True)
        upsampler.eval().requires_grad_(False)
        self.components["latent_upsampler"] = upsampler
        self.place("latent_upsampler")
        self.upsampler = upsampler
        self.two_stage_stages[0].upsampler = upsampler
        found = list(folder.glob(self.spec.stage_2_lora))
        if not found and random:
            (stand_in,) = folder.glob(self.spec.stage_2_lora + RANDOM_LORA_SUFFIX)
            transformer = self.components["transformer"]
            found = [random_lora_file(stand_in, transformer, transformer.dtype, self.device)]
        (lora,) = found
        self.stage_2_adapter = Adapter(STAGE_2_ADAPTER, lora.resolve(), 1.0, "transformer")
        self.extra_adapters = [self.stage_2_adapter]
        refine = len(self.stages) - 2
        self.stages[refine:refine] = self.two_stage_stages
        log.info("two-stage recipe ready: %s, stage-2 LoRA %s", sub, lora.name)
        return ()

    def stages_for(self, reqs: list[Request]) -> list[Stage]:
        """One-stage requests skip the upsampler and the refine pass (a batch shares ``two_stage``: its key has it)."""
        if reqs[0].two_stage:
            return self.stages
        return [stage for stage in self.stages if stage not in self.two_stage_stages]

    def check_request(self, req: Request) -> None:
        super().check_request(req)
        if req.image_path and self.components["vae"].encoder is None:
            raise UserError("image_path: this run skips the VAE encoder (vae.load_encoder=false), so it cannot take "
                            "a first frame", param="image_path")

    @contextmanager
    def _stage_2_lora(self) -> Iterator[None]:
        """The distilled LoRA on (beside the request's adapters) for the refine pass, then the request's set again."""
        before = self.loras.active
        self.loras.apply(before + (self.stage_2_adapter,))
        try:
            yield
        finally:
            self.loras.apply(before)
