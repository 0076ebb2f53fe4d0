"""MiniMax-H3 t2va in sgld against diffusers' modular reference on the same random full-size weights, one GPU.

    python bench/minimax_h3.py --out h3.json [--steps 3] [--text-encoder-offload] [--height 768 --width 1344]

The model is made once (``random:MiniMaxAI/MiniMax-H3``: the 33B DiT of ``transformer/``, Qwen3-VL-32B, the video
and audio VAEs, built on the GPU) and shared: the reference is ``ModularPipeline.from_pretrained(folder)`` (diffusers'
``MiniMaxH3ModularPipeline``) given sgld's own component objects (its schedulers copied: they keep state). t2va at
the reference's default canvas (16:9: 768x1344) and length (124 frames, 5 s at 24 fps), guidance-distilled (one DiT
forward a step; the released run is 50 sigma grid points, 49 forwards). Four rows: "diffusers" as shipped,
"diffusers tuned" (FA3 where installed, SDPA where H3 passes a mask FA3 refuses, and
``compile_repeated_blocks(fullgraph=True)``), "sgld default" (auto: FA3 where installed), "sgld best lossless"
(``--enable-torch-compile``). Every figure is measured in this run: DiT forward time (CUDA events around every
forward), s/step (the median gap between forward starts, the same clock on both sides), text encode, video and
audio decode, end-to-end of ``--steps`` steps and its extrapolation to 49 forwards, and peak GPU memory.

``--text-encoder-offload`` (an H200 needs it at the released size: the DiT's 61.7 GiB and Qwen3-VL's 62.1 GiB
leave too little beside them for the activations): Qwen3-VL waits on the CPU between prompts on both sides, sgld's
``--text-encoder-cpu-offload`` and, for the reference, accelerate's ``CpuOffload`` hook (which the reference fires
itself) and a hook that sends it back after the ``.model`` forward it calls (diffusers' model offload, for that one
component).

``--tiny`` runs the same code on the tiny built-in model on the CPU (a smoke test: no tuned or compiled rows).
"""

from __future__ import annotations

import argparse
import copy
import faulthandler
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

# The random Qwen3-VL-32B is made on the GPU and sent to the CPU, leaving 16.6 GiB reserved in pieces that the
# conditioner's next trip in could not use (H200, 2026-12-06: out of memory with 122.6 GiB allocated); expandable
# segments let the allocator reuse them. Set before torch starts CUDA.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
faulthandler.enable()  # a crash in a native kernel prints the Python stack that led to it

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sgld.levers.shipped import components_as_shipped  # noqa: E402
from speed import (  # noqa: E402
    AvRow, ForwardTimer, av_difference, sgld_attention, sync, tuned_backend, uncompile_blocks, write_av_report)

PROMPT = "A red fox barks twice in fresh snow at dawn, wind in the pines, cinematic, detailed fur"
FULL_FORWARDS = 49  # the released 50 sigma grid points: one guidance-distilled forward between each pair
# diffusers first: the rows after it are compared with its output. diffusers tuned last: on the H200 (2026-12-06)
# the process died in it (a segfault, cause not yet known), and a crash loses only the rows after it.
ROWS = ("diffusers", "sgld default", "sgld best lossless", "diffusers tuned")
REPO = "MiniMaxAI/MiniMax-H3"


@dataclass(kw_only=True)
class Row(AvRow):
    """One pipeline's figures."""

    @property
    def e2e_full_s(self) -> float:
        """End-to-end at the released 49 forwards: measured run + (49 - forwards run) x s/step."""
        return self.e2e_s + (FULL_FORWARDS - self.dit_forwards) * self.step_s


