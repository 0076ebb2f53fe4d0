"""The ``sgl-diffusion`` command: help, the foundation's generate command, and clean errors."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, read_mp4, run_cli
from sgld.config.options import HTTP, OPTIONS


def test_help_lists_every_flag_quickly():
    start = time.perf_counter()
    proc = run_cli("sgld.cli", "generate", "--help")
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    for option in OPTIONS:
        assert (option.flag in proc.stdout) == (option.section != HTTP), option.flag
    assert "--config" in proc.stdout and "(default: 1024)" in proc.stdout
    assert elapsed < 5  # measured ~0.6 s on 2 cores; the bound only catches an eager torch import
    serve = run_cli("sgld.cli", "serve", "--help")
    for option in OPTIONS:
        assert (option.flag in serve.stdout) == (not option.generate_only), option.flag
    assert "(default: 30000)" in serve.stdout and "(default: 127.0.0.1)" in serve.stdout


def test_cli_import_does_not_import_torch():
    code = "import sgld.cli, sgld.config, sgld.families, sgld.models.registry, sgld.models.folder_model, sgld.run_config, sys; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.stdout.strip() == "False", proc.stderr


def test_foundation_generate_command(tmp_path, tiny_wan_folder):
    out = tmp_path / "demo"
    proc = run_cli(
        "sgld.cli", "generate", "--model-path", "tiny-wan-t2v", "--prompt", "a red fox", "--num-frames", "9",
        "--height", "64", "--width", "64", "--num-inference-steps", "4", "--seed", "7", "--save-output",
        "--output-path", str(out), "--output-file-name", "fox.mp4",
    )
    assert proc.returncode == 0, proc.stderr
    meta, frames = read_mp4(out / "fox.mp4")
    assert len(frames) == 9 and meta["size"] == (64, 64) and meta["codec"] == "h264" and meta["fps"] == 8
    assert "fox.mp4" in proc.stdout


def test_config_file_with_flags_winning(tmp_path, tiny_wan_folder):
    config = tmp_path / "run.yaml"
    config.write_text(
        "model_path: tiny-wan-t2v\nprompt: a cat on stage\nnum_frames: 45\nheight: 720\nwidth: 1280\n"
        "num_inference_steps: 6\nseed: 1024\nfps: 24\nvae_config:\n  load_encoder: false\n"
        f"output_path: {tmp_path / 'from_file'}\n"
    )
    proc = run_cli(
        "sgld.cli", "generate", "--config", str(config), "--num-frames", "5", "--height", "32", "--width", "48",
        "--num-inference-steps", "2", "--output-path", str(tmp_path / "from_flags"), "--output-file-name", "cat",
    )
    assert proc.returncode == 0, proc.stderr
    meta, frames = read_mp4(tmp_path / "from_flags" / "cat.mp4")
    assert len(frames) == 5 and meta["size"] == (48, 32) and meta["fps"] == 24  # fps from the file
    assert not (tmp_path / "from_file").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--height", "65"], "height=65 must be a multiple of 16 for this model; nearest valid: 64 or 80"),
        (["--num-frames", "10"], "num_frames=10 must be 4k+1 for this model; nearest valid: 9 or 13"),
        (["--num-inference-steps", "0"], "num_inference_steps must be >= 1"),
        (["--model-path", "no-such-model"], "unknown model 'no-such-model'"),
        (["--model-path", "/no/such/folder"], "model folder '/no/such/folder' does not exist"),
        (["--model-path", "someone/not-downloaded"], "is not downloaded"),
        (["--config", "/no/such/config.yaml"], "config file '/no/such/config.yaml' does not exist"),
        (["--ulysses-degree", "2", "--ring-degree", "2", "--sp-size", "2", "--num-gpus", "4"], "must equal parallel.sp_size"),
        (["--enable-cfg-parallel", "--sp-size", "2", "--num-gpus", "2"], "is more than parallel.num_gpus (2)"),
        (["--output-file-name", "../escape.mp4"], "plain file name"),
        (["--model-path", "tiny-hunyuan", "--num-gpus", "2"], "hunyuan models have no sequence-parallel split"),
    ],
)
def test_bad_input_exits_2_with_a_message(args, message, tiny_wan_folder):
    base = ["--model-path", "tiny-wan-t2v", "--prompt", "x", "--height", "64", "--width", "64", "--num-frames", "9"]
    proc = run_cli("sgld.cli", "generate", *base, *args, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "content,message",
    [("prompt: [oops\n", "not valid YAML: line"), ("model_path: tiny-wan-t2v\nnum_gpu: 2\n", "unknown key 'num_gpu'")],
)
def test_bad_config_file_exits_2(tmp_path, content, message):
    config = tmp_path / "c.yaml"
    config.write_text(content)
    proc = run_cli("sgld.cli", "generate", "--config", str(config), "--prompt", "x", timeout=60)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_serve_rejects_bad_input_before_listening():
    proc = run_cli("sgld.cli", "serve", "--model-path", "no-such-model", timeout=60)
    assert proc.returncode == 2 and "unknown model 'no-such-model'" in proc.stderr and "Traceback" not in proc.stderr


def test_output_file_path_writes_exactly_there(tmp_path, tiny_wan_folder, monkeypatch, capsys):
    from sgld.cli import main

    monkeypatch.chdir(tmp_path)
    small = ["--model-path", "tiny-wan-t2v", "--prompt", "a fox", "--num-inference-steps", "1"]
    target = tmp_path / "nested" / "fox.mp4"
    assert main(["generate", *small, "--output-file-path", str(target)]) == 0
    assert [p.name for p in target.parent.iterdir()] == ["fox.mp4"] and read_mp4(target)[1]
    # Agreeing with --output-path / --output-file-name is fine; disagreeing names both.
    assert main(["generate", *small, "--output-file-path", "same/fox.mp4", "--output-path", "./same/"]) == 0
    assert (tmp_path / "same" / "fox.mp4").is_file()
    # The whole path wins over a file name given beside it (SGLang's rule); another directory still contradicts.
    assert main(["generate", *small, "--output-file-path", "named/fox.mp4", "--output-file-name", "cat.mp4"]) == 0
    assert [p.name for p in (tmp_path / "named").iterdir()] == ["fox.mp4"]
    capsys.readouterr()
    assert main(["generate", *small, "--output-file-path", "a/fox.mp4", "--output-path", "b"]) == 2
    assert "output_file_path='a/fox.mp4' and output_path='b' disagree" in capsys.readouterr().err
    assert main(["generate", *small, "--output-file-path", "a/fox.png"]) == 2  # the extension picks the format
    assert "a video is saved as .mp4" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_guidance_scale_exits_2_before_loading(value, tiny_wan_folder):
    start = time.perf_counter()
    proc = run_cli("sgld.cli", "generate", "--model-path", "tiny-wan-t2v", "--prompt", "x", f"--guidance-scale={value}",
                   timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"sampling.guidance_scale={value} is not a finite number" in proc.stderr
    assert "Traceback" not in proc.stderr and "loaded" not in proc.stderr
    assert time.perf_counter() - start < 20


@pytest.mark.parametrize(
    "model,args,message",
    [
        # Sequence parallelism: the Ulysses degree must divide the DiT's heads (2 in the tiny models).
        ("tiny-wan-t2v", ["--num-gpus", "4", "--ulysses-degree", "4"],
         "ulysses_degree=4 must divide the 2 attention heads of this model's transformer; nearest valid: 2"),
        ("tiny-wan-t2v", ["--num-gpus", "3", "--ulysses-degree", "3"], "nearest valid: 2"),
        # The pixel limit (server.max_pixels, the server's too).
        ("tiny-wan-t2v", ["--height", "100000", "--width", "100000"],
         "100000x100000 (--width x --height) is 10000000000 pixels; the limit is 16777216"),
        # Past the rotary position table: tiny Wan's rope_max_seq_len is 32 (x 16 px, x 4 frames).
        ("tiny-wan-t2v", ["--height", "528", "--width", "64"], "height=528 is past this model's rotary position table"),
        ("tiny-wan-t2v", ["--height", "528", "--width", "64"], "largest valid height: 512"),
        ("tiny-wan-t2v", ["--height", "64", "--width", "544"], "largest valid width: 512"),
        ("tiny-wan-t2v", ["--num-frames", "129"], "largest valid num_frames: 125"),
        # Z-Image: axes_lens [256, 64, 64] latent patches of 16 px.
        ("tiny-z-image", ["--height", "64", "--width", "1040"], "largest valid width: 1024"),
    ],
)
def test_what_the_model_folder_rules_out_is_refused_before_loading(model, args, message, tmp_path):
    start = time.perf_counter()
    base = ["--model-path", model, "--prompt", "x", "--num-inference-steps", "1", "--output-path", str(tmp_path)]
    proc = run_cli("sgld.cli", "generate", *base, *args, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("error:") == 1 and "loaded" not in proc.stderr
    assert elapsed < 20  # measured ~3 s on 2 cores; loading (or spawning ranks) first takes far longer
    assert not list(tmp_path.iterdir())


def _help(*command: str) -> str:
    proc = run_cli("sgld.cli", *command, "--help")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _group(text: str, title: str) -> str:
    """The lines of one argparse group in a --help text (from its title to the next blank line)."""
    start = text.index(f"\n{title}:\n")
    end = text.find("\n\n", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_help_lists_built_in_models_and_groups_options_by_what_they_set():
    from sgld.variants import VARIANTS

    text = _help("generate")
    flat = " ".join(text.split())
    for variant in VARIANTS:  # every name --model-path knows, built-in tiny models and released repo ids
        assert variant.name in flat, variant.name
    assert "server arguments" not in text  # generate starts no server
    assert "--model-path" in _group(text, "model") and "--precision" in _group(text, "model")
    assert "--lora-path" in _group(text, "model") and "--attention-backend" in _group(text, "model")
    assert "--ulysses-degree" in _group(text, "parallelism") and "--num-gpus" in _group(text, "parallelism")
    assert "--dit-cpu-offload" in _group(text, "memory and offload")
    assert "--prompt-file" in _group(text, "prompt sets") and "--resume" in _group(text, "prompt sets")
    assert "--guidance-scale" in _group(text, "sampling parameters")
    # Defaults print as values, and each once.
    assert "<Precision" not in text and "Precision." not in text
    assert "--text-encoder-precisions" in text and "(default: fp32)" in _group(text, "model")
    assert flat.count("the file's stem") == 1


def test_serve_help_lists_no_generation_only_flags():
    text = _help("serve")
    for flag in ("--prompt-file", "--batch-size", "--num-outputs-per-prompt", "--resume", "--output-file-name",
                 "--output-file-path", "--save-output", "--return-frames"):
        assert flag not in text, flag
    for flag in ("--model-path", "--port", "--output-path", "--seed", "--max-batch-size"):
        assert flag in text, flag


README = (REPO / "README.md").read_text()


def _readme_commands() -> list[str]:
    """README's bash and python code blocks, in order, with backslash-continued lines joined."""
    blocks = re.findall(r"```(?:bash|python)\n(.*?)```", README, flags=re.S)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]


