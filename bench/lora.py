"""LoRA overhead and switch time: step time with no adapter, a merged adapter and a dynamic one; adapter switches.

    python bench/lora.py --out docs/results/lora_h200.json            # random full-size weights, GPU
    python bench/lora.py --tiny --out /tmp/lora.json                  # tiny models, any machine (a smoke run)

For each workload the model is made once with random weights; two rank-32 adapters over the attention
and FFN projections are made with PEFT on it and saved (safetensors) into a LoRA dir. Each row times
``--steps`` denoise steps (synchronized per step) after a warm-up; the switch rows time
``DiffGenerator.use_loras``: the first use of an adapter (read + inject) and switching between two loaded ones.
The compiled rows run ``--enable-torch-compile`` with the LoRA dir (adapters swapped into a slot prepared
before compile) and count the graphs compiled after the first call (0: no switch recompiled).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORKLOADS = {
    "wan13": dict(repo="Wan-AI/Wan2.1-T2V-1.3B-Diffusers", tiny="tiny-wan-t2v", size=dict(height=480, width=832,
                  num_frames=81), tiny_size=dict(height=64, width=64, num_frames=9)),
    "flux": dict(repo="black-forest-labs/FLUX.1-dev", tiny="tiny-flux", size=dict(height=1024, width=1024),
                 tiny_size=dict(height=64, width=64)),
}
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
           "ffn.net.0.proj", "ffn.net.2", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
           "proj_mlp"]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def make_adapter(transformer, folder: Path, name: str, rank: int, seed: int, pipeline_cls) -> None:
    """A random rank-``rank`` adapter over TARGETS (those the model has), saved as ``folder/name.safetensors``."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    names = {n.rsplit(".", 1)[-1] for n, _ in transformer.named_modules()} | {
        ".".join(n.split(".")[-2:]) for n, _ in transformer.named_modules()} | {
        ".".join(n.split(".")[-3:]) for n, _ in transformer.named_modules()}
    torch.manual_seed(seed)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                       target_modules=[t for t in TARGETS if t in names]), adapter_name="bench")
    state = {k: v.detach().to("cpu", torch.float32) * (1.0 if "lora_A" in k else 0.01)
             for k, v in get_peft_model_state_dict(transformer, adapter_name="bench").items()}
    transformer.delete_adapters("bench")
    with tempfile.TemporaryDirectory() as tmp:
        pipeline_cls.save_lora_weights(tmp, transformer_lora_layers=state)
        (folder / f"{name}.safetensors").write_bytes((Path(tmp) / "pytorch_lora_weights.safetensors").read_bytes())


def time_steps(gen, size: dict, steps: int, loras) -> float:
    """Median seconds per denoise step (the loop's own steps, synchronized)."""
    marks: list[float] = []

    def on_step(done: int, total: int) -> None:
        sync()
        marks.append(time.perf_counter())

    gen.generate("a red fox running through snow", seed=1, num_inference_steps=steps, save_output=False,
                 step_callback=on_step, loras=loras, **size)
    gaps = [b - a for a, b in zip(marks, marks[1:])]
    return statistics.median(gaps)


def timed(fn) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def run(workload: str, tiny: bool, steps: int, rank: int, compiled: bool = True) -> dict:
    import diffusers

    from sgld import DiffGenerator

    spec = WORKLOADS[workload]
    size = spec["tiny_size"] if tiny else spec["size"]
    lora_dir = Path(tempfile.mkdtemp(prefix="sgld-lora-"))
    model = spec["tiny"] if tiny else f"random:{spec['repo']}"
    gen = DiffGenerator.from_pretrained(model, lora_dir=str(lora_dir), lora_merge_mode="dynamic", max_loaded_loras=4)
    transformer = gen.pipeline.components["transformer"]
    cls = getattr(diffusers, gen.pipeline.spec.reference_pipeline)
    for seed, name in ((1, "a"), (2, "b")):
        make_adapter(transformer, lora_dir, name, rank, seed, cls)
    rows = {}
    time_steps(gen, size, 2, [])  # warm-up (kernels, allocator)
    rows["none"] = time_steps(gen, size, steps, [])
    rows["first use of adapter a (read + inject)"] = timed(lambda: gen.use_loras([{"name": "a"}]))
    rows["dynamic"] = time_steps(gen, size, steps, [{"name": "a"}])
    rows["first use of adapter b"] = timed(lambda: gen.use_loras([{"name": "b"}]))
    rows["switch b -> a (both loaded, dynamic)"] = timed(lambda: gen.use_loras([{"name": "a"}]))
    gen.set_lora_merged(True)
    rows["merged"] = time_steps(gen, size, steps, [{"name": "a"}])
    rows["switch a -> b (merged: unfuse, restore, fuse)"] = timed(lambda: gen.use_loras([{"name": "b"}]))
    base = rows["none"]
    result = {"model": model, "size": size, "rank": rank, "steps_timed": steps, "seconds": rows,
              "merged_vs_none": rows["merged"] / base, "dynamic_vs_none": rows["dynamic"] / base}
    if compiled:
        del transformer
        gen.close()
        result["compiled"] = run_compiled(model, lora_dir, size, steps)
    return result


def run_compiled(model: str, lora_dir: Path, size: dict, steps: int) -> dict:
    """--enable-torch-compile with the LoRA dir: the hotswap slot; step times and whether a switch recompiles."""
    from torch._dynamo.utils import counters

    from sgld import DiffGenerator

    gen = DiffGenerator.from_pretrained(model, lora_dir=str(lora_dir), enable_torch_compile=True, max_loaded_loras=4)
    compile_s = timed(lambda: time_steps(gen, size, 2, [{"name": "a"}]))  # compiles the blocks
    graphs = counters["stats"]["unique_graphs"]
    rows = {"first call (compile)": compile_s,
            "adapter a": time_steps(gen, size, steps, [{"name": "a"}]),
            "switch a -> b (hotswap copy)": timed(lambda: gen.use_loras([{"name": "b", "scale": 0.7}])),
            "adapter b": time_steps(gen, size, steps, [{"name": "b", "scale": 0.7}]),
            "switch b -> none (zeros)": timed(lambda: gen.use_loras([])),
            "none (zero slot)": time_steps(gen, size, steps, [])}
    return {"seconds": rows, "graphs_compiled": graphs, "recompiles_after_switches": counters["stats"]["unique_graphs"] - graphs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--tiny", action="store_true", help="tiny models (a smoke run on any machine)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled (hotswap) rows")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from sgld.api import quiet_library_logs

    quiet_library_logs()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    results = {}
    for workload in args.workloads:
        results[workload] = run(workload, args.tiny, args.steps, args.rank, not args.no_compile)
        print(workload, json.dumps(results[workload], indent=1), flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": device, "torch": torch.__version__, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
