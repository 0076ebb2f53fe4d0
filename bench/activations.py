"""Activation memory of each family's DiT forward and VAE decode: the figures behind the memory plan's constants.

    python bench/activations.py --out activations.json [--models flux,wan14b,...]

A DiT's activation peak is one block's (blocks run one after another and free what they made), so each
model runs as a copy of its ``random:`` folder with two repeated blocks per list, at the released width,
with every component on the GPU; each stage's peak above what was allocated when it began is recorded.
Per model and size it prints the DiT's bytes per (sample x token x hidden unit x value size) — the
memory plan's ``ACTIVATION`` factor — and the VAE decode's bytes per (output pixel x frame held x value
size), untiled and tiled — ``VAE_DECODE``; compare them with sgld/models/memory_plan.py's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name -> (random: model, DiT depth keys, sizes (height, width, frames))
MODELS = {
    "flux": ("random:black-forest-labs/FLUX.1-dev", ("num_layers", "num_single_layers"), [(1024, 1024, 1), (512, 512, 1)]),
    "wan14b": ("random:Wan-AI/Wan2.1-T2V-14B-Diffusers", ("num_layers",), [(480, 832, 81), (480, 832, 33)]),
    "qwen": ("random:Qwen/Qwen-Image", ("num_layers",), [(1024, 1024, 1)]),
    "z_image": ("random:Tongyi-MAI/Z-Image-Turbo", ("n_layers", "n_refiner_layers"), [(1024, 1024, 1)]),
    "flux2_klein": ("random:black-forest-labs/FLUX.2-klein-4B", ("num_layers", "num_single_layers"), [(1024, 1024, 1)]),
    "hunyuan15": ("random:hunyuanvideo-community/HunyuanVideo-1.5-480p_t2v", ("num_layers", "num_refiner_layers"),
                  [(480, 848, 33)]),
    "ltx2": ("random:Lightricks/LTX-2", ("num_layers",), [(512, 768, 121)]),
}
PROMPT = "A red fox runs through fresh snow at dawn, cinematic, detailed fur"


def shallow_copy(model: str, keys: tuple[str, ...], root: Path) -> Path:
    """``model``'s configs-only folder with 2 blocks in each of the DiT's block lists (``keys``)."""
    from sgld.model_builders.random_weights import materialize_random

    source = materialize_random(model)
    folder = root / source.name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, folder)
    config_file = folder / "transformer" / "config.json"
    config = json.loads(config_file.read_text())
    config.update({key: 2 for key in keys if key in config})
    config_file.write_text(json.dumps(config, indent=2))
    return folder


def measure(gen, height: int, width: int, frames: int) -> dict:
    """Each stage's peak above its start (bytes), one generation of 2 steps; then the decode again, tiled."""
    peaks: dict[str, int] = {}
    for stage in gen.pipeline.stages:
        forward = stage.forward

        def wrapped(req, forward=forward, name=stage.name):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
            out = forward(req)
            torch.cuda.synchronize()
            peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated() - start)
            return out

        stage.forward = wrapped
    gen.generate(PROMPT, height=height, width=width, num_frames=frames, num_inference_steps=2, seed=0,
                 save_output=False)
    untiled = dict(peaks)
    gen.pipeline.components["vae"].enable_tiling()
    peaks.clear()
    gen.generate(PROMPT, height=height, width=width, num_frames=frames, num_inference_steps=2, seed=0,
                 save_output=False)
    gen.pipeline.components["vae"].disable_tiling()
    return {"untiled": untiled, "tiled": dict(peaks)}


def factors(gen, folder: Path, height: int, width: int, frames: int, peaks: dict) -> dict:
    """The memory plan's factors from the measured peaks (its token and pixel counts, its size conventions)."""
    from sgld.models.memory_plan import VAE_DECODE, DEFAULT_VAE_DECODE, _read_config, hidden_size, request_size
    from sgld.request import Request

    spec = gen.pipeline.spec
    req = Request.from_sampling(gen.run.sampling, height=height, width=width, num_frames=frames)
    constraints = spec.constraints_in_folder(folder)
    h, w, f = request_size(spec, req)
    latent_frames = (f - 1) // constraints.temporal_factor + 1
    image_tokens = (h // constraints.spatial_multiple) * (w // constraints.spatial_multiple) * latent_frames
    dit = _read_config(folder, "transformer")
    samples = 2 if spec.guided(req) and spec.guidance in ("cfg", "cfg_extra") else 1
    denoise, decode, decode_tiled = peaks["untiled"]["denoise"], peaks["untiled"]["decode"], peaks["tiled"]["decode"]
    vae = _read_config(folder, "vae")
    _, in_flight = VAE_DECODE.get(vae.get("_class_name"), DEFAULT_VAE_DECODE)
    held = f if in_flight is None else min(in_flight, f)
    output = f * h * w * 3 * 4
    element = 2 if gen.run.model.precision != "fp32" else 4
    vae_element = 2 if gen.run.vae.precision != "fp32" else 4
    return {"image_tokens": image_tokens, "samples": samples, "hidden": hidden_size(dit),
            "dit_bytes_per_token_unit (text tokens excluded)": denoise / (samples * image_tokens * hidden_size(dit) * element),
            "vae_bytes_per_pixel": (decode - output) / (h * w * held * vae_element),
            "vae_tiled_gib": decode_tiled / 2**30}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=Path("activations.json"))
    parser.add_argument("--root", type=Path, default=Path("/tmp/sgld-activations"))
    args = parser.parse_args()
    from sgld import DiffGenerator
    from sgld.api import quiet_library_logs

    quiet_library_logs()
    results = {}
    for name in args.models.split(","):
        model, keys, sizes = MODELS[name]
        start = time.perf_counter()
        folder = shallow_copy(model, keys, args.root)
        # Everything resident: the plan's settings given, so it decides nothing here.
        gen = DiffGenerator.from_pretrained(str(folder), device="cuda", text_encoder_cpu_offload=False,
                                            dit_cpu_offload=False, vae_cpu_offload=False, vae_tiling=False)
        for height, width, frames in sizes:
            peaks = measure(gen, height, width, frames)
            row = {"peaks_gib": {k: {s: v / 2**30 for s, v in p.items()} for k, p in peaks.items()},
                   **factors(gen, folder, height, width, frames, peaks)}
            results[f"{name} {width}x{height}x{frames}"] = row
            print(name, f"{width}x{height}x{frames}", json.dumps(row), flush=True)
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
        gen.close()
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