def test_readme_hydra_commands_give_a_prompt():
    for line in _readme_commands():
        if "sgld.generate" in line and "prompts_file" not in line and "+experiment" not in line and line.strip():
            assert "sampling.prompt=" in line, line


def test_readme_input_images_are_made_before_they_are_used():
    """Every input image a README example reads is written by an earlier README command."""
    made: set[str] = set()
    for line in _readme_commands():
        for name in re.findall(r"""(?:--image-path |@)([\w./-]+\.png)|open\(["']([\w./-]+\.png)["'], ["']rb""", line):
            name = "".join(name)
            assert Path(name).name in made, f"README reads {name} before any command makes it: {line.strip()}"
        made.update(Path(n).name for n in re.findall(r"""(?:--output-file-path |\.save\(["']|> )([\w./-]+\.png)""", line))
        made.update(re.findall(r"""["']([\w-]+\.png)["'],""", line))  # a list of names a python one-liner saves


def test_readme_video_download_waits_for_the_job():
    """The curl video example polls the job until it is completed before it downloads /content."""
    block = next(b for b in re.findall(r"```bash\n(.*?)```", README, flags=re.S) if "/v1/videos" in b)
    assert re.search(r"(while|until) .*\.status", block), block  # a loop that reads the job's status
    download = block[block.index("/content") - 200 : block.index("/content")]
    assert "completed" in download, block  # the download runs only for a completed job


