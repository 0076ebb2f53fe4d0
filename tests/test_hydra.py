"""``python -m sgld.generate``: the Hydra door, multirun sweeps and experiment files."""

from __future__ import annotations

from tests.conftest import read_mp4, run_cli


def test_single_run_writes_the_output_and_the_config(tmp_path, tiny_wan_folder):
    proc = run_cli("sgld.generate", "model=tiny_wan", "sampling.prompt=a red fox", "sampling.seed=7", f"output.path={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    meta, frames = read_mp4(tmp_path / "a_red_fox_seed7.mp4")
    assert len(frames) == 9 and meta["size"] == (64, 64)
    configs = list(tmp_path.glob("runs/*/*/.hydra/config.yaml"))
    assert len(configs) == 1 and "a red fox" in configs[0].read_text()


def test_multirun_writes_one_output_per_job(tmp_path, tiny_wan_folder):
    proc = run_cli(
        "sgld.generate", "-m", "sampling.seed=1,2", "sampling.prompt=a cat", "sampling.num_inference_steps=2", f"output.path={tmp_path}"
    )
    assert proc.returncode == 0, proc.stderr
    outputs = sorted(tmp_path.glob("multirun/*/*/*/*.mp4"))
    assert [p.name for p in outputs] == ["a_cat_seed1.mp4", "a_cat_seed2.mp4"]
    assert {p.parent.name for p in outputs} == {"0", "1"}
    assert not list(tmp_path.glob("*.mp4"))


def test_experiment_file(tmp_path, tiny_wan_folder):
    proc = run_cli("sgld.generate", "+experiment=tiny_demo", f"output.path={tmp_path}", "sampling.num_inference_steps=2")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "tiny_demo.mp4").is_file()


def test_bad_request_exits_2(tmp_path, tiny_wan_folder):
    proc = run_cli("sgld.generate", "sampling.prompt=x", "sampling.num_frames=10", f"output.path={tmp_path}")
    assert proc.returncode == 2
    assert "num_frames=10 must be 4k+1" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_missing_prompt_names_the_hydra_key(tmp_path, tiny_wan_folder):
    proc = run_cli("sgld.generate", "model=tiny_wan", f"output.path={tmp_path}")
    assert proc.returncode == 2
    text = proc.stderr + proc.stdout
    assert "sampling.prompt=" in text and "--prompt" not in text and "Traceback" not in text
