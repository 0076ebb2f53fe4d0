"""The memory plan: placement decisions for full-size models at several budgets, from configs and headers alone.

``random:`` folders hold configs only, so every plan here reads no weights; the refusals name the
frames or size that would fit; ``sgl-diffusion plan`` prints the plan; a loaded model checks each
request against its placement.
"""

from __future__ import annotations

import logging

import pytest
import torch

from sgld.config.schema import DitOffload
from sgld.errors import UserError
from sgld.models.memory_plan import GIB, Choice, MemoryCheck, Planner, place_for_load, plan_report
from tests.conftest import run_cli

FLUX = ("random:black-forest-labs/FLUX.1-dev", dict(height=1024, width=1024))
WAN = ("random:Wan-AI/Wan2.1-T2V-14B-Diffusers", dict(height=480, width=832, num_frames=81))
LTX2 = ("random:Lightricks/LTX-2", dict(height=512, width=768, num_frames=121))
L, M, N = DitOffload.layerwise, DitOffload.model, DitOffload.none


def planner(model: tuple[str, dict], **options) -> Planner:
    from sgld.models.registry import resolve_model_folder
    from sgld.run_config import run_config_from_options

    run = run_config_from_options({"model_path": model[0], **model[1], **options})
    return Planner.of(resolve_model_folder(run.model.path), run)


@pytest.mark.parametrize("model,budget,choice", [
    # FLUX.1-dev (T5-XXL 9.1 GiB, DiT 22.2 GiB, VAE 0.3 GiB in bf16/fp32) at 1024²:
    (FLUX, 12, Choice(text_encoder=True, dit=L, vae=False, tiling=False)),  # the text phase peaks: T5 alone
    (FLUX, 24, Choice(text_encoder=True, dit=M, vae=True, tiling=False)),  # the whole DiT fits beside its activations
    (FLUX, 80, Choice(text_encoder=False, dit=N, vae=False, tiling=False)),
    # Wan2.1-14B (UMT5 10.6 GiB, DiT 26.6 GiB) at 832x480, 81 frames (7.2 GiB of DiT activations, 8.8 GiB of decode):
    (WAN, 12, Choice(text_encoder=True, dit=L, vae=True, tiling=False)),
    (WAN, 24, Choice(text_encoder=False, dit=L, vae=False, tiling=False)),
    (WAN, 80, Choice(text_encoder=False, dit=N, vae=False, tiling=False)),
    # LTX-2 (Gemma 3 12B + connectors 25.4 GiB, DiT 35.2 GiB, VAEs 5.0 GiB) at 768x512, 121 frames (measured on an
    # H100: text encoding 4.7 GiB, decode 10.5 GiB): everything resident would need 76.1 GiB (72.6 measured), over
    # the 78 GiB an H100 has free less the headroom, so Gemma waits on the CPU.
    (LTX2, 78, Choice(text_encoder=True, dit=N, vae=False, tiling=False)),
], ids=["flux-12", "flux-24", "flux-80", "wan14b-12", "wan14b-24", "wan14b-80", "ltx2-78"])
def test_the_plan_for_full_size_models(model, budget, choice, sgld_home):
    plan = planner(model).plan(budget * GIB)
    assert plan.choice == choice
    assert plan.peak <= budget * GIB and plan.given == frozenset()


def test_sizes_come_from_configs_and_headers(sgld_home):
    """random: folders are built on the meta device (released parameter counts); tiny folders read safetensors headers."""
    flux = planner(FLUX).sizes
    assert round(flux.dits[0].total / GIB, 1) == 22.2  # 11.9B parameters in bf16
    assert round(flux.text_encoders / GIB, 1) == 9.1  # T5-XXL encoder and CLIP-L in bf16
    tiny = planner(("tiny-wan-t2v", {}))
    from sgld import DiffGenerator

    gen = DiffGenerator.from_pretrained("tiny-wan-t2v")
    loaded = {name: sum(p.numel() * p.element_size() for p in gen.pipeline.components[name].parameters())
              for name in ("text_encoder", "transformer", "vae")}
    assert tiny.sizes.text_encoders == loaded["text_encoder"] and tiny.sizes.vae == loaded["vae"]
    assert tiny.sizes.dits[0].total == loaded["transformer"]


def test_explicit_settings_stay_and_conflicts_are_not_chosen(sgld_home):
    plan = planner(WAN, vae_tiling=True, text_encoder_cpu_offload=True).plan(24 * GIB)
    assert plan.choice.tiling and plan.choice.text_encoder and plan.given == {"vae.tiling", "offload.text_encoder"}
    # Compiled blocks refuse layer-wise offload (conflicts.py): FLUX's 24 GiB plan moved the DiT whole anyway,
    # at 12 GiB nothing else fits, and the refusal says which placement would have and why it is refused.
    assert planner(FLUX, enable_torch_compile=True).plan(24 * GIB).choice.dit == M
    with pytest.raises(UserError, match=r"a placement that would fit is refused: offload.dit=layerwise cannot be "
                                        r"combined with model.enable_torch_compile"):
        planner(FLUX, enable_torch_compile=True).plan(12 * GIB)


