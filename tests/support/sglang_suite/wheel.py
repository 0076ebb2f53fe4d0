"""SGLang's own diffusion tests, fetched at test time: the ``sglang==0.5.23`` wheel from PyPI, pinned by sha256.

Nothing of SGLang's code lives in this repository. ``prepare()`` downloads the wheel once into a cache folder
(``$SGLD_SGLANG_CACHE``, else the repository's pytest cache), extracts its ``multimodal_gen/test`` tree and the
few stdlib-only modules that tree imports as they are, and lays the stand-in modules of ``standin/`` over them
(the real ones import torch, Triton kernels and the Hub). The result is an import root for ``sglang``.
``source()`` reads any other file of the wheel (flag and request-field tables) without extracting it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
STANDIN = Path(__file__).resolve().parent / "standin"

VERSION = "0.5.23"
WHEEL = f"sglang-{VERSION}-cp311-cp311-manylinux_2_34_x86_64.whl"
SHA256 = "00b3cd5b265ac76c64185fbb6b95424f324ddd9f428d0306b77bc9db9d859937"
# The wheel's harness and case list, and the modules it imports that need nothing but the standard library (and
# psutil): used unchanged.
EXTRACT_PREFIXES = ("sglang/multimodal_gen/test/",)
EXTRACT_FILES = (
    "sglang/multimodal_gen/configs/__init__.py",
    "sglang/multimodal_gen/configs/task_type.py",
    "sglang/multimodal_gen/benchmarks/compare_perf.py",
    "sglang/multimodal_gen/runtime/utils/logging_utils.py",
    "sglang/multimodal_gen/runtime/utils/process.py",
    "sglang/srt/environ.py",
)
PIPELINE_CONFIGS = "sglang/multimodal_gen/configs/pipeline_configs/"


class WheelUnavailable(RuntimeError):
    """The wheel could not be downloaded or is not the pinned one (the message says why)."""


def cache_dir() -> Path:
    """Where the wheel and its extracted tree are kept between test sessions."""
    folder = os.environ.get("SGLD_SGLANG_CACHE")
    return Path(folder) if folder else REPO / ".pytest_cache" / "d" / f"sglang-{VERSION}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch() -> Path:
    """The pinned wheel, downloaded with ``pip download --no-deps`` when the cache lacks it."""
    folder = cache_dir()
    wheel = folder / WHEEL
    if not wheel.exists():
        folder.mkdir(parents=True, exist_ok=True)
        # The exact wheel whatever interpreter runs the tests: its tags are pinned, not derived from this Python.
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                   "3.11", "--implementation", "cp", "--abi", "cp311", "--platform", "manylinux_2_34_x86_64",
                   f"sglang=={VERSION}", "-d", str(folder)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise WheelUnavailable(f"pip download sglang=={VERSION} took over 600 s (is PyPI reachable?)") from None
        if done.returncode != 0 or not wheel.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise WheelUnavailable(f"pip download sglang=={VERSION} failed (exit {done.returncode}): " + " | ".join(tail))
    actual = _sha256(wheel)
    if actual != SHA256:
        wheel.unlink()
        raise WheelUnavailable(f"{WHEEL} has sha256 {actual}, not the pinned {SHA256}; removed it")
    return wheel


def prepare() -> Path:
    """The import root holding ``sglang`` (the wheel's test tree plus the stand-ins), made once per cache."""
    wheel = fetch()
    folder = cache_dir()
    tree = folder / "tree"
    with (folder / ".lock").open("w") as lock:  # two test sessions may prepare at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (tree / ".complete").exists():
            partial = folder / "tree.partial"
            shutil.rmtree(partial, ignore_errors=True)
            with zipfile.ZipFile(wheel) as archive:
                for name in archive.namelist():
                    if name.startswith(EXTRACT_PREFIXES) or name in EXTRACT_FILES:
                        archive.extract(name, partial)
            shutil.rmtree(tree, ignore_errors=True)
            partial.rename(tree)
            (tree / ".complete").touch()
        # The stand-ins are laid over every time: cheap, and an edited stand-in takes effect at once.
        for path in STANDIN.rglob("*.py"):
            target = tree / path.relative_to(STANDIN)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists() or target.read_bytes() != path.read_bytes():
                shutil.copyfile(path, target)
    return tree


def source(name: str) -> str:
    """The text of one file of the wheel (``sglang/...``), read from the archive."""
    with zipfile.ZipFile(fetch()) as archive:
        return archive.read(name).decode()


def pipeline_config_sources() -> dict[str, str]:
    """The wheel's ``configs/pipeline_configs/*.py`` by file name (SGLang's model -> pipeline config table)."""
    with zipfile.ZipFile(fetch()) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()
                if name.startswith(PIPELINE_CONFIGS) and name.endswith(".py")}
