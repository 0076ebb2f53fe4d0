"""Batching throughput: through the real server (batching on vs off) and in one process (sgld vs diffusers' batched call).

    # the server at concurrency 1, 2, 4, 8, batching off (--max-batch-size 1) and on (--max-batch-size 8)
    python bench/batching.py server --model random:black-forest-labs/FLUX.1-dev --sizes 512 1024 --steps 28 \\
        --out docs/results/batching_server_flux_h200.json
    # one process: sgld's generate_batch and diffusers' own batched call over the same modules, eager then compiled
    python bench/batching.py inprocess --model random:black-forest-labs/FLUX.1-dev --sizes 512 1024 --steps 28 \\
        --batches 1 4 8 --compile --out docs/results/batching_inprocess_flux_h200.json
    # a video model: does a batch of two 480p clips gain over one? (sgld only)
    python bench/batching.py inprocess --model random:Wan-AI/Wan2.1-T2V-1.3B-Diffusers --sizes 480 --width 832 \
        --frames 81 --steps 4 --batches 1 2 --no-reference --out docs/results/batching_inprocess_wan13_h200.json
    python bench/batching.py server --model tiny-flux --sizes 64 --steps 4 --out /tmp/b.json   # a smoke run, any machine

Server rows: a fresh ``sgl-diffusion serve`` per mode; ``c`` clients each send one request at once
(``max(c, 2)`` requests in all), after one warm-up request per size; images/s = requests / wall time, and
each request's latency (warm-up: one request, then one of each concurrency's batch shape). In-process rows: images/s of one call making ``b`` images, after a warm-up call;
the compiled rows also count the graphs compiled and any recompile-limit failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PROMPTS = ["a red fox in the snow", "a lighthouse at dusk, long exposure", "a bowl of ramen, studio light",
           "an astronaut riding a horse", "a watercolor of a harbor", "a city street in the rain at night",
           "a macro photo of a bee on a flower", "a mountain lake at sunrise"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict, timeout: float = 1800) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class Server:
    """``sgl-diffusion serve`` in a subprocess on a free 127.0.0.1 port."""

    def __init__(self, model: str, extra: list[str], log: Path):
        self.port = free_port()
        self.out = tempfile.mkdtemp(prefix="sgld-bench-")
        self.proc = subprocess.Popen([sys.executable, "-m", "sgld.cli", "serve", "--model-path", model, "--port",
                                      str(self.port), "--output-path", self.out, "--max-queue", "64", *extra],
                                     cwd=REPO, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        start = time.perf_counter()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        self.ready_s = time.perf_counter() - start

    def image(self, prompt: str, size: int, steps: int, seed: int) -> float:
        """One synchronous image request; its latency in seconds."""
        start = time.perf_counter()
        post(f"http://127.0.0.1:{self.port}/v1/images/generations",
             {"prompt": prompt, "size": f"{size}x{size}", "seed": seed, "num_inference_steps": steps})
        return time.perf_counter() - start

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return r.read().decode()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def server_rows(args) -> list[dict]:
    extra = args.serve_args.split()
    modes = {"batching off": ["--max-batch-size", "1", *extra],
             "batching on": ["--max-batch-size", str(args.max_batch_size or max(args.concurrency)),
                             "--batch-max-pixels", str(10**9), *extra]}
    rows = []
    for mode, extra in modes.items():
        server = Server(args.model, extra, Path(args.out).with_suffix(".server.log"))
        try:
            for size in args.sizes:
                server.image(PROMPTS[0], size, args.steps, 0)  # warm-up: kernels, allocator
                with ThreadPoolExecutor(max(args.concurrency)) as pool:  # and each batch shape (compile)
                    list(pool.map(lambda i: server.image(PROMPTS[i % 8], size, args.steps, i), range(max(args.concurrency))))
                for c in args.concurrency:
                    count = max(c, 2)
                    start = time.perf_counter()
                    with ThreadPoolExecutor(c) as pool:
                        latencies = list(pool.map(lambda i: server.image(PROMPTS[i % 8], size, args.steps, i), range(count)))
                    wall = time.perf_counter() - start
                    row = {"mode": mode, "size": size, "steps": args.steps, "concurrency": c, "requests": count,
                           "wall_s": round(wall, 3), "images_per_s": round(count / wall, 4),
                           "latency_mean_s": round(statistics.mean(latencies), 3),
                           "latency_max_s": round(max(latencies), 3), "server_ready_s": round(server.ready_s, 1)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            batch_lines = [line for line in server.metrics().splitlines() if line.startswith("sgld_batch_size_")]
            rows.append({"mode": mode, "metrics": batch_lines})
        finally:
            server.stop()
    return rows


def inprocess_rows(args) -> list[dict]:
    import inspect
    from contextlib import nullcontext

    import diffusers
    import torch

    from sgld import DiffGenerator
    from sgld.api import BatchItem
    from sgld.levers.shipped import components_as_shipped

    cuda = torch.cuda.is_available()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    from sgld.run_config import run_config_from_options

    # diffusers' pipelines hand the VAE latents in the DiT's dtype: its VAE must be in that precision too.
    precision = run_config_from_options({"model_path": args.model}).model.precision
    generator = DiffGenerator.from_pretrained(args.model, vae_precision=str(precision))
    components = generator.pipeline.components
    reference_cls = getattr(diffusers, generator.pipeline.spec.reference_pipeline)
    names = inspect.signature(reference_cls.__init__).parameters
    reference = reference_cls(**{n: components.get(n) for n in names if n != "self" and n in components})
    reference.set_progress_bar_config(disable=True)
    rows = []

    def timed(name: str, size: int, batch: int, call) -> dict:
        call()  # warm-up (and, compiled, the compile for this shape)
        sync()
        start = time.perf_counter()
        call()
        sync()
        seconds = time.perf_counter() - start
        row = {"name": name, "size": size, "steps": args.steps, "batch": batch, "seconds": round(seconds, 3),
               "images_per_s": round(batch / seconds, 4)}
        if cuda:
            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    def sgld_call(size: int, batch: int):
        video = {"num_frames": args.frames} if args.frames else {}
        items = [BatchItem({"prompt": PROMPTS[i % 8], "seed": i, "height": size, "width": args.width or size,
                            "num_inference_steps": args.steps, "save_output": False, **video}) for i in range(batch)]
        def call():
            for outcome in generator.generate_batch(items):
                if isinstance(outcome, Exception):
                    raise outcome

        return call

    def reference_call(size: int, batch: int, shipped: bool = True):
        generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]

        def call():
            # diffusers as shipped on sgld's modules, or (compiled: swapping classes would recompile) as they are
            with components_as_shipped(components) if shipped else nullcontext():
                return reference(prompt=[PROMPTS[i % 8] for i in range(batch)], height=size, width=size,
                                 num_inference_steps=args.steps, generator=generators, output_type="np")

        return call

    for size in args.sizes:
        for batch in args.batches:
            if not args.no_reference:
                timed("diffusers", size, batch, reference_call(size, batch))
            timed("sgld", size, batch, sgld_call(size, batch))
    if args.compile:
        from torch._dynamo.utils import counters

        from sgld.levers.transformer_setup import compile_transformer

        compile_transformer(components["transformer"], generator.pipeline._backends["transformer"])
        compiled = [("sgld compiled", sgld_call)]
        if not args.no_reference:
            compiled.append(("diffusers compiled (same modules)",
                             lambda size, batch: reference_call(size, batch, shipped=False)))
        for name, make in compiled:
            for size in args.sizes:
                for batch in args.batches:
                    before = counters["stats"]["unique_graphs"]
                    try:
                        row = timed(name, size, batch, make(size, batch))
                        row["graphs_compiled"] = counters["stats"]["unique_graphs"] - before
                    except Exception as exc:  # noqa: BLE001 - a recompile-limit failure is a result here
                        rows.append({"name": name, "size": size, "batch": batch,
                                     "error": f"{type(exc).__name__}: {exc}"[:500]})
                        print(json.dumps(rows[-1]), flush=True)
            if name == "sgld compiled":  # does a lone request get slower once batch graphs exist?
                timed("sgld compiled, batch 1 again after the other batches", args.sizes[0], 1, sgld_call(args.sizes[0], 1))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("server", "inprocess"))
    parser.add_argument("--model", default="random:black-forest-labs/FLUX.1-dev")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--serve-args", default="", help="server: more serve flags for both modes (--enable-torch-compile)")
    parser.add_argument("--max-batch-size", type=int, help="server: batching on's --max-batch-size (default: top concurrency)")
    parser.add_argument("--width", type=int, help="in-process: output width (default: the size, square)")
    parser.add_argument("--frames", type=int, help="in-process: frames of a video model")
    parser.add_argument("--no-reference", action="store_true", help="in-process: sgld rows only")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rows = server_rows(args) if args.what == "server" else inprocess_rows(args)
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "device": device, "rows": rows,
                                          "created": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