def test_readme_says_how_to_run_the_programs_after_set_up():
    setup = README[README.index("## Set-up") : README.index("## Generate")]
    after = setup[setup.index("make test\n```") :][:600]  # right after the two commands
    assert "source .venv/bin/activate" in after and ".venv/bin/sgl-diffusion" in after


def test_serve_refuses_generate_options_from_a_config_file(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("model_path: tiny-wan-t2v\nprompt_file: prompts.txt\n")
    proc = run_cli("sgld.cli", "serve", "--config", str(config), timeout=60)
    assert proc.returncode == 2 and "prompt_file is an option of `generate`" in proc.stderr, proc.stderr


STAGE_LINE = re.compile(r"^(\w+): (?:(\d+) steps in )?(\d+\.\d+) s")


def test_progress_without_a_terminal_is_one_line_per_stage(tmp_path, tiny_wan_folder):
    proc = run_cli("sgld.cli", "generate", "--model-path", "tiny-wan-t2v", "--prompt", "a fox", "--num-inference-steps",
                   "3", "--output-path", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "%|" not in proc.stderr  # no redrawn bars in a log
    stages = [m.group(1) for m in map(STAGE_LINE.match, proc.stderr.splitlines()) if m]
    assert stages[0] == "load" and stages[-1] == "save" and len(stages) == len(set(stages)), proc.stderr
    assert stages.index("encode_prompt") < stages.index("denoise") < stages.index("decode"), stages
    denoise = next(m for m in map(STAGE_LINE.match, proc.stderr.splitlines()) if m and m.group(1) == "denoise")
    assert denoise.group(2) == "3"
    assert re.search(r"^load [\d.]+s; .*denoise [\d.]+s, decode [\d.]+s", proc.stdout, flags=re.M)  # the timing line
    assert "done in" in proc.stdout


class _Terminal(__import__("io").StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_leaves_a_line_per_stage(tiny_wan_generator, tmp_path):
    from sgld.progress import Progress

    screen = _Terminal()
    progress = Progress(screen)
    with progress.stage("load"):
        pass
    tiny_wan_generator.generate(prompt="a fox", num_inference_steps=3, height=64, width=64, num_frames=9,
                                output_path=str(tmp_path), progress=progress)
    final = [line.rsplit("\r", 1)[-1] for line in screen.getvalue().split("\n") if line.strip()]
    names = [line.split(":")[0].strip() for line in final]
    assert names[0] == "load" and names[-1] == "save" and "decode" in names, final
    denoise = final[names.index("denoise")]
    assert "3/3" in denoise and "100%" in denoise, final  # the step bar stays on screen, complete


def test_a_slow_stage_shows_its_time_while_it_runs():
    from sgld.progress import Progress

    screen = _Terminal()
    with Progress(screen, refresh_s=0.1).stage("decode"):
        time.sleep(0.6)
    assert screen.getvalue().count("decode") >= 3  # redrawn while it ran, not only at its end


def test_the_console_scripts_end_without_the_interpreters_finalization():
    """sgld.fast_exit: the status kept, non-daemon threads finished and atexit handlers run first (what the
    interpreter would do), then the process ends (skipping 1.2-1.4 s of freeing torch's and diffusers' modules)."""
    from sgld.fast_exit import exit_code

    script = ("import atexit, threading, time\n"
              "from sgld.fast_exit import run_and_exit\n"
              "atexit.register(lambda: print('atexit ran', flush=True))\n"
              "threading.Thread(target=lambda: (time.sleep(0.2), print('thread done', flush=True))).start()\n"
              "run_and_exit(lambda: 3)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and proc.stdout.split() == ["thread", "done", "atexit", "ran"], proc
    assert [exit_code(SystemExit(value)) for value in (None, 0, 2)] == [0, 0, 2]