class StageTimes:
    """Seconds spent in named methods of modules (the reference's ``vae.decode``, ``audio_vae.decode``, text
    encoder forward), the GPU synchronised around each call."""

    def __init__(self, cuda: bool):
        self.cuda, self.seconds, self._undo = cuda, {}, []

    def wrap(self, label: str, obj: Any, method: str) -> None:
        original = getattr(obj, method)

        def timed(*args, **kwargs):
            sync(self.cuda)
            start = time.perf_counter()
            out = original(*args, **kwargs)
            sync(self.cuda)
            self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start
            return out

        setattr(obj, method, timed)
        self._undo.append((obj, method))

    def close(self) -> None:
        for obj, method in self._undo:
            if method in vars(obj):
                delattr(obj, method)


def step_seconds(timer: ForwardTimer, cuda: bool) -> float:
    """The median gap between consecutive DiT forward starts (one forward a step: guidance-distilled)."""
    if cuda:
        torch.cuda.synchronize()
        gaps = [a.elapsed_time(b) / 1000 for (a, _), (b, _) in zip(timer.pairs, timer.pairs[1:])]
    else:
        gaps = [b - a for (a, _), (b, _) in zip(timer.pairs, timer.pairs[1:])]
    return statistics.median(gaps) if gaps else float("nan")


