"""GGUF DiT weights (``--dit-weights``): files made here with the gguf package's writer, loaded by diffusers.

The tiny DiTs are too narrow for GGUF blocks, so each test model is a tiny model with its DiT widened
to 256 (tests/support/gguf_models.py); its GGUF holds the original checkpoint's tensor names (Wan's,
Z-Image's), or diffusers' for FLUX, whose converter assumes the released 3072 width. sgld's output with
the GGUF DiT equals diffusers' pipeline given the same GGUF (2/255), and differs from the fp32 DiT by the
measured quantization error; a file of another family, a truncated file and a wrong shape are refused
before any weight loads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from sgld.errors import UserError
from tests.conftest import run_cli
from tests.support.gguf_models import widened_model

TOLERANCE = 2 / 255
PROMPT = "a curious raccoon playing piano"
# model -> (sampling, GGUF tensor names, diffusers reference pipeline)
CASES = {
    "tiny-wan-t2v": (dict(num_frames=9, guidance_scale=5.0, negative_prompt="blurry"), "original", "WanPipeline"),
    "tiny-flux": (dict(guidance_scale=3.5), "diffusers", "FluxPipeline"),
    "tiny-z-image": (dict(guidance_scale=0.0), "original", "ZImagePipeline"),
}
# Measured against the fp32 DiT (max |diff| /255, mean |diff| /255, PSNR dB), 64x64, 4 steps, seed 11:
#   Q8_0: wan 1 / 0.086 / 58.8, flux 1 / 0.067 / 59.9, z-image 2 / 0.134 / 56.8
#   Q4_K: wan 20 / 1.77 / 39.8, flux 13 / 1.21 / 43.4, z-image 22 / 2.37 / 37.0
BOUNDS = {"Q8_0": dict(max=4, mean=(0.02, 0.3), psnr=53.0), "Q4_K": dict(max=40, mean=(0.5, 4.0), psnr=34.0)}


@pytest.fixture(scope="module")
def root(tmp_path_factory, sgld_home) -> Path:
    return tmp_path_factory.mktemp("gguf")


def dit_class(folder: Path):
    import diffusers

    return getattr(diffusers, json.loads((folder / "transformer" / "config.json").read_text())["_class_name"])


@pytest.fixture(scope="module")
def gguf_file(root):
    """``gguf_file(model, qtype)``: the widened model's folder and its DiT written as GGUF (made once)."""
    from sgld.model_builders.gguf_writer import write_dit_gguf

    made = {}

    def get(model: str, qtype: str) -> tuple[Path, Path]:
        folder = widened_model(model, root)
        path = root / f"{model}-{qtype}.gguf"
        if path not in made:
            dit = dit_class(folder).from_pretrained(folder, subfolder="transformer")
            made[path] = write_dit_gguf(dit, path, qtype, names=CASES[model][1])
        return folder, path

    return get


def ours(folder: Path, model: str, generator: list | None = None, **options):
    """sgld's output in [0, 1] (the generator appended to ``generator`` when given)."""
    from sgld import DiffGenerator

    settings = dict(seed=11, num_inference_steps=4, height=64, width=64, **CASES[model][0])
    gen = DiffGenerator.from_pretrained(str(folder), precision="fp32", device="cpu", **options)
    if generator is not None:
        generator.append(gen)
    return gen.generate(PROMPT, return_frames=True, save_output=False, **settings).frames.astype(np.float64) / 255


def reference(folder: Path, model: str, path: Path) -> np.ndarray:
    """diffusers' pipeline over the same folder with the same GGUF DiT."""
    import diffusers
    from diffusers import GGUFQuantizationConfig

    dit = dit_class(folder).from_single_file(str(path), config=str(folder), subfolder="transformer", dtype=torch.float32,
                                             quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32))
    pipe = getattr(diffusers, CASES[model][2]).from_pretrained(folder, transformer=dit)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(11), output_type="np", num_inference_steps=4,
               height=64, width=64, **CASES[model][0])
    return np.asarray(out.frames[0] if hasattr(out, "frames") else out.images[0], dtype=np.float64)


# --- the writer ---

