"""Real-ESRGAN x4 (RRDBNet, 23 blocks) on a Wan 480p clip: where the time goes and what makes it shorter.

    python3 bench/upscaler.py --out upscaler.json           # on a GPU: 81 frames of 832x480, seeded random weights
    python3 bench/upscaler.py --tiny --out /tmp/up.json     # 2 blocks, 3 small frames on the CPU (a smoke test)

Issue 35 bounds finishing at 10% of the clip's generation (59.0 s on an H200, so 5.9 s); sgld's path took 10.07 s
there in fp16. Rows, each over the whole clip after a warm-up batch:
- ``sgld finish()``: the request path's upscaling step (the network as ``sgld.finishing.realesrgan.prepare`` readies
  it: dense blocks restacked, fp16 channels-last; uint8 in, chunks of 8 frames, uint8 out on the host), then the MP4
  write of its output (libx264 on the CPU, as a request saves it: 16x the pixels of the clip);
- ``eager``: the network alone, fp16 channels-last batches of ``--batch`` (what finish() runs inside);
- ``cudnn benchmark``: the same with ``torch.backends.cudnn.benchmark`` (cuDNN times its algorithms per shape);
- ``compile`` / ``compile max-autotune``: ``torch.compile`` of the network (Inductor fuses the concatenations,
  LeakyReLUs and scaled residual adds around cuDNN's convolutions; max-autotune also tries its own conv templates);
- ``regional compile``: ``torch.compile`` of each of the 23 RRDB blocks, which share one graph (the whole network's
  compile took 119 s on an H100, for 23 copies of the same block): sgld's ``compile_upscaler``;
- ``sgld finish() compiled``: the same as a run with ``model.enable_torch_compile`` takes it (restacked, then each
  RRDB block compiled), its first call over the clip (the compile) timed apart;
- ``restacked`` (+ ``compile``, the whole network): each dense block without concatenations
  (``RestackedDenseBlock``): a convolution of a new piece (the block input, then each 32-channel output) computes
  its share of every later convolution at once (64 to 192 output channels instead of 32), added into running sums.
  The same multiply-adds, wider GEMMs, no concatenated copies.
Each row gives seconds for the clip, its share of the generation, TFLOP/s (the convolutions' multiply-adds x 2),
and PSNR of its first batch against the fp32 network (fp16 rounding is the floor every fp16 row shares).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch._dynamo
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sgld.finishing.realesrgan import RRDBNet, compile_upscaler, prepare, restack  # noqa: E402

# max-autotune last: it took 312 s to compile on an H100 (2026-12-06), which left no time for the rows after it.
ROWS = ("sgld finish()", "sgld finish() compiled", "eager", "cudnn benchmark", "compile", "regional compile",
        "restacked", "restacked compile", "compile max-autotune")


def restacked(net: RRDBNet) -> RRDBNet:
    """A copy of ``net`` whose dense blocks are sgld's ``RestackedDenseBlock``s (the same function)."""
    return restack(copy.deepcopy(net))


def conv_flops(net: nn.Module, sample: torch.Tensor) -> float:
    """FLOPs (2 x multiply-adds) of ``net``'s convolutions on ``sample``, counted from their output shapes."""
    total = 0.0

    def count(module, args, output):
        nonlocal total
        weight = module.weight if isinstance(module, nn.Conv2d) else None
        if weight is not None:
            total += 2.0 * output.numel() * weight.shape[1] * weight.shape[2] * weight.shape[3]

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(sample)
    for hook in hooks:
        hook.remove()
    return total


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.float().clamp(0, 1) - b.float().clamp(0, 1)) ** 2).item()
    return float("inf") if mse == 0 else 10 * float(np.log10(1.0 / mse))