class Bench:
    """sgld and diffusers' modular reference on one set of MiniMax-H3 components."""

    def __init__(self, tiny: bool, steps: int, device: torch.device, text_encoder_offload: bool,
                 height: int | None, width: int | None, max_gpu_memory: float | None = None):
        from sgld import DiffGenerator
        from sgld.models.registry import resolve_model_folder

        self.tiny, self.steps, self.device = tiny, steps, device
        self.cuda = device.type == "cuda"
        self.text_encoder_offload = text_encoder_offload
        start = time.perf_counter()
        model = "tiny-minimax-h3" if tiny else f"random:{REPO}"
        self.folder = resolve_model_folder(model)
        self.gen = DiffGenerator.from_pretrained(
            model, device=str(device), workflows=["t2va"],
            text_encoder_cpu_offload=self.text_encoder_offload, dit_cpu_offload=False, vae_cpu_offload=False,
            max_gpu_memory=max_gpu_memory)
        sync(self.cuda)
        self.load_s = time.perf_counter() - start
        self.components = self.gen.pipeline.components
        self.transformer = self.components["transformer"]
        sampling = self.gen.run.sampling
        self.frames = sampling.num_frames
        self.size = {} if height is None else {"height": height, "width": width}
        self.rows: list[Row] = []
        self.reference: tuple[np.ndarray, np.ndarray] | None = None
        self.meta: dict[str, Any] = {"load_s": self.load_s, "text_encoder_offload": self.text_encoder_offload,
                                     "max_gpu_memory": max_gpu_memory}

    # -- diffusers ----------------------------------------------------------------------------

    def pipe(self):
        from diffusers import ModularPipeline

        pipe = ModularPipeline.from_pretrained(str(self.folder))
        shared = {name: module for name, module in self.components.items()
                  if name in pipe._component_specs and module is not None}
        shared.update({name: copy.deepcopy(shared[name]) for name in ("scheduler", "audio_scheduler") if name in shared})
        pipe.update_components(**shared)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def reference_call(self, pipe, steps: int):
        """The reference's (uint8 frames, waveform) for the benchmark prompt."""
        state = pipe(prompt=PROMPT, generator=torch.Generator("cpu").manual_seed(0), num_frames=self.frames,
                     num_inference_steps=steps, output_type="np", **self.size)
        frames = (np.asarray(state.get("videos"))[0] * 255).round().astype(np.uint8)
        return frames, state.get("audio")[0].float().cpu().numpy()

    def run_reference(self, tuned: bool) -> None:
        pipe = self.pipe()
        name, note, compile_s = "diffusers", "", None
        self.transformer.set_attention_backend("native")  # diffusers' default (sgld's load set its own)
        hooks = self._offload_hooks(pipe.text_encoder) if self.text_encoder_offload else []
        try:
            if tuned:
                backend = tuned_backend(self.device)
                name = "diffusers tuned"
                self.transformer.set_attention_backend(backend)
                self.transformer.compile_repeated_blocks(fullgraph=True)
                try:
                    start = time.perf_counter()
                    self.reference_call(pipe, 2)  # warm-up and compile
                except ValueError as exc:  # diffusers' FA3 refuses a mask: SDPA, as a hand-tuner would fall back
                    if "attn_mask" not in str(exc):
                        raise
                    uncompile_blocks(self.transformer)
                    backend = "native"
                    self.transformer.set_attention_backend(backend)
                    self.transformer.compile_repeated_blocks(fullgraph=True)
                    start = time.perf_counter()
                    self.reference_call(pipe, 2)
                sync(self.cuda)
                compile_s = time.perf_counter() - start
                note = f"set_attention_backend({backend!r}) + compile_repeated_blocks(fullgraph=True)"
            else:
                self.reference_call(pipe, 2)  # warm-up
            stages = StageTimes(self.cuda)
            stages.wrap("video_decode", pipe.vae, "decode")
            stages.wrap("audio_decode", pipe.audio_vae, "decode")
            stages.wrap("text_encode", pipe.text_encoder.model, "forward")  # the reference calls .model directly
            out, e2e, timer, peak = self._timed(lambda: self.reference_call(pipe, self.steps))
            stages.close()
            s = stages.seconds
            row = Row(name=name, steps_run=self.steps, e2e_s=e2e, step_s=step_seconds(timer, self.cuda),
                      dit_forward_ms=timer.ms_per_branch(), dit_forwards=len(timer.pairs),
                      text_encode_s=s.get("text_encode"), video_decode_s=s.get("video_decode"),
                      audio_decode_s=s.get("audio_decode"), peak_gib=peak, compile_s=compile_s, note=note)
            if tuned:
                row.extra["max_diff_vs_diffusers"] = self._diff(out)
            else:
                self.reference = out
            timer.close()
            self._record(row)
        except Exception as exc:  # noqa: BLE001 - a row that fails is reported; the others are still measured
            self._failed(name, exc)
        finally:
            for hook in hooks:
                hook.remove()
            if tuned:
                uncompile_blocks(self.transformer)
            self.transformer.set_attention_backend("native")

    def _offload_hooks(self, text_encoder: torch.nn.Module) -> list:
        """Qwen3-VL brought to the GPU for its forward and sent back after, as diffusers' model offload does: an
        accelerate ``CpuOffload`` hook on it (the reference fires it by hand and calls ``.model``; the pipeline also
        reads its execution device from that hook, where it would otherwise take the first component's, the CPU),
        and a hook after ``.model``'s forward that sends it back."""
        from accelerate.hooks import CpuOffload, add_hook_to_module, remove_hook_from_module

        add_hook_to_module(text_encoder, CpuOffload(execution_device=self.device))

        def send_back(module, args, output) -> None:
            text_encoder.to("cpu")

        class Hooks:
            def remove(self) -> None:
                remove_hook_from_module(text_encoder)

        return [Hooks(), text_encoder.model.register_forward_hook(send_back)]

    # -- sgld -----------------------------------------------------------------------------------

    def run_sgld(self, best: bool) -> None:
        name, compile_s = ("sgld best lossless" if best else "sgld default"), None
        try:
            note = sgld_attention(self.transformer, self.device, best)
            start = time.perf_counter()
            self._sgld(2)  # warm-up (and the compile)
            sync(self.cuda)
            if best:
                compile_s = time.perf_counter() - start
            result, e2e, timer, peak = self._timed(lambda: self._sgld(self.steps))
            t = result.timings
            row = Row(name=name, steps_run=self.steps, e2e_s=e2e, step_s=step_seconds(timer, self.cuda),
                      dit_forward_ms=timer.ms_per_branch(), dit_forwards=len(timer.pairs),
                      text_encode_s=t.get("encode_prompt"), video_decode_s=t.get("decode"),
                      audio_decode_s=t.get("decode_audio"), peak_gib=peak, compile_s=compile_s, note=note)
            row.extra["max_diff_vs_diffusers"] = self._diff((result.frames, result.audio))
            timer.close()
            self._record(row)
        except Exception as exc:  # noqa: BLE001
            self._failed(name, exc)
        finally:
            if best:
                uncompile_blocks(self.transformer)
            self.transformer.set_attention_backend("native")

    def _sgld(self, steps: int):
        return self.gen.generate(PROMPT, num_inference_steps=steps, seed=0, return_frames=True, save_output=False,
                                 **self.size)

    # -- helpers ----------------------------------------------------------------------------------

    def _timed(self, run: Callable[[], Any]):
        timer = ForwardTimer(self.transformer, self.cuda)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with torch.no_grad():
            out = run()
        sync(self.cuda)
        e2e = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else 0.0
        return out, e2e, timer, peak

    def _diff(self, out) -> dict:
        return {} if self.reference is None else av_difference(out, self.reference)

    def _failed(self, name: str, exc: Exception) -> None:
        self.meta[f"{name} failed"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        print(f"{name} failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)

    def _record(self, row: Row) -> None:
        self.rows.append(row)
        print(f"MEASURED {json.dumps(dict(asdict(row), e2e_full_s=row.e2e_full_s), default=str)}", flush=True)


def table(rows: list[Row]) -> str:
    """The markdown table of every row."""
    def fmt(value, spec=".2f"):
        return "–" if value is None else format(value, spec)

    lines = ["| pipeline | DiT fwd ms | fwds | s/step | e2e s (fwds run) | e2e s @49 fwds | text s | video decode s "
             "| audio decode s | peak GiB | vs diffusers |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = r.extra.get("max_diff_vs_diffusers") or {}
        against = f"{diff['frames']}/255, wave {diff['waveform']:.1e}" if diff else "–"
        lines.append(f"| {r.name} | {r.dit_forward_ms:.1f} | {r.dit_forwards} | {fmt(r.step_s, '.3f')} "
                     f"| {r.e2e_s:.2f} ({r.dit_forwards}) | {r.e2e_full_s:.1f} | {fmt(r.text_encode_s)} "
                     f"| {fmt(r.video_decode_s)} | {fmt(r.audio_decode_s, '.3f')} | {r.peak_gib:.1f} | {against} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="inference steps run (at least 3: 2 forwards' gap)")
    parser.add_argument("--tiny", action="store_true", help="the tiny built-in model on the CPU (smoke test)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"which rows, of {', '.join(ROWS)}")
    parser.add_argument("--text-encoder-offload", action="store_true",
                        help="Qwen3-VL waits on the CPU between prompts, both sides (the released size on one GPU)")
    parser.add_argument("--height", type=int, default=None, help="with --width: another canvas (default 16:9)")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--max-gpu-memory", type=float, default=None,
                        help="GiB the memory plan fits into (default: the card's free memory)")
    parser.add_argument("--out", type=Path, default=Path("bench_minimax_h3.json"))
    args = parser.parse_args(argv)
    if (args.height is None) != (args.width is None):
        parser.error("--height and --width go together")

    from sgld.api import quiet_library_logs

    quiet_library_logs()
    torch._dynamo.config.cache_size_limit = 64
    device = torch.device("cpu" if args.tiny else "cuda")
    bench = Bench(args.tiny, args.steps, device, args.text_encoder_offload, args.height, args.width,
                  args.max_gpu_memory)
    meta = {"command": " ".join(sys.argv), "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if bench.cuda else "cpu"}
    rows = [row.strip() for row in args.rows.split(",")]
    for name in ROWS:
        compiled = name in ("diffusers tuned", "sgld best lossless")
        if name not in rows or (compiled and not bench.cuda):
            continue
        if name.startswith("diffusers"):
            with components_as_shipped(bench.components):  # diffusers' own classes
                bench.run_reference(tuned=compiled)
        else:
            bench.run_sgld(best=compiled)
        write_av_report(args.out, {**meta, **bench.meta}, bench.rows, table)
    print("\n" + table(bench.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