def test_q8_0_is_the_gguf_package_s_own_bit_for_bit():
    import gguf

    from sgld.model_builders.gguf_writer import quantize_q8_0

    x = torch.randn(48, 256, generator=torch.Generator().manual_seed(0)) * 3
    x[0, :32] = 0  # an all-zero block: scale 0
    ours_q = quantize_q8_0(x).numpy()
    assert ours_q.shape == (48, 256 // 32 * 34)
    assert np.array_equal(ours_q, gguf.quants.quantize(x.numpy(), gguf.GGMLQuantizationType.Q8_0))


def test_q4_k_decodes_with_the_gguf_package_and_diffusers():
    """The package has no Q4_K quantizer; ours writes its layout, which both dequantizers read back."""
    import gguf
    from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

    from sgld.model_builders.gguf_writer import quantize_q4_k

    x = torch.randn(32, 512, generator=torch.Generator().manual_seed(1))
    q = quantize_q4_k(x)
    assert q.shape == (32, 512 // 256 * 144)
    theirs = gguf.quants.dequantize(q.numpy(), gguf.GGMLQuantizationType.Q4_K)
    rms = float(np.sqrt(np.mean((theirs - x.numpy()) ** 2)))
    assert rms < 0.09, rms  # 16 levels over each 32-value sub-block's range: ~0.08 for unit Gaussians
    decoded = dequantize_gguf_tensor(GGUFParameter(q, quant_type=gguf.GGMLQuantizationType.Q4_K)).float().numpy()
    assert np.abs(decoded - theirs).max() < 0.01  # diffusers decodes in fp16


@pytest.mark.parametrize("model", ["tiny-wan-t2v", "tiny-wan21-i2v", "tiny-z-image", "tiny-qwen-image",
                                   "random:black-forest-labs/FLUX.1-dev", "random:Wan-AI/Wan2.1-T2V-14B-Diffusers",
                                   "random:Tongyi-MAI/Z-Image-Turbo"])
def test_original_names_convert_back_through_diffusers(model, sgld_home):
    """The inverse names, run through diffusers' own converter on meta tensors, give back every name and shape."""
    from sgld.model_builders.gguf_writer import check_round_trip
    from sgld.models.gguf import expected_shapes
    from sgld.models.registry import resolve_model_folder

    folder = resolve_model_folder(model)
    cls = dit_class(folder)
    shapes, config = expected_shapes(cls, folder, "transformer")
    check_round_trip(cls.__name__, {k: torch.empty(v, device="meta") for k, v in shapes.items()}, config)


def test_flux_bfl_names_need_the_released_width(sgld_home):
    """diffusers' FLUX converter splits single blocks at 3072 (FLUX.1's width): a tiny FLUX in BFL names cannot load."""
    from sgld.model_builders.gguf_writer import check_round_trip
    from sgld.models.gguf import expected_shapes
    from sgld.models.registry import resolve_model_folder

    folder = resolve_model_folder("tiny-flux")
    shapes, config = expected_shapes(dit_class(folder), folder, "transformer")
    with pytest.raises(RuntimeError, match="3072"):
        check_round_trip("FluxTransformer2DModel", {k: torch.empty(v, device="meta") for k, v in shapes.items()}, config)


def test_every_family_says_whether_its_dit_loads_gguf(sgld_home):
    """FamilySpec.gguf_dit is diffusers' single-file table for the family's DiT class."""
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    from sgld.families import FAMILIES
    from sgld.models.registry import read_model_index, resolve_model_folder
    from sgld.variants import VARIANTS

    for name, spec in FAMILIES.items():
        variant = next(v for v in VARIANTS if v.family == name and (v.tiny or v.full_size))
        folder = resolve_model_folder(variant.name if variant.tiny else f"random:{variant.name}")
        dit = read_model_index(folder)["transformer"][1]
        assert spec.gguf_dit == (dit in SINGLE_FILE_LOADABLE_CLASSES), (name, dit)


# --- sgld against diffusers, and against the fp32 DiT ---

@pytest.mark.parametrize("model,qtype", [("tiny-wan-t2v", "Q8_0"), ("tiny-wan-t2v", "Q4_K"), ("tiny-flux", "Q8_0"),
                                         ("tiny-flux", "Q4_K"), ("tiny-z-image", "Q8_0")])
def test_gguf_dit_matches_diffusers_and_stays_near_fp32(model, qtype, gguf_file):
    from sgld.models.gguf import quantized_layers

    folder, path = gguf_file(model, qtype)
    loaded: list = []
    with_gguf = ours(folder, model, loaded, dit_weights=str(path))
    assert quantized_layers(loaded[0].pipeline.components["transformer"]) > 10  # the linear layers stay quantized
    assert np.abs(with_gguf - reference(folder, model, path).reshape(with_gguf.shape)).max() <= TOLERANCE
    full = ours(folder, model)
    diff = np.abs(with_gguf - full) * 255
    bound = BOUNDS[qtype]
    psnr = 10 * np.log10(1 / np.mean((with_gguf - full) ** 2))
    assert diff.max() <= bound["max"] and bound["mean"][0] <= diff.mean() <= bound["mean"][1] and psnr >= bound["psnr"], \
        (diff.max(), diff.mean(), psnr)


# --- refused before any weight loads ---

def no_weights_load(monkeypatch):
    """Make every weight load fail loudly: a refusal must come first."""
    import diffusers
    import transformers

    def loaded(*args, **kwargs):
        raise AssertionError("weights loaded before the refusal")

    monkeypatch.setattr(diffusers.ModelMixin, "from_pretrained", classmethod(loaded))
    monkeypatch.setattr(diffusers.ModelMixin, "from_single_file", classmethod(loaded), raising=False)
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(loaded))


def cli_refuses(folder: Path, weights: Path, message: str, *extra: str) -> None:
    proc = run_cli("sgld.cli", "generate", "--model-path", str(folder), "--dit-weights", str(weights), "--prompt", "x",
                   "--height", "64", "--width", "64", "--num-frames", "9", "--precision", "fp32", "--device", "cpu",
                   "--no-save-output", *extra)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(message, errors[0]), errors[0]
    assert "quantized linear layers" not in proc.stderr  # nothing was loaded


def test_a_gguf_of_another_family_is_refused(gguf_file, monkeypatch):
    wan, _ = gguf_file("tiny-wan-t2v", "Q8_0")
    _, z_image = gguf_file("tiny-z-image", "Q8_0")
    cli_refuses(wan, z_image, r"is not a wan_t2v DiT \(WanTransformer3DModel\) \(the file says "
                              r"general.architecture='lumina2'\)")
    from sgld import DiffGenerator

    no_weights_load(monkeypatch)
    with pytest.raises(UserError, match="is not a wan_t2v DiT"):
        DiffGenerator.from_pretrained(str(wan), dit_weights=str(z_image), precision="fp32", device="cpu")


def test_a_truncated_gguf_is_refused(gguf_file, tmp_path, monkeypatch):
    folder, path = gguf_file("tiny-flux", "Q8_0")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    from sgld import DiffGenerator

    no_weights_load(monkeypatch)
    with pytest.raises(UserError, match=r"cut.gguf' \(\d+ bytes\) is truncated or corrupt"):
        DiffGenerator.from_pretrained(str(folder), dit_weights=str(cut), precision="fp32", device="cpu")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all" * 8)
    with pytest.raises(UserError, match="not a GGUF file"):
        DiffGenerator.from_pretrained(str(folder), dit_weights=str(junk), precision="fp32", device="cpu")


def test_a_wrong_tensor_shape_is_refused(gguf_file, root, sgld_home):
    """The narrow tiny Wan's DiT (24 wide) as GGUF, given to the widened folder (256): every shape differs."""
    from sgld.model_builders.gguf_writer import write_dit_gguf
    from sgld.model_builders.tiny import materialize_tiny

    folder, _ = gguf_file("tiny-wan-t2v", "Q8_0")
    narrow = materialize_tiny("tiny-wan-t2v")
    path = root / "narrow-wan.gguf"
    write_dit_gguf(dit_class(narrow).from_pretrained(narrow, subfolder="transformer"), path, "Q8_0")
    cli_refuses(folder, path, r"does not fit the model folder's wan_t2v DiT: blocks\.0\.attn1\.norm_k\.weight is "
                              r"\(24,\) in the file, \(256,\) in transformer/config.json's DiT")


def test_families_and_settings_gguf_cannot_run_are_refused(gguf_file, sgld_home):
    from sgld import DiffGenerator
    from sgld.run_config import run_config_from_options

    _, path = gguf_file("tiny-wan-t2v", "Q8_0")
    with pytest.raises(UserError, match="hunyuan15_t2v models cannot load GGUF weights"):
        DiffGenerator.from_pretrained("tiny-hunyuan15", dit_weights=str(path))
    with pytest.raises(UserError, match="this model has two DiTs"):
        DiffGenerator.from_pretrained("tiny-wan22-t2v", dit_weights=str(path))
    with pytest.raises(UserError, match=r"reads replacement DiT weights from GGUF files \(\.gguf\) only"):
        DiffGenerator.from_pretrained("tiny-wan-t2v", dit_weights=str(path.with_suffix(".safetensors")))
    base = {"model_path": "tiny-wan-t2v", "dit_weights": str(path)}
    for extra, message in (({"quantization": "fp8"}, "model.quantization=fp8 cannot be combined with a GGUF DiT"),
                           ({"lora_path": str(path), "lora_merge_mode": "merge"},
                            "model.lora_merge_mode=merge cannot be combined with a GGUF DiT.*dequantize"),
                           ({"cuda_graphs": True}, "model.cuda_graphs cannot be combined with a GGUF DiT")):
        with pytest.raises(UserError, match=message):
            run_config_from_options({**base, **extra})


def test_a_hub_reference_downloads_that_file_only(gguf_file, monkeypatch):
    """``org/repo/dir/file.gguf``: the cache first, else that one file from the Hub; never with downloads off."""
    import shutil

    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from sgld.models.gguf import dit_weights_path

    _, path = gguf_file("tiny-flux", "Q8_0")
    cache = path.parent / "hub-cache"
    asked = []

    def hf_hub_download(repo_id, filename, local_files_only=False, **kwargs):
        target = cache / repo_id / filename
        if local_files_only:
            if not target.exists():
                raise LocalEntryNotFoundError("not in the cache")
            return str(target)
        asked.append((repo_id, filename))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(UserError, match=r"'acme/flux-gguf/q8/flux-Q8_0.gguf' is not downloaded: .*--no-download"):
        dit_weights_path("acme/flux-gguf/q8/flux-Q8_0.gguf", download=False)
    got = dit_weights_path("acme/flux-gguf/q8/flux-Q8_0.gguf")
    assert asked == [("acme/flux-gguf", "q8/flux-Q8_0.gguf")] and got.read_bytes() == path.read_bytes()
    assert dit_weights_path("acme/flux-gguf/q8/flux-Q8_0.gguf") == got and len(asked) == 1  # from the cache now
    with pytest.raises(UserError, match="does not exist"):
        dit_weights_path("./missing/file.gguf")


# --- with the other settings ---

def test_layerwise_offload_batching_and_dynamic_lora_on_a_gguf_dit(gguf_file, root):
    """Layer-wise offload runs the GGUF blocks through the group-offload hooks unchanged; a batch of two equals two
    runs; a LoRA runs dynamic on the quantized layers (auto merge mode), moving the output, scale 0 not at all."""
    from sgld import DiffGenerator
    from tests.support.lora import make_lora

    folder, path = gguf_file("tiny-flux", "Q8_0")
    resident = ours(folder, "tiny-flux", dit_weights=str(path))
    assert np.array_equal(ours(folder, "tiny-flux", dit_weights=str(path), dit_layerwise_offload=True), resident)

    gen = DiffGenerator.from_pretrained(str(folder), precision="fp32", device="cpu", dit_weights=str(path))
    settings = dict(num_inference_steps=4, height=64, width=64, guidance_scale=3.5, return_frames=True, save_output=False)
    from sgld.api import BatchItem

    batch = gen.generate_batch([BatchItem({"prompt": PROMPT, "seed": 11, **settings}),
                                BatchItem({"prompt": "a red fox", "seed": 5, **settings})])
    alone = gen.generate("a red fox", seed=5, **settings).frames
    assert np.abs(batch[0].frames.astype(int) - (resident * 255).round()).max() <= 2
    assert np.abs(batch[1].frames.astype(int) - alone.astype(int)).max() <= 2

    lora = make_lora(folder, root / "lora", seed=3, b_scale=20.0)
    with_lora = DiffGenerator.from_pretrained(str(folder), precision="fp32", device="cpu", dit_weights=str(path),
                                              lora_path=str(lora))
    assert not with_lora.pipeline.loras.merge and not with_lora.pipeline.loras.fused  # auto: dynamic on GGUF
    from peft.tuners.lora import LoraLayer

    from diffusers.quantizers.gguf.utils import GGUFLinear

    wrapped = [m for m in with_lora.pipeline.components["transformer"].modules() if isinstance(m, LoraLayer)]
    assert wrapped and all(isinstance(m.get_base_layer(), GGUFLinear) for m in wrapped)
    moved = with_lora.generate(PROMPT, seed=11, **settings).frames
    assert np.abs(moved.astype(int) - (resident * 255).round()).max() >= 20
    off = with_lora.generate(PROMPT, seed=11, loras=[], **settings).frames
    assert np.abs(off.astype(int) - (resident * 255).round()).max() <= 1


def test_ulysses_over_two_ranks_with_a_gguf_dit(gguf_file):
    """2 gloo ranks, Ulysses degree 2: the quantized DiT's activations split as the plain one's do."""
    from sgld.run_config import run_config_from_options
    from sgld.runner import run_generation

    folder, path = gguf_file("tiny-wan-t2v", "Q8_0")
    options = dict(model_path=str(folder), dit_weights=str(path), prompt=PROMPT, seed=3, num_inference_steps=2,
                   height=64, width=64, num_frames=9, precision="fp32", text_encoder_precisions=["fp32"],
                   device="cpu", save_output=False, return_frames=True)
    single = run_generation(run_config_from_options(options)).frames.astype(int)
    split = run_generation(run_config_from_options({**options, "num_gpus": 2, "ulysses_degree": 2})).frames.astype(int)
    assert np.abs(split - single).max() <= 2