def test_a_request_that_cannot_fit_is_refused_naming_what_would(sgld_home):
    big = planner(("random:Wan-AI/Wan2.1-T2V-14B-Diffusers", dict(height=720, width=1280, num_frames=81)))
    with pytest.raises(UserError, match=r"1280x720, 81 frames needs ≈ 18.\d GiB at its least \(text encoder on CPU, "
                                        r"DiT layer-wise with 1-block prefetch, VAE on CPU, tiled\), more than the 12.0 "
                                        r"GiB budget .*; it would fit at 45 frames at 1280x720 or 960x528 at 81 frames"):
        big.plan(12 * GIB)
    with pytest.raises(UserError, match=r"the weights alone take ≈ 10.6 GiB on the GPU at their least; the text "
                                        r"encoders come to the GPU whole"):
        big.plan(8 * GIB)


def test_a_request_is_not_refused_on_estimated_figures(sgld_home, caplog):
    """MiniMax-H3's DiT and VAE have no measured activation figures: the defaults' estimate (77.3 GiB at its least
    for the released size, over an 80 GB card's usable 76.6) must not refuse a run whose weights fit (72.4 GiB at
    their least: Qwen3-VL comes in whole to encode); it warns once per size instead."""
    h3 = planner(("random:MiniMaxAI/MiniMax-H3", dict(height=768, width=1344, num_frames=124)))
    best, lowest = h3.choose(80 * GIB)
    assert best is None and h3.weights_fit(80 * GIB, lowest)
    with caplog.at_level(logging.WARNING, logger="sgld.models.memory_plan"):
        assert h3.plan(80 * GIB) == lowest
        assert h3.plan(80 * GIB) == lowest
    warnings = [r.getMessage() for r in caplog.records if "by an estimate" in r.getMessage()]
    assert len(warnings) == 1 and "MiniMaxH3Transformer3DModel, AutoencoderKLMiniMaxH3" in warnings[0]
    # Weights that fit no placement are still refused (those sizes are read, not estimated).
    with pytest.raises(UserError, match="the weights alone take"):
        h3.plan(40 * GIB)


def test_the_plan_places_a_gpu_run_and_checks_each_request(sgld_home, caplog):
    """On a GPU the plan decides what the run left unset (a copy; logged in one line); on a CPU nothing is planned."""
    import logging

    from sgld.models.registry import resolve_model_folder
    from sgld.run_config import run_config_from_options

    run = run_config_from_options({"model_path": WAN[0], **WAN[1], "max_gpu_memory": 24})
    folder = resolve_model_folder(run.model.path)
    assert place_for_load(run, folder, torch.device("cpu")) == (run, None)
    with caplog.at_level(logging.INFO, logger="sgld.models.memory_plan"):
        placed, check = place_for_load(run, folder, torch.device("cuda"))  # a given budget: no GPU is asked
    assert (placed.offload.text_encoder, placed.offload.dit, placed.offload.vae, placed.vae.tiling) == (False, L, False, False)
    assert run.offload.dit is None  # the run itself is untouched
    assert "memory plan: text encoder on GPU, DiT layer-wise with 1-block prefetch, VAE on GPU; peak ≈ 20.0 GiB" \
           in caplog.text
    from sgld.request import Request

    check.check(Request.from_sampling(placed.sampling))  # its own size fits
    with pytest.raises(UserError, match=r"1280x720, 81 frames needs .* it would fit at \d+ frames at 1280x720"):
        check.check(Request.from_sampling(placed.sampling, height=720, width=1280))


def test_a_loaded_pipeline_checks_requests_against_its_plan(sgld_home):
    """The check sits in Pipeline.check_request: every door (generate, the API, the server) asks it before a run."""
    from sgld import DiffGenerator
    from sgld.models.memory_plan import HEADROOM_FIXED, HEADROOM_SHARE

    gen = DiffGenerator.from_pretrained("tiny-wan-t2v")
    assert gen.pipeline.memory is None  # a CPU run plans nothing
    tiny = planner(("tiny-wan-t2v", {}))
    peak = tiny.plan(80 * GIB).peak
    budget = int((peak * 1.5 + HEADROOM_FIXED) / (1 - HEADROOM_SHARE))  # room for the default size, not much more
    gen.pipeline.memory = MemoryCheck(tiny, budget)
    gen.check(prompt="a fox", height=64, width=64, num_frames=9)
    with pytest.raises(UserError, match=r"512x512, 81 frames needs"):
        gen.check(prompt="a fox", height=512, width=512, num_frames=81)


def test_a_gguf_dit_is_planned_at_its_file_size(tmp_path, sgld_home):
    from sgld.model_builders.gguf_writer import write_dit_gguf
    from sgld.model_builders.tiny import materialize_tiny
    from sgld.models.gguf import read_header
    import diffusers

    folder = materialize_tiny("tiny-flux")
    path = tmp_path / "flux.gguf"
    write_dit_gguf(diffusers.FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer"), path, "Q8_0",
                   names="diffusers")
    header = read_header(path)
    sized = planner(("tiny-flux", {}), dit_weights=str(path)).sizes.dits[0]
    assert sized.total == header.loaded_bytes(4) < planner(("tiny-flux", {})).sizes.dits[0].total
    assert sized.largest_linear > 0  # the dequantized weight a GGUF layer makes as it runs


