"""SGLang's command line as sgld reads it: on/off flags with values, several values after one flag, SGLang-only flags
mapped, logged or refused with the reason, per-component flags, --output-file-path, --log-level (in-process parses;
one subprocess for the exit status). tests/test_sglang_suite.py walks every flag of SGLang's own parser."""

from __future__ import annotations

import logging

import pytest

from sgld.errors import UserError
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def parser():
    from sgld.cli import build_parser

    return build_parser()


def parse(parser, *argv: str, env: dict | None = None):
    from sgld.cli import parse as parse_argv

    return parse_argv(parser, list(argv))


def test_on_off_flags_take_true_or_false_as_sglang_writes_them(parser):
    args = parse(parser, "serve", "--model-path", "m", "--dit-layerwise-offload", "false", "--enable-torch-compile",
                 "TRUE", "--vae-tiling", "--no-vae-sp", "--enable-cfg-parallel=false")
    assert (args.dit_layerwise_offload, args.enable_torch_compile, args.vae_tiling, args.vae_sp,
            args.enable_cfg_parallel) == (False, True, True, False, False)
    assert parse(parser, "serve", "--model-path", "m").enable_torch_compile is None  # unset stays unset


def test_an_on_off_flag_given_another_word_is_an_error_naming_it(parser, capsys):
    with pytest.raises(SystemExit) as exited:
        parse(parser, "serve", "--model-path", "m", "--vae-tiling", "maybe")
    assert exited.value.code == 2 and "--vae-tiling takes true or false, got 'maybe'" in capsys.readouterr().err


def test_several_values_after_one_flag(parser):
    args = parse(parser, "generate", "--model-path", "m", "--prompt", "a fox", "a cat", "--image-path", "a.png",
                 "b.png", "--prompt", "a dog")
    assert args.prompt == ["a fox", "a cat", "a dog"] and args.image_path == ["a.png", "b.png"]


def test_several_seeds_are_refused_with_the_reason(parser):
    assert parse(parser, "generate", "--model-path", "m", "--seed", "7").seed == 7
    with pytest.raises(UserError, match="sgld takes one --seed"):
        parse(parser, "generate", "--model-path", "m", "--seed", "1", "2")


def test_output_file_path_wins_over_output_file_name(parser, tmp_path):
    from sgld.cli import collect_options
    from sgld.config.options import options_to_values

    args = parse(parser, "generate", "--model-path", "m", f"--output-path={tmp_path}", "--output-file-name",
                 "ignored", "--output-file-path", str(tmp_path / "alias.png"))
    values = options_to_values(collect_options(args))
    assert values["output.file_name"] == "alias.png" and values["output.path"] == str(tmp_path)
    with pytest.raises(UserError, match="disagree about output.path"):  # a different directory still contradicts
        options_to_values(collect_options(parse(parser, "generate", "--model-path", "m", "--output-path",
                                                str(tmp_path / "other"), "--output-file-path", str(tmp_path / "x.png"))))


def test_log_level_in_any_case_sets_sglds_loggers_only(parser):
    from sgld.logs import configure_logging

    assert parse(parser, "serve", "--model-path", "m", "--log-level=DEBUG").log_level == "debug"
    configure_logging("debug")
    try:
        assert logging.getLogger("sgld.server").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("urllib3").isEnabledFor(logging.INFO)  # other libraries stay at warning
    finally:
        configure_logging("info")


def test_sglang_spellings_underscores_positional_model_and_model_type(parser):
    args = parse(parser, "serve", "tiny-wan-t2v", "--num_gpus", "2", "--model-type", "diffusion")
    assert (args.model_path, args.num_gpus) == ("tiny-wan-t2v", 2)
    with pytest.raises(UserError, match="sgld does not support --model-type llm"):
        parse(parser, "serve", "--model-path", "m", "--model-type", "llm")


def test_mapped_flags_set_sglds_options(parser):
    args = parse(parser, "serve", "--model-path", "m", "--dp", "2", "--sp-degree", "2", "--dit-precision", "fp16",
                 "--batching-delay-ms", "12.6", "--component-residency", "text_encoder=layerwise-offload",
                 "vae=component-offload", "--warmup-resolutions", "64x64", "--warmup-num-frames", "9",
                 "--uvicorn-access-log-exclude-prefixes", "/health", "/metrics", "--model-id", "my-model")
    assert args.sglang_options == {
        "dp_size": 2, "sp_size": 2, "precision": "fp16", "batch_wait_ms": 13, "text_encoder_cpu_offload": True,
        "vae_cpu_offload": True, "warmup_sizes": ["64x64x9"], "access_log_exclude_prefixes": ["/health", "/metrics"],
        "served_model_name": "my-model"}
    # sgld's own option wins over the SGLang flag that maps to it
    assert "dp_size" not in parse(parser, "serve", "--model-path", "m", "--dp-size", "3", "--dp", "2").sglang_options
    assert parse(parser, "serve", "--model-path", "m", "--served-model-name", "a", "--model-id", "b").sglang_options == {}


def test_warmup_sampling_params_take_a_size_and_log_the_rest(parser, caplog):
    with caplog.at_level(logging.INFO, logger="sgld"):
        args = parse(parser, "serve", "--model-path", "m", "--warmup-sampling-params",
                     '{"quality": "exact", "width": 64, "height": 48}')
    assert args.sglang_options == {"warmup_sizes": ["64x48"]}
    assert "--warmup-sampling-params quality: no effect in sgld" in caplog.text


