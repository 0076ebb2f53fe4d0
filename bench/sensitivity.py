"""How far equivalent computations drift apart on a random-weight model (is a PSNR gap a bug or chaos?).

    python bench/sensitivity.py --model random:hunyuanvideo-community/HunyuanVideo-1.5-480p_t2v --frames 33

Runs the same request several ways that are exact in real arithmetic and differ only in bf16
rounding, from the same initial noise, and prints the PSNR of each output against the diffusers
reference pipeline on the same modules (and how far the first DiT forward's inputs and output are apart): sgld as it runs (each prompt's real tokens, attention without a mask), sgld with
the dense mask forced on (same tokens: only the attention kernel differs), and diffusers itself
with cuDNN attention. If the exact variants sit as far apart as sgld does from diffusers, the gap
is the random network amplifying rounding, not a difference in what is computed.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from speed import NEGATIVE, PROMPT, psnr, to_uint8  # noqa: E402


def first_forward_report(ref: dict, mine: dict) -> dict:
    """Max |difference| and the reference's max |value| of each first-forward input and the output.

    Text inputs are compared at the reference's unpadded tokens (sgld passes only those).
    """
    report = {}
    for key, value in ref.items():
        if key not in mine or "mask" in key:
            continue
        other = mine[key]
        mask_key = {"encoder_hidden_states": "encoder_attention_mask",
                    "encoder_hidden_states_2": "encoder_attention_mask_2"}.get(key)
        if mask_key in ref and value.shape != other.shape:
            value = value[0][ref[mask_key][0].bool()][None]
        if value.shape != other.shape or value.numel() == 0:
            report[key] = {"shapes": [list(value.shape), list(other.shape)]}
            continue
        report[key] = {"max_abs_diff": float((value - other).abs().max()), "ref_max_abs": float(value.abs().max())}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=848)
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import diffusers
    from diffusers.utils.torch_utils import randn_tensor

    from sgld import DiffGenerator

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = DiffGenerator.from_pretrained(args.model, device=device)
    components = gen.pipeline.components
    transformer = components["transformer"]
    cls = getattr(diffusers, gen.pipeline.spec.reference_pipeline)
    pipe = cls(**{n: components.get(n) for n in inspect.signature(cls.__init__).parameters if n in components})
    pipe.set_progress_bar_config(disable=True)
    size = dict(height=args.height, width=args.width, num_frames=args.frames, num_inference_steps=args.steps)

    def reference() -> np.ndarray:
        # The noise sgld draws (fp32, seed 0): the reference would draw its own in bf16, other numbers on torch 2.11.
        vae = components["vae"]
        shape = (1, vae.config.latent_channels, (args.frames - 1) // vae.config.temporal_compression_ratio + 1,
                 args.height // vae.config.spatial_compression_ratio, args.width // vae.config.spatial_compression_ratio)
        noise = randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(0), dtype=torch.float32).to(device)
        out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, latents=noise, output_type="np", **size)
        return to_uint8(out.frames)

    def ours() -> np.ndarray:
        return gen.generate(PROMPT, negative_prompt=NEGATIVE, seed=0, save_output=False, return_frames=True, **size).frames

    # The first DiT forward's inputs and output on both sides (each prompt's real tokens compared).
    captured: dict[str, dict] = {}
    current = {"name": ""}

    def capture_in(module, a, kw):
        if current["name"] not in captured:
            captured[current["name"]] = {k: v.detach().float().cpu() for k, v in kw.items() if torch.is_tensor(v)}

    def capture_out(module, a, out):
        entry = captured[current["name"]]
        entry.setdefault("out", out[0].detach().float().cpu())

    hooks = [transformer.register_forward_pre_hook(capture_in, with_kwargs=True),
             transformer.register_forward_hook(capture_out)]
    current["name"] = "diffusers"
    outputs = {"diffusers": reference()}
    if device == "cuda":
        transformer.set_attention_backend("_native_cudnn")
        outputs["diffusers, cuDNN attention"] = reference()
        transformer.set_attention_backend("native")
    outputs["diffusers again"] = reference()
    current["name"] = "sgld"
    outputs["sgld"] = ours()
    for hook in hooks:
        hook.remove()
    first = first_forward_report(captured["diffusers"], captured["sgld"])
    processors = [block.attn.processor for block in getattr(transformer, "transformer_blocks", [])]
    forced = [p for p in processors if hasattr(p, "mask_free")]
    if forced:
        def force_mask(*_):  # after sgld's own switch (hooks run in order): the dense mask on
            for processor in forced:
                processor.mask_free = False

        hook = transformer.register_forward_pre_hook(force_mask)
        outputs["sgld, dense mask forced"] = ours()
        hook.remove()
    base = outputs["diffusers"]
    report = {name: {"psnr_vs_diffusers_db": psnr(frames, base),
                     "max_abs_diff": int(np.abs(frames.astype(int) - base.astype(int)).max())}
              for name, frames in outputs.items() if name != "diffusers"}
    if forced:
        report["sgld vs sgld, dense mask forced"] = {"psnr_db": psnr(outputs["sgld"], outputs["sgld, dense mask forced"])}
    if device == "cuda":
        report["diffusers cuDNN vs sgld"] = {"psnr_db": psnr(outputs["diffusers, cuDNN attention"], outputs["sgld"])}
    payload = {"command": " ".join(sys.argv), "size": size, "report": report, "first_forward": first}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
