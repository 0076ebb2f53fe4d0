"""Every ``sglang generate`` / ``sglang serve`` example of SGLang's CLI document runs as ``sgl-diffusion``.

The document (tests/data/sglang_cli.md, a copy of the seed) is read as it is: bash itself expands each
example's arrays and quoting, with ``sglang`` defined to print its arguments. What a CPU test cannot
run as printed is substituted, and only that: the tiny model of each family for the released weights,
small sizes and steps, 2 gloo processes where the example asks for 4 GPUs, a temporary output folder.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.server.conftest import free_port

DOC = Path(__file__).resolve().parent / "data" / "sglang_cli.md"
TINY = {"Wan-AI/Wan2.2-T2V-A14B-Diffusers": "tiny-wan22-t2v", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": "tiny-wan-t2v",
        "Qwen/Qwen-Image": "tiny-qwen-image", "Qwen/Qwen-Image-Edit": "tiny-qwen-image-edit"}
# Flag values a CPU test changes: 4 GPUs (Ulysses 2 x ring 2) become 2 gloo processes (Ulysses 2).
SMALL = {"--num-gpus": "2", "--ring-degree": "1", "--width": "64", "--height": "64"}


def examples() -> list[list[str]]:
    """The argument lists of the document's ``sglang`` commands, expanded by bash."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    found = []
    for block in blocks:
        if not re.search(r"^\s*sglang (generate|serve)", block, flags=re.M):
            continue
        script = "sglang() { printf '%s\\0' \"$@\"; printf '\\n\\0'; }\n" + block
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
        for command in out.split("\n\0"):
            if command.strip("\0"):
                found.append(command.strip("\0").split("\0"))
    return found


def substitute(argv: list[str], out: Path, image: Path) -> list[str]:
    """The example's arguments with CPU-sized values (each ``--flag=value`` split in two)."""
    args: list[str] = []
    for arg in argv:
        args.extend(arg.split("=", 1) if arg.startswith("--") and "=" in arg else [arg])
    result = []
    for i, arg in enumerate(args):
        flag = args[i - 1] if i else ""
        if flag == "--model-path":
            arg = TINY[arg]
        elif flag in SMALL:
            arg = SMALL[flag]
        elif flag == "--output-path":
            arg = str(out)
        elif flag == "--image-path":
            arg = str(image)
        elif flag == "--config":
            arg = str(Path(__file__).resolve().parent / "data" / "seed_fasthunyuan.json")
        result.append(arg)
    if result[0] == "generate" and "--help" not in result:
        result += ["--num-inference-steps", "2"]
        if "--config" in result:  # the config's 2-GPU, 720p, 45-frame FastHunyuan run, on one CPU process
            result += ["--num-gpus", "1", "--sp-size", "1", "--height", "32", "--width", "32", "--num-frames", "5",
                       "--output-path", str(out)]
    return result


EXAMPLES = examples()


def test_the_document_has_the_examples_we_expect():
    """--config, --help, three generations and three servers (a change to the document shows up here)."""
    assert sorted(argv[0] for argv in EXAMPLES) == ["generate"] * 5 + ["serve"] * 3
    models = {argv[argv.index("--model-path") + 1] for argv in EXAMPLES if "--model-path" in argv}
    assert models == set(TINY)


@pytest.fixture(scope="module")
def servers(tmp_path_factory, input_png, sgld_home):
    """``servers(index)``: the serve example's server. The first call launches every serve example's server
    together (a start is mostly a single-threaded import: side by side they take both cores); each test stops its
    own, any left are stopped at the end."""
    launched: dict[int, tuple] = {}

    def get(index: int) -> tuple:
        if not launched:
            for i, argv in enumerate(EXAMPLES):
                if argv[0] == "serve":
                    folder = tmp_path_factory.mktemp(f"serve{i}")
                    launched[i] = _launch(substitute(argv, folder / "out", input_png), folder)
        return launched[index]

    yield get
    for proc, *_ in launched.values():
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_each_example_runs_as_sgl_diffusion(index, tmp_path, input_png, sgld_home, monkeypatch, capsys, servers):
    from sgld.cli import main

    if EXAMPLES[index][0] == "serve":
        _serve(*servers(index))
        return
    argv = substitute(EXAMPLES[index], tmp_path / "out", input_png)
    monkeypatch.chdir(tmp_path)
    if "--help" in argv:
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0 and "--model-path" in capsys.readouterr().out
        return
    assert main(argv) == 0, argv
    written = list((tmp_path / "out").glob("*"))
    assert written and all(p.stat().st_size > 0 for p in written), argv
    if "--output-file-name" in argv:  # the example names its file
        assert [p.name for p in written] == [argv[argv.index("--output-file-name") + 1]]


def _launch(argv: list[str], tmp_path: Path) -> tuple:
    """Start the example's server as ``sgl-diffusion serve``; (process, port, log, argv)."""
    import os
    import sys

    port = free_port()
    log = tmp_path / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "sgld.cli", *argv, "--port", str(port), "--output-path",
                             str(tmp_path / "out")], stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env=dict(os.environ), cwd=Path(__file__).resolve().parents[1])
    return proc, port, log, argv


def _serve(proc: subprocess.Popen, port: int, log: Path, argv: list[str]) -> None:
    """Wait until the launched server's /health says it is ready and it lists the example's model; then stop it."""
    import time

    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()["data"]
                    assert models[0]["id"] == argv[argv.index("--model-path") + 1]
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"not ready: {log.read_text()[-2000:]}")
    finally:
        proc.terminate()
        proc.wait(20)