def test_plan_command_prints_the_plan_without_loading(sgld_home):
    proc = run_cli("sgld.cli", "plan", "--model-path", FLUX[0], "--height", "1024", "--width", "1024",
                   "--max-gpu-memory", "12")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("random:black-forest-labs/FLUX.1-dev (flux) at 1024x1024; budget 12.0 GiB")
    assert lines[1].startswith("text encoder on CPU, DiT layer-wise with 1-block prefetch, VAE on GPU; peak ≈ 9.")
    assert "weights: text encoders 9.1 GiB, DiT 22.2 GiB" in proc.stdout and "loaded" not in proc.stderr
    from sgld.run_config import run_config_from_options

    report = plan_report(run_config_from_options({"model_path": "tiny-wan-t2v", "max_gpu_memory": 1}))
    assert report.splitlines()[1].startswith("text encoder on GPU, DiT on GPU, VAE on GPU; peak ≈ 0.5 GiB (text)")
    assert "the plan decides: offload.dit, offload.text_encoder, offload.vae, vae.tiling" in report
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU here to read the free memory of: give --max-gpu-memory"):
            plan_report(run_config_from_options({"model_path": "tiny-wan-t2v"}))


def test_the_gguf_memory_benchmark_runs_tiny_on_the_cpu(tmp_path, sgld_home):
    """bench/gguf_memory.py --tiny: the GPU run's path on tiny-flux (its own precision, then Q8_0 and Q4_K GGUFs)."""
    import json
    import subprocess
    import sys

    out = tmp_path / "gguf.json"
    proc = subprocess.run([sys.executable, "bench/gguf_memory.py", "--tiny", "--budgets", "12", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["budgets"]["12.0"]
    assert list(rows) == ["fp32", "Q8_0", "Q4_K"]
    assert all(row["s_per_step"] > 0 and row["predicted_gib"] > 0 and row["plan"] for row in rows.values())
    assert rows["Q8_0"]["psnr_db_vs_fp32"] > rows["Q4_K"]["psnr_db_vs_fp32"] > 30
    assert rows["Q8_0"]["gguf"]["tensors"]["Q8_0"] > 0 and rows["Q4_K"]["gguf"]["names"] == "diffusers"


def test_readme_shows_what_the_plan_command_prints(sgld_home, monkeypatch):
    """README's Small GPUs example: its printed plan is what ``plan_report`` says for that command."""
    import re
    from pathlib import Path

    from sgld.models import hub
    from sgld.run_config import run_config_from_options

    monkeypatch.setattr(hub, "cached_folder", lambda repo_id: None)  # as on a machine that has not downloaded it

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Small GPUs"):readme.index("## Serve (OpenAI")]
    command, printed = re.search(r"```bash\n(sgl-diffusion plan .*?)```\n```\n(.*?)```", section, flags=re.S).groups()
    args = command.replace("\\\n", " ").split()[2:]
    options = {args[i].removeprefix("--").replace("-", "_"): args[i + 1] for i in range(0, len(args), 2)}
    options = {k: float(v) if k == "max_gpu_memory" else int(v) if v.isdigit() else v for k, v in options.items()}
    assert plan_report(run_config_from_options(options)).strip() == printed.strip()


def test_minimax_h3_is_planned_with_the_partitions_its_engine_loads(sgld_home):
    """transformer_ref/ (ref2va's 33 B partition) was counted as an always-resident "other" component, loaded or
    not: it is planned only when a workflow runs on it, and as a DiT (offloaded like one)."""
    from sgld.models.placement import offloaded_components
    from sgld.run_config import run_config_from_options

    h3 = ("random:MiniMaxAI/MiniMax-H3", dict(height=768, width=1344, num_frames=124))
    default = planner(h3).sizes
    assert len(default.dits) == 1 and default.other < GIB
    both = planner(h3, workflows=["t2va", "ref2va"]).sizes
    assert len(both.dits) == 2 and both.dits[0].total == both.dits[1].total and both.other == default.other
    run = run_config_from_options({"model_path": h3[0], "workflows": ["ref2va"], "dit_cpu_offload": True})
    assert "transformer_ref" in offloaded_components(run)
    # A size-less plan is made for the canvas H3 itself picks (16:9), not the 1024² other families fall back to.
    report = plan_report(run_config_from_options({"model_path": h3[0], "max_gpu_memory": 141}))
    assert report.splitlines()[0].startswith("random:MiniMaxAI/MiniMax-H3 (minimax_h3) at 1344x768, 124 frames")
    # Over budget only by estimated figures (none measured for H3's DiT and VAE): the engine runs it with a warning,
    # and the plan command says so instead of "refused".
    tight = plan_report(run_config_from_options({"model_path": h3[0], "max_gpu_memory": 77})).splitlines()[1]
    assert tight.startswith("over budget by an estimate, runs anyway: 1344x768, 124 frames needs ≈ 77.3 GiB")
