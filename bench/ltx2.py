"""LTX-2 (video with sound) in sgld against diffusers on the same random full-size weights, one process, one GPU.

    python bench/ltx2.py --out ltx2.json [--workflows one_stage,two_stage] [--steps 3]

The model is made once (``random:Lightricks/LTX-2``: the 19B DiT, Gemma 3 12B and the rest built on the GPU) and
shared: diffusers' ``LTX2Pipeline`` is built from sgld's own component objects. Per workflow, at the reference's
default size (768x512, 121 frames at 24 fps; two-stage: stage 1 at 384x256, then the x2 upsampler and 3 refine
steps at 768x512 with the stage-2 LoRA), four rows: "diffusers" as shipped, "diffusers tuned" (SDPA, since
diffusers' pipeline passes its text mask to every cross-attention and its FA3 backend refuses any mask, and
``compile_repeated_blocks(fullgraph=True)``), "sgld default" (auto: FA3 where installed, a masked call on SDPA),
and "sgld best lossless" (the same backend with ``--enable-torch-compile``).
Every figure is measured in this run: DiT forward time per sample-branch (CUDA events around every forward;
a batched CFG forward counts as two), DiT forwards and their sample-branches per generation, s/step (stage 1),
text-encode, video decode, audio decode (audio VAE + vocoder) and mux (H.264 + AAC MP4) times, end-to-end time of
``--steps`` stage-1 steps and its extrapolation to 30, and peak GPU memory. Both sides run the reference's guidance
(CFG 3.0 video / 7.0 audio, STG 1.0 at block 28, modality 3.0, rescale 0.7); LTX-2.0's DiT has no perturbed
attention, so sgld skips the STG forward (its term is zero) and diffusers runs it.

``--tiny`` runs the same code on the tiny built-in model on the CPU (a smoke test: no tuned or compiled rows).
``--text-encoder-offload --pin-cpu-memory``: sgld's offloaded modules wait in pinned memory (``--pin-cpu-memory``);
diffusers' rows move the shared modules with ``.to()``, which unpins them, so sgld's rows pin them again first.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sgld.levers.shipped import components_as_shipped  # noqa: E402
from speed import (  # noqa: E402
    AvRow, ForwardTimer, StepClock, av_difference, median_seconds, sgld_attention, sync, uncompile_blocks,
    write_av_report)

PROMPT = "A red fox barks twice in fresh snow at dawn, wind in the pines, cinematic, detailed fur"
NEGATIVE = "worst quality, inconsistent motion, blurry, jittery, distorted"
FULL_STEPS = 30  # the reference's default stage-1 steps
ROWS = ("diffusers", "diffusers tuned", "sgld default", "sgld best lossless")
REPO = "Lightricks/LTX-2"


@dataclass(kw_only=True)
class Row(AvRow):
    """One pipeline's figures for one workflow."""

    workflow: str
    dit_sample_branches: int  # sample-branches the DiT calls computed
    mux_s: float | None

    @property
    def e2e_full_s(self) -> float:
        """End-to-end at the reference's 30 stage-1 steps: measured run + (30 - run) x s/step."""
        return self.e2e_s + (FULL_STEPS - self.steps_run) * self.step_s


