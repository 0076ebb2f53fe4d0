"""Prompt sets: one model load for many outputs, a manifest line per output, failures recorded, resume."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, read_mp4, run_cli

SET = [
    {"prompt": "a red fox", "seed": 1},
    {"prompt": "a blue cat", "seed": 2, "num_inference_steps": 2},
    {"prompt": "a dog", "height": 60},  # not a multiple of 16: recorded as failed, the others go on
    {"prompt": "a bird", "negative_prompt": "blurry", "seed": 4},
    {"prompt": "a horse", "num_frames": 5, "seed": 5},
]


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_jsonl_set_with_overrides_and_a_failing_line(tmp_path, tiny_wan_folder):
    prompts = tmp_path / "set.jsonl"
    prompts.write_text("\n".join(json.dumps(item) for item in SET) + "\n")
    out = tmp_path / "out"
    proc = run_cli("sgld.cli", "generate", "--model-path", "tiny-wan-t2v", "--prompt-file", str(prompts),
                   "--output-path", str(out))
    assert proc.returncode == 1, proc.stderr  # one item failed
    assert "4 of 5 outputs, 1 failed" in proc.stdout
    records = {r["index"]: r for r in manifest(out)}
    assert records[2]["status"] == "failed" and "height=60 must be a multiple of 16" in records[2]["error"]
    assert records[1]["settings"]["num_inference_steps"] == 2 and records[1]["seed"] == 2
    assert records[3]["settings"]["negative_prompt"] == "blurry"
    assert records[0]["settings"]["num_inference_steps"] == 4  # the model default where the line says nothing
    _, frames = read_mp4(records[4]["output"])
    assert len(frames) == 5
    assert set(records[0]["timings"]) >= {"encode_prompt", "denoise", "decode"}
    assert "prompts_file:" in (out / "config.yaml").read_text()  # the composed run config beside the outputs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total"] == 5 and summary["done"] == 4 and summary["failed"] == 1 and summary["s_per_output"] > 0


def test_an_interrupted_run_resumes_without_redoing_outputs(tmp_path, tiny_wan_folder):
    prompts = tmp_path / "set.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(5)))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "sgld.cli", "generate", "--model-path", "tiny-wan-t2v", "--prompt-file",
            str(prompts), "--num-inference-steps", "12", "--output-path", str(out)]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "manifest.jsonl").is_file() and len(manifest(out)) >= 2):
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    first = {r["index"]: r for r in manifest(out)}
    assert 2 <= len(first) < 5, "the run was not interrupted in the middle"
    stamps = {i: (out / r["output"]).stat().st_mtime_ns for i, r in first.items()}
    again = run_cli("sgld.cli", "generate", "--model-path", "tiny-wan-t2v", "--prompt-file", str(prompts),
                    "--num-inference-steps", "12", "--output-path", str(out))
    assert again.returncode == 0, again.stderr
    records = manifest(out)
    assert sorted(r["index"] for r in records) == [0, 1, 2, 3, 4]  # each output made exactly once
    assert all((out / r["output"]).stat().st_mtime_ns == stamps[i] for i, r in first.items())
    assert len(list(out.glob("*.mp4"))) == 5


def test_hydra_door_and_bad_files(tmp_path, tiny_wan_folder):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n\na dog\n")
    proc = run_cli("sgld.generate", "model=tiny_wan", f"sampling.prompts_file={prompts}",
                   "sampling.num_inference_steps=2", f"output.path={tmp_path / 'hydra'}")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "hydra").glob("*.mp4")) == ["0000_a_cat.mp4", "0001_a_dog.mp4"]

    bad = tmp_path / "bad.jsonl"
    for content, message in (('{"prompt": "x"}\n{oops\n', "line 2 is not valid JSON"),
                             ('{"prompt": "x", "num_gpus": 2}\n', "'num_gpus' is not a sampling option"),
                             ('{"seed": 3}\n', 'line 1 needs a "prompt" string')):
        bad.write_text(content)
        proc = run_cli("sgld.cli", "generate", "--model-path", "tiny-wan-t2v", "--prompt-file", str(bad), timeout=60)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = run_cli("sgld.cli", "generate", "--model-path", "tiny-wan-t2v", "--prompt-file", "/no/such.txt", timeout=60)
    assert proc.returncode == 2 and "prompts file '/no/such.txt' does not exist" in proc.stderr


def test_sweep_over_a_prompt_set_and_the_report(tmp_path, tiny_wan_folder):
    """A 2-job sweep under submitit's local launcher (jobs as local processes, as on a SLURM node)."""
    import hydra_plugins.hydra_submitit_launcher  # noqa: F401 - a test dependency: fails, never skips, without it
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\n")
    proc = run_cli("sgld.generate", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                   "sampling.seed=1,2", "sampling.num_inference_steps=1",
                   f"sampling.prompts_file={prompts}", f"output.path={tmp_path / 'sweep'}", timeout=600)
    assert proc.returncode == 0, proc.stderr
    jobs = sorted((tmp_path / "sweep").glob("multirun/*/*/*/summary.json"))
    assert len(jobs) == 2
    report = run_cli("sgld.report", str(tmp_path / "sweep"), "--csv", str(tmp_path / "r.csv"),
                     "--contact-sheet", str(tmp_path / "sheet.png"))
    assert report.returncode == 0, report.stderr
    rows = [line for line in report.stdout.splitlines() if line.startswith("| multirun")]
    assert len(rows) == 2
    assert any("sampling.seed=2" in row for row in rows) and any("sampling.seed=1" in row for row in rows)
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 3
    assert "contact sheet: 4 outputs" in report.stdout


