"""Whether a DiT's forwards take longer inside sgld's denoise loop than repeated on one input, and which of three
causes it is: the loop (the GPU waits between or inside forwards), the values (under a power cap the clock follows
the power the kernels draw, which depends on the data), or neither.

    python bench/forward_gap.py --out gap.json [--model-path random:Qwen/Qwen-Image] [--enable-torch-compile]

One model, true CFG where the family has it, one GPU. Measured in one process: each forward's time inside a 4-step
run (CUDA events around every forward, as ``bench/speed.py`` reports "DiT fwd ms"); the first forward's inputs and
the last's, each repeated 20 times; and forwards 2-4 of a 4-step run under the profiler (kernel ms against wall ms).
A lean call for a short device lease: eager by default, so nothing compiles.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernel_profile import median, profile_forwards, timed_forwards  # noqa: E402
from speed import NEGATIVE, PROMPT, ForwardTimer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default="random:Qwen/Qwen-Image")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument("--attention-backend", default="auto")
    parser.add_argument("--enable-torch-compile", action="store_true")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("forward_gap.json"))
    args = parser.parse_args(argv)

    from sgld import DiffGenerator
    from sgld.api import quiet_library_logs

    quiet_library_logs()
    start = time.perf_counter()
    gen = DiffGenerator.from_pretrained(args.model_path, device=args.device, attention_backend=args.attention_backend,
                                        enable_torch_compile=args.enable_torch_compile)
    transformer = gen.pipeline.components["transformer"]
    report: dict = {"command": " ".join(sys.argv), "device": torch.cuda.get_device_name(),
                    "torch": torch.__version__, "load_s": round(time.perf_counter() - start, 2)}

    def run(steps: int):
        return gen.generate(PROMPT, negative_prompt=NEGATIVE, guidance_scale=args.guidance_scale, seed=0,
                            num_inference_steps=steps, height=args.height, width=args.width, save_output=False,
                            return_frames=True)

    def save() -> None:
        args.out.write_text(json.dumps(report, indent=1))

    run(2)  # warm-up (and the compile, where asked)
    timer = ForwardTimer(transformer, True)
    run(4)
    report["in_loop_median_ms"] = timer.ms_per_branch()
    report["in_loop_ms"] = [round(s.elapsed_time(e), 2) for s, e in timer.pairs]
    timer.close()
    print(f"inside the loop: {report['in_loop_ms']} ms (median after the first {report['in_loop_median_ms']:.1f})",
          flush=True)
    save()

    repeated, first = profile_forwards(transformer, run, sustain=args.repeats)
    with torch.no_grad():  # the first inputs again: a drift over the call (warming, clocks) shows here
        again = timed_forwards(transformer, [first], args.repeats)
    repeated.update(first_again_ms=again, first_again_median_ms=median(again))
    report["repeated"] = repeated
    print(f"repeated on one input: {repeated['kernel_ms']:.1f} ms of kernels, {repeated['wall_ms']:.1f} ms wall a "
          f"forward; {args.repeats} on the first step's inputs: median {repeated['sustained_median_ms']:.1f} ms, "
          f"on the last step's {repeated['late_inputs_median_ms']:.1f}, on the first's again {median(again):.1f}",
          flush=True)
    profile = repeated["in_pipeline"]
    if "error" not in profile:
        print(f"forwards 2-4 of a 4-step run under the profiler: {profile['kernel_ms']:.1f} ms of kernels, "
              f"{profile['wall_ms']:.1f} ms wall a forward ({profile['busy']:.0%} busy)", flush=True)
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