def test_flags_without_effect_log_one_line_each(parser, caplog):
    with caplog.at_level(logging.INFO, logger="sgld"):
        args = parse(parser, "serve", "--model-path", "m", "--strict-ports", "--use-fsdp-inference", "true",
                     "--trust-remote-code")
    assert args.sglang_options == {}
    lines = [r.getMessage() for r in caplog.records]
    assert "--strict-ports: no effect in sgld (it never moves to another port: a busy port is an error)" in lines
    assert sum("--use-fsdp-inference" in line for line in lines) == 1


@pytest.mark.parametrize("argv, message", [
    (["--backend", "diffusers"], "sgld does not support --backend diffusers (other backends: it runs its own pipelines)"),
    (["--nnodes", "2"], "sgld does not support --nnodes 2 (it runs on one host)"),
    (["--enable-svdquant"], "sgld does not support --enable-svdquant (Nunchaku SVDQuant)"),
    (["--disagg-role", "encoder"], "sgld does not support --disagg-role encoder (no disaggregated serving"),
    (["--vae-path=fal/FLUX.2-Tiny-AutoEncoder"], "sgld does not support per-component overrides (--vae-path)"),
    (["--transformer-path", "MickJ/Z-Image-Turbo-fp8"], "sgld does not support per-component overrides (--transformer-path)"),
])
def test_flags_sgld_lacks_are_refused_with_the_reason(parser, argv, message):
    with pytest.raises(UserError) as refused:
        parse(parser, "serve", "--model-path", "m", *argv)
    assert message in str(refused.value)


def test_sglang_defaults_of_refused_flags_change_nothing(parser):
    args = parse(parser, "serve", "--model-path", "m", "--backend", "auto", "--nnodes", "1", "--enable-svdquant",
                 "false", "--disagg-role", "monolithic", "--kv-cache-quant", "off")
    assert args.sglang_options == {}


def test_per_component_dit_and_vae_settings_map(parser):
    args = parse(parser, "serve", "--model-path", "m", "--component-precisions.vae", "fp16",
                 "--component-attention-backends.transformer", "sage_attn")
    assert args.sglang_options == {"vae_precision": "fp16", "attention_backend": "sage"}


def test_a_typo_is_still_argparses_error(parser, capsys):
    with pytest.raises(SystemExit):
        parse(parser, "serve", "--model-path", "m", "--num-gpu", "2x")
    with pytest.raises(SystemExit):
        parse(parser, "serve", "--model-path", "m", "--strickt-ports")
    assert "unrecognized arguments: --strickt-ports" in capsys.readouterr().err


def test_serve_options_on_generate_have_no_effect(parser, caplog):
    with caplog.at_level(logging.INFO, logger="sgld"):
        args = parse(parser, "generate", "--model-path", "m", "--dp", "2", "--port", "30000")
    assert args.sglang_options == {}
    assert "--dp-size: no effect in generate (it is an option of serve)" in caplog.text
    assert "--port: no effect in sgld (only serve runs a server)" in caplog.text


def test_lora_weight_name_picks_the_file_of_each_folder(parser, tmp_path):
    from sgld.cli import collect_options
    from sgld.config.options import options_to_values

    args = parse(parser, "serve", "--model-path", "m", "--lora-path", str(tmp_path), "org/repo",
                 str(tmp_path / "one.safetensors"), "--lora-weight-name", "low.safetensors")
    paths = [lora["path"] for lora in options_to_values(collect_options(args))["model.loras"]]
    assert paths == [f"{tmp_path}/low.safetensors", "org/repo/low.safetensors", str(tmp_path / "one.safetensors")]


def test_a_refused_flag_exits_2_with_one_line_and_no_traceback(tmp_path):
    done = run_cli("sgld.cli", "serve", "--model-path", "tiny-wan-t2v", "--log-level", "warning", "--backend",
                   "diffusers", cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert "error: sgld does not support --backend diffusers" in done.stderr and "Traceback" not in done.stderr


def test_the_sglang_table_leaves_sglds_own_options_alone():
    """One flag, one meaning: a row of the SGLang table never names a flag of sgld's own options, except serve's
    options that ``generate`` takes as no-ops (SGLang's generate takes every serve flag)."""
    from sgld.cli import takes
    from sgld.config.options import OPTIONS
    from sgld.config.sglang_flags import TABLE

    own = {}
    for option in OPTIONS:
        for flag in (option.flag, *("--" + a.replace("_", "-") for a in option.aliases)):
            own[flag] = option
    clashes = [name for row in TABLE for name in row.names
               if name in own and not (row.generate_only and not takes("generate", own[name]))
               and not (name == "--dp-size" and not takes("generate", own[name]))]
    assert not clashes, clashes


def test_perf_dump_path_writes_sglangs_benchmark_report(tmp_path):
    import json

    report = tmp_path / "perf" / "run.json"
    done = run_cli("sgld.cli", "generate", "--model-path", "tiny-z-image", "--prompt", "a red cube", "--width=64",
                   "--height=64", f"--output-path={tmp_path}", "--perf-dump-path", str(report), "--log-level=warning",
                   cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    body = json.loads(report.read_text())
    assert body["tag"] == "benchmark_dump" and body["total_duration_ms"] > 0
    names = [step["name"] for step in body["steps"]]
    assert "denoise" in names and "load" not in names and all(step["duration_ms"] > 0 for step in body["steps"])
    assert set(body) == {"timestamp", "request_id", "commit_hash", "tag", "total_duration_ms", "steps",
                         "denoise_steps_ms", "memory_checkpoints", "meta"}