def test_several_outputs_per_prompt(tmp_path, tiny_wan_folder):
    proc = run_cli("sgld.cli", "generate", "--model-path", "tiny-wan-t2v", "--prompt", "a cat", "--seed", "10",
                   "--num-outputs-per-prompt", "2", "--num-inference-steps", "2", "--output-path", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    records = manifest(tmp_path)
    assert [(r["seed"], r["output"].rsplit("/", 1)[1]) for r in records] == [
        (10, "0000_a_cat_0.mp4"), (11, "0000_a_cat_1.mp4")]


def test_several_prompt_flags_make_a_set(tmp_path, tiny_wan_folder):
    proc = run_cli("sgld.cli", "generate", "--model-path", "tiny-wan-t2v", "--prompt", "a cat", "--prompt", "a dog",
                   "--num-inference-steps", "1", "--output-path", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["0000_a_cat.mp4", "0001_a_dog.mp4"]


def test_batch_size_gives_the_same_files_and_manifest(tmp_path, tiny_wan_folder):
    """--batch-size 3 runs outputs of one size and step count together; files and manifest equal --batch-size 1's."""
    import numpy as np

    prompts = tmp_path / "set.jsonl"
    prompts.write_text("\n".join(json.dumps(item) for item in SET) + "\n")
    runs = {size: tmp_path / f"out{size}" for size in (1, 3)}
    # The two runs side by side (each is mostly a single-threaded import): they share nothing but the model folder.
    procs = {size: subprocess.Popen(
        [sys.executable, "-m", "sgld.cli", "generate", "--model-path", "tiny-wan-t2v", "--prompt-file", str(prompts),
         "--num-outputs-per-prompt", "2", "--batch-size", str(size), "--output-path", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for size, out in runs.items()}
    for proc in procs.values():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 1, stderr  # the line with height=60 fails in both
    one, three = ({r["index"]: r for r in manifest(runs[size])} for size in (1, 3))
    assert one.keys() == three.keys() and len(one) == 10
    timing = {"timings", "seconds", "batch", "peak_memory_bytes", "output"}
    for index, record in one.items():
        for r in (record, three[index]):
            r.get("settings", {}).pop("batch_size", None)  # the one setting that differs
        assert {k: v for k, v in record.items() if k not in timing} == \
               {k: v for k, v in three[index].items() if k not in timing}
        if record["status"] != "ok":
            continue
        assert three[index]["output"].replace("out3", "out1") == record["output"]
        _, solo = read_mp4(record["output"])
        _, batched = read_mp4(three[index]["output"])
        assert len(solo) == len(batched)
        # The raw frames agree within 1/255 (tests/test_batching.py); H.264 turns such a difference into a
        # slightly different encoding, so the decoded files are compared on average.
        assert np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(solo, batched)]) < 1.0
    # Outputs of one size and step count went through one batch (the failing line never entered one).
    assert max(r.get("batch", 1) for r in three.values()) == 3


def _generate(*args):
    """sgl-diffusion generate in this process: (exit code, stderr + log text)."""
    import io
    import logging

    from sgld.cli import main

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("sgld")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    err = io.StringIO()
    try:
        from contextlib import redirect_stderr

        with redirect_stderr(err):
            code = main(["generate", "--model-path", "tiny-wan-t2v", "--num-inference-steps", "1", *args])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return code, err.getvalue() + stream.getvalue()


def test_a_rerun_with_other_settings_is_refused_and_changes_nothing(tmp_path, tiny_wan_folder, tiny_wan22_folder):
    prompts = tmp_path / "set.txt"
    prompts.write_text("a red fox\na blue cat\n")
    out = tmp_path / "set1"
    code, _ = _generate("--prompt-file", str(prompts), "--output-path", str(out))
    assert code == 0
    config, lines = (out / "config.yaml").read_text(), (out / "manifest.jsonl").read_text()
    files = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    for args, message in (
        (["--height", "96", "--width", "96"], "sampling.height=96 (was 64), sampling.width=96 (was 64)"),
        (["--seed", "5"], "sampling.seed=5 (was 1024)"),
        (["--num-inference-steps", "2"], "sampling.num_inference_steps=2 (was 1)"),
        (["--model-path", "tiny-wan22-t2v"], "model.path='tiny-wan22-t2v' (was 'tiny-wan-t2v')"),
        (["--precision", "bf16"], "model.precision='bf16' (was 'fp32')"),
    ):
        start = time.perf_counter()
        code, text = _generate("--prompt-file", str(prompts), "--output-path", str(out), *args)
        assert code == 2, text
        assert f"{out} holds a run of model tiny-wan-t2v at 64x64; this run asks for {message}" in text
        assert "use another --output-path, or --no-resume (output.resume=false)" in text
        assert time.perf_counter() - start < 10  # refused before the model loads
    assert (out / "config.yaml").read_text() == config and (out / "manifest.jsonl").read_text() == lines
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")} == files

    # --no-resume makes the set again with the new settings; the folder then describes them, and resumes.
    code, _ = _generate("--prompt-file", str(prompts), "--output-path", str(out), "--height", "96", "--width", "96",
                        "--no-resume")
    assert code == 0
    assert "height: 96" in (out / "config.yaml").read_text()
    records = manifest(out)
    assert [r["index"] for r in records] == [0, 1] and all(r["settings"]["height"] == 96 for r in records)
    assert all(read_mp4(r["output"])[0]["size"] == (96, 96) for r in records)
    code, text = _generate("--prompt-file", str(prompts), "--output-path", str(out), "--height", "96", "--width", "96")
    assert code == 0 and "2 already done, 0 to generate" in text


def test_a_lora_change_is_a_changed_run(tmp_path):
    from sgld.resume import check_same_run
    from sgld.run_config import run_config_from_options
    from sgld.config.compose import run_config_yaml
    from sgld.errors import UserError

    plain = run_config_from_options({"model_path": "tiny-wan-t2v"})
    (tmp_path / "config.yaml").write_text(run_config_yaml(plain))
    check_same_run(tmp_path, "out", plain)
    styled = run_config_from_options({"model_path": "tiny-wan-t2v", "lora_path": "style.safetensors"})
    with pytest.raises(UserError, match=r"model.loras=\[\{'path': 'style.safetensors'.*\(was \[\]\)"):
        check_same_run(tmp_path, "out", styled)


def test_an_edited_line_is_made_again_and_the_rest_resumes(tmp_path, tiny_wan_folder):
    prompts = tmp_path / "set.jsonl"
    lines = [{"prompt": "a red fox", "seed": 1}, {"prompt": "a blue cat", "seed": 2}, {"prompt": "a dog", "seed": 3}]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    assert _generate("--prompt-file", str(prompts), "--output-path", str(out))[0] == 0
    first = {r["index"]: r for r in manifest(out)}
    stamp = (out / "0000_a_red_fox.mp4").stat().st_mtime_ns
    lines[1]["prompt"] = "a green cat"  # another file name
    lines[2]["seed"] = 30  # the same file name, other pixels
    lines.append({"prompt": "a bird", "seed": 4})
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, text = _generate("--prompt-file", str(prompts), "--output-path", str(out))
    assert code == 0, text
    assert "4 outputs: 1 already done, 3 to generate" in text
    assert "output 1 changed since it was made (prompt 'a blue cat' -> 'a green cat'" in text
    assert "output 2 changed since it was made (seed 3 -> 30)" in text
    assert (out / "0000_a_red_fox.mp4").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in out.glob("*.mp4")) == ["0000_a_red_fox.mp4", "0001_a_green_cat.mp4",
                                                         "0002_a_dog.mp4", "0003_a_bird.mp4"]
    latest = {r["index"]: r for r in manifest(out)}
    assert latest[2]["seed"] == 30 and latest[2]["output"] == first[2]["output"]


def test_a_set_in_a_log_writes_one_line_per_output(tmp_path, tiny_wan_folder):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\n")
    proc = run_cli("sgld.cli", "generate", "--model-path", "tiny-wan-t2v", "--prompt-file", str(prompts),
                   "--num-inference-steps", "1", "--output-path", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "%|" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert any(line.startswith("load: ") for line in lines)
    outputs = [line for line in lines if line.startswith("output ")]
    assert [line.split(" (")[0] for line in outputs] == ["output 1/2: 0000_a_cat.mp4", "output 2/2: 0001_a_dog.mp4"]