def clip_seconds(run_batch: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor, batch: int,
                 cuda: bool) -> float:
    """Seconds to run every frame through ``run_batch`` in batches (warmed up on both batch sizes first: a
    compiled network specializes on the last, shorter batch too)."""
    with torch.no_grad():
        run_batch(frames[:batch])
        if frames.shape[0] % batch:
            run_batch(frames[:frames.shape[0] % batch])
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, frames.shape[0], batch):
            run_batch(frames[i:i + batch])
        if cuda:
            torch.cuda.synchronize()
    return time.perf_counter() - start


def regionally_compiled(net: RRDBNet) -> RRDBNet:
    """A copy of ``net`` compiled as sgld compiles the upscaler (each RRDB block; one graph for all)."""
    return compile_upscaler(copy.deepcopy(net))


def write_mp4(frames: np.ndarray, path: Path, fps: int) -> str:
    """Write ``frames`` as sgld saves a video (libx264, crf 18, yuv420p, preset medium); the writer used, named.

    Through sgld's own ``save_video`` (imageio-ffmpeg) where installed; else through PyAV with the same encoder and
    settings: imageio-ffmpeg's 68 MB wheel does not fit a device call's 64 MiB carry beside the others."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        import av

        with av.open(str(path), mode="w") as container:
            video = container.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "medium"})
            video.height, video.width, video.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
            for frame in frames:
                container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(video.encode())
        return "PyAV"
    from sgld.outputs import save_video

    save_video(frames, path, fps)
    return "imageio-ffmpeg (sgld's save_video)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--batch", type=int, default=4, help="frames a forward (sgld's upscale() default: 4)")
    parser.add_argument("--generation-s", type=float, default=59.0,
                        help="the clip's generation time the share is of (59.0: Wan 1.3B 480p, 50 steps, H200)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"which rows, of {', '.join(ROWS)}")
    parser.add_argument("--tiny", action="store_true", help="2 blocks, 3 frames of 32x48 on the CPU")
    parser.add_argument("--out", type=Path, default=Path("bench_upscaler.json"))
    args = parser.parse_args(argv)
    if args.tiny:
        args.frames, args.height, args.width, args.batch = 3, 32, 48, 2
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; the rows are {', '.join(ROWS)}")

    cuda = not args.tiny and torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype, layout = (torch.float16, torch.channels_last) if cuda else (torch.float32, torch.contiguous_format)
    torch.manual_seed(0)
    reference = RRDBNet(4, blocks=2 if args.tiny else 23).eval().to(device)
    net = RRDBNet(4, blocks=2 if args.tiny else 23).eval()
    net.load_state_dict(reference.state_dict())
    net = net.to(device, dtype).to(memory_format=layout)
    # A smooth moving pattern rather than noise: upscaling noise is not what the network is timed on in use.
    ys, xs = torch.meshgrid(torch.linspace(0, 1, args.height), torch.linspace(0, 1, args.width), indexing="ij")
    frames = torch.stack([torch.stack([(xs + t / 50) % 1, ys, (xs * ys + t / 80) % 1])
                          for t in range(args.frames)]).to(device)
    flops_per_frame = conv_flops(reference, frames[:1])
    with torch.no_grad():
        truth = reference(frames[:args.batch])

    report = {"meta": {"command": " ".join(sys.argv), "torch": torch.__version__,
                       "device": torch.cuda.get_device_name() if cuda else "cpu", "frames": args.frames,
                       "size": [args.height, args.width], "batch": args.batch, "dtype": str(dtype),
                       "generation_s": args.generation_s, "tflop_per_frame": flops_per_frame / 1e12},
              "rows": []}

    def as_input(x: torch.Tensor) -> torch.Tensor:
        return x.to(dtype, memory_format=layout)

    def record(name: str, seconds: float, model: nn.Module | None, note: str = "", convolutions: bool = True) -> None:
        """One row (``convolutions``: the row ran the network, so its TFLOP/s mean something), printed and written."""
        tflop_per_s = round(flops_per_frame * args.frames / seconds / 1e12, 1) if convolutions else None
        row = {"name": name, "clip_s": round(seconds, 3), "share_of_generation": round(seconds / args.generation_s, 4),
               "tflop_per_s": tflop_per_s, "note": note}
        if model is not None:
            with torch.no_grad():
                row["psnr_vs_fp32_db"] = round(psnr(model(as_input(frames[:args.batch])), truth), 2)
        report["rows"].append(row)
        print("ROW", json.dumps(row), flush=True)
        args.out.write_text(json.dumps(report, indent=2))

    def record_write(upscaled: np.ndarray) -> None:
        """The upscaled clip's MP4 write, as a request saves it (libx264 crf 18 on the CPU): post-processing too."""
        import os
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            writer = write_mp4(upscaled, Path(folder) / "upscaled.mp4", 16)
            seconds = time.perf_counter() - start
        record("mp4 write of the upscaled clip", seconds, None, f"libx264 crf 18 through {writer}, {os.cpu_count()} "
               f"CPU cores, {upscaled.shape[2]}x{upscaled.shape[1]}", convolutions=False)

    for name in ROWS:
        if name not in rows:
            continue
        try:
            torch.backends.cudnn.benchmark = name not in ("eager", "sgld finish()", "sgld finish() compiled")
            if name.startswith("sgld finish()"):
                from sgld.finishing import apply

                pixels = (frames.permute(0, 2, 3, 1) * 255).round().byte().cpu().numpy()
                note = f"restacked, uint8 in and out, chunks of {apply.CHUNK} frames, batches of 4"
                compiled = name.endswith("compiled")
                if compiled:
                    torch._dynamo.reset()
                model = prepare(copy.deepcopy(net), device, compile=compiled)
                if compiled:
                    start = time.perf_counter()
                    apply._upscale(model, pixels, 4, device)  # the compile: every batch length the clip runs
                    if cuda:
                        torch.cuda.synchronize()
                    note += f"; first call {time.perf_counter() - start:.1f} s (the compile)"
                else:  # finish()'s upscaling step on the loaded network (its model lookup is a dict hit when warm)
                    apply._upscale(model, pixels[:args.batch], 4, device)
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                upscaled = apply._upscale(model, pixels, 4, device)
                if cuda:
                    torch.cuda.synchronize()
                record(name, time.perf_counter() - start, None, note)
                if name == "sgld finish()":
                    record_write(upscaled)
                continue
            model: nn.Module = restacked(net) if name.startswith("restacked") else net
            note = "cudnn.benchmark" if torch.backends.cudnn.benchmark else ""
            if "compile" in name:
                torch._dynamo.reset()
                mode = "max-autotune-no-cudagraphs" if "max-autotune" in name else None
                start = time.perf_counter()
                model = regionally_compiled(net) if name == "regional compile" else torch.compile(model, mode=mode,
                                                                                                 dynamic=False)
                with torch.no_grad():  # the compile: both batch sizes the clip runs
                    model(as_input(frames[:args.batch]))
                    if args.frames % args.batch:
                        model(as_input(frames[:args.frames % args.batch]))
                note += f"; compile {time.perf_counter() - start:.1f} s" + (f" ({mode})" if mode else "")
            record(name, clip_seconds(lambda x: model(as_input(x)), frames, args.batch, cuda), model, note.lstrip("; "))
        except Exception as exc:  # noqa: BLE001 - a row that fails is reported; the others still run
            report["meta"][f"{name} failed"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(f"{name} failed: {exc}", flush=True)
            args.out.write_text(json.dumps(report, indent=2))
    print("\n| row | clip s | share of generation | TFLOP/s | PSNR vs fp32 dB | note |\n|---|---|---|---|---|---|")
    for row in report["rows"]:
        print(f"| {row['name']} | {row['clip_s']:.2f} | {row['share_of_generation']:.1%} | {row['tflop_per_s'] or '–'} | "
              f"{row.get('psnr_vs_fp32_db', '–')} | {row['note']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