class Bench:
    """sgld and diffusers on one set of LTX-2 components."""

    def __init__(self, tiny: bool, steps: int, device: torch.device, text_encoder_offload: bool = False,
                 pin_cpu_memory: bool = False):
        from sgld import DiffGenerator

        self.tiny, self.steps, self.device = tiny, steps, device
        self.cuda = device.type == "cuda"
        self.text_encoder_offload = text_encoder_offload
        start = time.perf_counter()
        # Everything resident (no offload for the memory plan to choose): diffusers runs on the same modules.
        # With text_encoder_offload (an 80 GB card's two-stage run), Gemma waits on the CPU between prompts on
        # both sides: sgld's --text-encoder-cpu-offload, and diffusers given embeddings computed the same way.
        resident = dict(text_encoder_cpu_offload=text_encoder_offload, dit_cpu_offload=False, vae_cpu_offload=False,
                        pin_cpu_memory=pin_cpu_memory)
        self.gen = DiffGenerator.from_pretrained("tiny-ltx2" if tiny else f"random:{REPO}", device=str(device),
                                                 **resident)
        sync(self.cuda)
        self.load_s = time.perf_counter() - start
        self.components = self.gen.pipeline.components
        self.transformer = self.components["transformer"]
        sampling = self.gen.run.sampling
        self.height, self.width, self.frames, self.fps = sampling.height, sampling.width, sampling.num_frames, sampling.fps
        self.rows: list[Row] = []
        self.reference: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.folder = Path(self.gen.pipeline.stage_2_adapter.path).parent if self.gen.pipeline.stage_2_adapter else None
        self.meta: dict[str, Any] = {"load_s": self.load_s}

    # -- diffusers ----------------------------------------------------------------------------

    def pipe(self):
        from diffusers import LTX2Pipeline

        names = ("scheduler", "vae", "audio_vae", "text_encoder", "tokenizer", "connectors", "transformer", "vocoder")
        pipe = LTX2Pipeline(**{name: self.components[name] for name in names})
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def reference_call(self, pipe, steps: int, clock: StepClock | None, two_stage: bool):
        """diffusers' output (uint8 frames, waveform): the pipeline, or the documented two-stage recipe by hand."""
        guidance = self.gen.run.model.sampling_defaults.av_guidance
        if self.text_encoder_offload:
            embeds, mask, negative, negative_mask = self._reference_prompt_embeds(pipe)
            prompts = dict(prompt_embeds=embeds, prompt_attention_mask=mask, negative_prompt_embeds=negative,
                           negative_prompt_attention_mask=negative_mask)
        else:
            prompts = dict(prompt=PROMPT, negative_prompt=NEGATIVE)
        kwargs: dict[str, Any] = dict(
            **prompts, num_frames=self.frames, frame_rate=self.fps,
            num_inference_steps=steps, guidance_scale=self.gen.run.sampling.guidance_scale,
            audio_guidance_scale=self.gen.run.sampling.audio_guidance_scale, stg_scale=guidance.stg_scale,
            audio_stg_scale=guidance.audio_stg_scale, modality_scale=guidance.modality_scale,
            audio_modality_scale=guidance.audio_modality_scale, guidance_rescale=guidance.guidance_rescale,
            audio_guidance_rescale=guidance.audio_guidance_rescale,
            spatio_temporal_guidance_blocks=list(guidance.stg_blocks),
            generator=torch.Generator("cpu").manual_seed(0), return_dict=False)
        if clock is not None:
            kwargs["callback_on_step_end"] = lambda p, i, t, c: (clock.tick(), c)[1]
        if not two_stage:
            video, audio = pipe(**kwargs, height=self.height, width=self.width, output_type="np")
        else:
            video, audio = self._reference_two_stage(pipe, kwargs)
        return (np.asarray(video[0]) * 255).round().astype(np.uint8), audio[0].float().cpu().numpy()

    def _reference_two_stage(self, pipe, kwargs: dict):
        from diffusers import FlowMatchEulerDiscreteScheduler, LTX2LatentUpsamplePipeline
        from diffusers.pipelines.ltx2.utils import STAGE_2_DISTILLED_SIGMA_VALUES as SIGMAS

        video_latents, audio_latents = pipe(**kwargs, height=self.height // 2, width=self.width // 2,
                                            output_type="latent")
        upsample = LTX2LatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=self.components["latent_upsampler"])
        upsampled = upsample(latents=video_latents, output_type="latent", return_dict=False)[0]
        stage_1_scheduler = pipe.scheduler
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(stage_1_scheduler.config,
                                                                     use_dynamic_shifting=False, shift_terminal=None)
        # The stage-2 LoRA as sgld's LoraSet loads it (the folder's file, the recipe's adapter name), switched on
        # here as diffusers' set_adapters does: one copy of its weights for both pipelines.
        adapter = self.gen.pipeline.stage_2_adapter
        self.gen.pipeline.loras.load(adapter)
        self.transformer.enable_lora()
        self.transformer.set_adapters([adapter.key], [1.0])
        stage_2 = {**kwargs, "num_inference_steps": len(SIGMAS), "guidance_scale": 1.0, "audio_guidance_scale": 1.0,
                   "stg_scale": 0.0, "audio_stg_scale": 0.0, "modality_scale": 1.0, "audio_modality_scale": 1.0}
        stage_2.pop("callback_on_step_end", None)
        try:
            return pipe(**stage_2, height=self.height, width=self.width, latents=upsampled, audio_latents=audio_latents,
                        noise_scale=SIGMAS[0], sigmas=SIGMAS, output_type="np")
        finally:
            self.transformer.disable_lora()
            pipe.scheduler = stage_1_scheduler

    def run_reference(self, workflow: str, tuned: bool) -> None:
        pipe = self.pipe()
        two_stage = workflow == "two_stage"
        name, note, compile_s = "diffusers", "", None
        self.transformer.set_attention_backend("native")  # diffusers' default (sgld's load set its own)
        if tuned:
            # diffusers' pipeline passes its text mask to every cross-attention, and its FA3 backend refuses any
            # mask: a hand-tuned diffusers keeps SDPA (it picks its kernel per call) and compiles.
            backend = "native"
            name, note = "diffusers tuned", f"set_attention_backend({backend!r}) + compile_repeated_blocks(fullgraph=True)"
            self.transformer.set_attention_backend(backend)
            self.transformer.compile_repeated_blocks(fullgraph=True)
        if self.text_encoder_offload:  # sgld keeps the connectors with Gemma on the CPU; diffusers runs them itself
            pipe.connectors.to(self.device)
        try:
            start = time.perf_counter()
            self.reference_call(pipe, 2, None, two_stage)  # warm-up (and, tuned, the compile)
            sync(self.cuda)
            if tuned:
                compile_s = time.perf_counter() - start
            # Once with Gemma offloaded: each encode brings 23 GiB in from the CPU (16 s on an H100).
            text_s = self._time(lambda: self._reference_encode(pipe), repeats=1 if self.text_encoder_offload else 3)
            out, e2e, step_s, timer, peak = self._timed(lambda clock: self.reference_call(pipe, self.steps, clock,
                                                                                          two_stage))
            video_s, audio_s = self._reference_decode_times(pipe)
            mux_s = self._time(lambda: self._reference_mux(out), repeats=1)
            row = Row(name=name, workflow=workflow, steps_run=self.steps, e2e_s=e2e, step_s=step_s,
                      dit_forward_ms=timer.ms_per_branch(), dit_forwards=len(timer.batch),
                      dit_sample_branches=sum(timer.batch), text_encode_s=text_s, video_decode_s=video_s,
                      audio_decode_s=audio_s, mux_s=mux_s, peak_gib=peak, compile_s=compile_s, note=note)
            if not tuned:
                self.reference[workflow] = out
            else:
                row.extra["max_diff_vs_diffusers"] = self._diff(out, workflow)
            timer.close()
            self._record(row)
        except Exception as exc:  # noqa: BLE001 - a row that fails is reported; the others are still measured
            self.meta[f"{workflow} {name} failed"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(f"{workflow} {name} failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
        finally:
            if self.text_encoder_offload:
                pipe.connectors.to("cpu")
            if tuned:
                uncompile_blocks(self.transformer)
                self.transformer.set_attention_backend("native")

    def _reference_prompt_embeds(self, pipe) -> tuple:
        """diffusers' ``encode_prompt`` of the prompt and the negative prompt (Gemma brought in and back out when
        it waits on the CPU)."""
        if not self.text_encoder_offload:
            return pipe.encode_prompt(PROMPT, NEGATIVE, device=self.device)
        pipe.text_encoder.to(self.device)
        try:
            return pipe.encode_prompt(PROMPT, NEGATIVE, device=self.device)
        finally:
            pipe.text_encoder.to("cpu")

    def _reference_encode(self, pipe) -> None:
        """diffusers' text conditioning: Gemma on the prompt and the negative prompt, then the connectors."""
        embeds, mask, negative, negative_mask = self._reference_prompt_embeds(pipe)
        pipe.connectors(torch.cat([negative, embeds]), torch.cat([negative_mask, mask]), padding_side="left")

    def _reference_decode_times(self, pipe) -> tuple[float, float]:
        """diffusers' video decode and audio decode (audio VAE + vocoder) of latents of this size."""
        geometry = self.gen.pipeline.latents
        grid = geometry.grid(self.frames, self.height, self.width, self.fps)
        vae, audio_vae = pipe.vae, pipe.audio_vae
        video = torch.randn(1, geometry.channels, grid.frames, grid.height, grid.width, device=self.device,
                            dtype=vae.dtype)
        audio = torch.randn(1, geometry.audio_channels, grid.audio_frames, geometry.audio_mel_bins,
                            device=self.device, dtype=audio_vae.dtype)
        video_s = self._time(lambda: vae.decode(video, None, return_dict=False), repeats=2)
        audio_s = self._time(lambda: pipe.vocoder(audio_vae.decode(audio, return_dict=False)[0]), repeats=2)
        return video_s, audio_s

    def _reference_mux(self, out: tuple[np.ndarray, np.ndarray]) -> None:
        """The reference example's muxer: diffusers' ``encode_video`` (PyAV, H.264 + AAC)."""
        from diffusers.utils.export_utils import encode_video

        with tempfile.TemporaryDirectory() as tmp:
            encode_video(torch.from_numpy(out[0]), fps=self.fps, audio=torch.from_numpy(out[1]),
                         audio_sample_rate=self.gen.pipeline.sample_rate, output_path=f"{tmp}/ref.mp4")

    # -- sgld -----------------------------------------------------------------------------------

    def run_sgld(self, workflow: str, best: bool) -> None:
        two_stage = workflow == "two_stage"
        name, compile_s = ("sgld best lossless" if best else "sgld default"), None
        placement = self.gen.pipeline.placement
        for component in placement.offloaded & set(self.components):  # as sgld's load left them (pinned if asked)
            placement.place(component, self.components[component])
        try:
            note = sgld_attention(self.transformer, self.device, best)
            start = time.perf_counter()
            self._sgld(2, two_stage, None)  # warm-up (and the compile)
            sync(self.cuda)
            if best:
                compile_s = time.perf_counter() - start
            with tempfile.TemporaryDirectory() as tmp:
                (result, e2e, step_s, timer, peak) = self._timed(lambda clock: self._sgld(self.steps, two_stage,
                                                                                          clock, tmp))
            t = result.timings
            row = Row(name=name, workflow=workflow, steps_run=self.steps, e2e_s=e2e, step_s=step_s,
                      dit_forward_ms=timer.ms_per_branch(), dit_forwards=len(timer.batch),
                      dit_sample_branches=sum(timer.batch), text_encode_s=t.get("encode_prompt"),
                      video_decode_s=t.get("decode"), audio_decode_s=t.get("decode_audio"), mux_s=t.get("mux"),
                      peak_gib=peak, compile_s=compile_s, note=note)
            row.extra["max_diff_vs_diffusers"] = self._diff((result.frames, result.audio), workflow)
            timer.close()
            self._record(row)
        except Exception as exc:  # noqa: BLE001
            self.meta[f"{workflow} {name} failed"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(f"{workflow} {name} failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
        finally:
            if best:
                uncompile_blocks(self.transformer)
                self.transformer.set_attention_backend("native")

    def _sgld(self, steps: int, two_stage: bool, clock: StepClock | None, folder: str | None = None):
        options = dict(negative_prompt=NEGATIVE, num_inference_steps=steps, seed=0, two_stage=two_stage,
                       return_frames=True, save_output=folder is not None)
        if folder is not None:
            options.update(output_path=folder, output_file_name="fox.mp4")
        # Stage-1 step ends only (the refine's 3 steps are reported after them).
        callback = None if clock is None else (lambda done, total: 0 < done <= steps and clock.tick())
        return self.gen.generate(PROMPT, step_callback=callback, **options)

    # -- helpers ----------------------------------------------------------------------------------

    def _timed(self, run: Callable[[StepClock], Any]):
        clock, timer = StepClock(self.cuda), ForwardTimer(self.transformer, self.cuda)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = run(clock)
        sync(self.cuda)
        e2e = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else 0.0
        return out, e2e, clock.step_s(), timer, peak

    def _diff(self, out, workflow: str) -> dict:
        ref = self.reference.get(workflow)
        return {} if ref is None else av_difference(out, ref)

    def _time(self, fn: Callable[[], Any], repeats: int = 3) -> float:
        return median_seconds(fn, self.cuda, repeats)

    def _record(self, row: Row) -> None:
        self.rows.append(row)
        print(f"MEASURED {json.dumps(dict(asdict(row), e2e_full_s=row.e2e_full_s), default=str)}", flush=True)


def table(rows: list[Row]) -> str:
    """The markdown table of every row."""
    head = ("| workflow | pipeline | DiT fwd ms / sample-branch | fwds (branches) | s/step | e2e s (steps run) "
            "| e2e s @30 | text s | video decode s | audio decode s | mux s | peak GiB | vs diffusers |")
    lines = [head, "|" + "---|" * 13]
    fmt = lambda v, spec=".2f": "–" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        diff = r.extra.get("max_diff_vs_diffusers") or {}
        against = f"{diff['frames']}/255, wave {diff['waveform']:.1e}" if diff else "–"
        lines.append(f"| {r.workflow} | {r.name} | {r.dit_forward_ms:.1f} | {r.dit_forwards} ({r.dit_sample_branches}) "
                     f"| {fmt(r.step_s, '.3f')} | {r.e2e_s:.2f} ({r.steps_run}) | {r.e2e_full_s:.1f} "
                     f"| {fmt(r.text_encode_s)} | {fmt(r.video_decode_s)} | {fmt(r.audio_decode_s, '.3f')} "
                     f"| {fmt(r.mux_s, '.3f')} | {r.peak_gib:.1f} | {against} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", default="one_stage,two_stage")
    parser.add_argument("--steps", type=int, default=3, help="stage-1 steps run, at least 2 (extrapolated to 30)")
    parser.add_argument("--tiny", action="store_true", help="the tiny built-in model on the CPU (smoke test)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"which rows, of {', '.join(ROWS)}")
    parser.add_argument("--text-encoder-offload", action="store_true",
                        help="Gemma waits on the CPU between prompts, both sides (two-stage on an 80 GB card)")
    parser.add_argument("--pin-cpu-memory", action="store_true", help="sgld's offloaded modules wait in pinned memory")
    parser.add_argument("--out", type=Path, default=Path("bench_ltx2.json"))
    args = parser.parse_args(argv)

    from sgld.api import quiet_library_logs

    quiet_library_logs()
    torch._dynamo.config.cache_size_limit = 64
    device = torch.device("cpu" if args.tiny else "cuda")
    bench = Bench(args.tiny, args.steps, device, args.text_encoder_offload, args.pin_cpu_memory)
    meta = {"command": " ".join(sys.argv), "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if bench.cuda else "cpu", **bench.meta}
    rows = [row.strip() for row in args.rows.split(",")]
    for workflow in args.workflows.split(","):
        for name in ROWS:  # diffusers first: the rows after it are compared with its output
            compiled = name in ("diffusers tuned", "sgld best lossless")
            if name not in rows or (compiled and not bench.cuda):
                continue
            if name.startswith("diffusers"):
                with components_as_shipped(bench.components):  # diffusers' own classes
                    bench.run_reference(workflow, tuned=compiled)
            else:
                bench.run_sgld(workflow, best=compiled)
            write_av_report(args.out, {**meta, **bench.meta}, bench.rows, table)
    print("\n" + table(bench.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
