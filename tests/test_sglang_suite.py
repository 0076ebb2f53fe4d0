"""SGLang's own diffusion server and CLI tests, unmodified, against ``sgl-diffusion``: the drop-in check.

The ``sglang==0.5.23`` wheel is downloaded at test time (tests/support/sglang_suite/wheel.py; nothing of SGLang's
code is in this repository). Its harness starts ``sglang serve ...`` exactly as SGLang's CI does (a ``sglang``
command on PATH that runs sgld's CLI), sends its requests with the openai SDK and runs its own checks
(``DiffusionServerBase.test_diffusion_generation``); its CLI tests run ``sglang generate ...``. What the suite
changes is data only (tests/support/sglang_suite/cases.py): sgld's tiny models, small sizes, local inputs and
adapters, and CPU-sized performance ceilings instead of SGLang's H100 baselines. Its harness's waits are shortened
(``_ShortWaits``): the same polls and deadlines, at a tenth of a second.

``SGLD_SGLANG_CASES=all`` runs every case whose model family sgld has; the default runs the core subset the issue
names (``cases.CORE``). Cases that do not pass yet are expected failures, listed with their reason in one place:
``cases.EXPECTED_FAILURES``.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.sglang_suite import cases as plan
from tests.support.sglang_suite.hub_cache import plant_finishing_weights
from tests.support.sglang_suite.inputs import InputServer
from tests.support.sglang_suite.wheel import WheelUnavailable, pipeline_config_sources, prepare

ALL = os.environ.get("SGLD_SGLANG_CASES", "core") == "all"
# What the suite's ceilings allow a case on a loaded 2-core machine (SGLang's own baselines are H100 numbers).
CEILING_MS = 600_000.0
# The longest sleep SGLang's harness takes here: it polls health and jobs each second and cools the GPU down for 2 s
# after each server; a tiny model on the CPU answers within the first tenth and has no GPU memory to give back.
POLL_S = 0.1


class _ShortWaits:
    """The ``time`` module, with sleeps cut to ``POLL_S`` (deadlines and clocks unchanged)."""

    def __getattr__(self, name: str):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, POLL_S))

try:
    sys.path.insert(0, str(prepare()))
    UNAVAILABLE = None
except WheelUnavailable as exc:
    UNAVAILABLE = str(exc)


def test_sglang_wheel_is_available():
    """SGLang's tests come from its wheel on PyPI: without it this suite cannot run, which is a failure."""
    if UNAVAILABLE is not None:
        pytest.fail(f"SGLang's test suite is unavailable: {UNAVAILABLE}")


def _expected(test_id: str, value=None, server_case: bool = False):
    """``value`` as a pytest param, an expected failure where ``cases.expected_failure`` says so."""
    reason = plan.expected_failure(test_id, server_case)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(value, marks=marks)


if UNAVAILABLE is None:
    from sglang.multimodal_gen import registry

    registry.configure(pipeline_config_sources(), plan.ALIASES)  # before the case list resolves task types

    from sglang.multimodal_gen.test.server import gpu_cases, test_server_utils, testcase_configs
    from sglang.multimodal_gen.test.server.common.case_fixtures import diffusion_case_fixture
    from sglang.multimodal_gen.test.server.conftest import perf_results  # noqa: F401 - SGLang's fixture
    from sglang.multimodal_gen.test.server.test_server_common import DiffusionServerBase, diffusion_server  # noqa: F401
    # Modules, not their classes: a unittest class in this module's namespace would be collected as is.
    from sglang.multimodal_gen.test.single_test_file import test_generate_i2i as sglang_i2i_cli
    from sglang.multimodal_gen.test.single_test_file import test_generate_zimage_turbo_cli as sglang_zimage_cli

    INPUTS = InputServer()
    LORA_FOLDER = Path(tempfile.mkdtemp(prefix="sglang-suite-loras-"))
    HUB_CACHE = Path(tempfile.mkdtemp(prefix="sglang-suite-hub-"))  # tiny Real-ESRGAN / RIFE weights

    def _mapped(group: list) -> list:
        return [case for case in group if case.server_args.model_path in plan.TINY and case.id not in plan.OUT]

    MAPPED_ONE, MAPPED_TWO = _mapped(gpu_cases.ONE_GPU_CASES), _mapped(gpu_cases.TWO_GPU_CASES)
    ORIGINAL = {case.id: case for case in MAPPED_ONE + MAPPED_TWO}

    def _selected(group: list) -> list:
        small = [plan.small_case(case, INPUTS.url, LORA_FOLDER) for case in group if ALL or case.id in plan.CORE]
        for case in small:
            # Every case checks its request's performance record against a baseline: CPU-sized ceilings here.
            testcase_configs.BASELINE_CONFIG.scenarios[case.id] = testcase_configs.ScenarioConfig(
                stages_ms={}, denoise_step_ms={}, expected_e2e_ms=CEILING_MS, expected_avg_denoise_ms=CEILING_MS,
                expected_median_denoise_ms=CEILING_MS, estimated_full_test_time_s=CEILING_MS / 1000,
                expected_load_ms=CEILING_MS)
        return [_expected(case.id, case, server_case=True) for case in small]

    ONE_RANK, TWO_RANKS = _selected(MAPPED_ONE), _selected(MAPPED_TWO)

    @pytest.fixture(scope="module", autouse=True)
    def suite_folders():
        """The tiny adapters and Hub cache made at import (cases name their paths) are removed with the module."""
        yield
        shutil.rmtree(LORA_FOLDER, ignore_errors=True)
        shutil.rmtree(HUB_CACHE, ignore_errors=True)

    @pytest.fixture(scope="module")
    def sglang_command(tmp_path_factory) -> Path:
        """A folder holding ``sglang``: sgld's CLI, as SGLang's harness calls it (no translation of any flag)."""
        folder = tmp_path_factory.mktemp("sglang-bin")
        command = folder / "sglang"
        command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m sgld.cli "$@"\n')
        command.chmod(command.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return folder

    @pytest.fixture(autouse=True)
    def sglang_environment(sglang_command, sgld_home, monkeypatch, tmp_path):
        """What SGLang's CI sets around its harness, pointed at sgld: the command, a free port, the perf log dir,
        no golden-image downloads, private URLs allowed (the inputs are on 127.0.0.1), a fresh working folder; and
        its waits shortened."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        monkeypatch.setenv("PATH", f"{sglang_command}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("SGLANG_TEST_SERVER_PORT", str(port))
        monkeypatch.setenv("SGLANG_PERF_LOG_DIR", str(tmp_path / "perf"))
        monkeypatch.setenv("SGLANG_SKIP_CONSISTENCY", "1")  # golden outputs of the real weights
        monkeypatch.setenv("SGLANG_TEST_WAIT_SECS", "240")
        monkeypatch.setenv("SGLD_ALLOW_PRIVATE_URLS", "1")
        monkeypatch.setenv("HF_HUB_CACHE", str(HUB_CACHE))  # the finishing models' tiny stand-ins (hub_cache.py)
        monkeypatch.chdir(tmp_path)  # the harness writes its outputs to the working folder, the server its job store
        monkeypatch.setattr(test_server_utils, "time", _ShortWaits())

    class _TinyModels:
        @pytest.fixture(autouse=True)
        def tiny_models(self, case, sgld_home):
            """Build the case's tiny model and adapters before its server starts (not timed as its load)."""
            from sgld.model_builders.tiny import materialize_tiny

            materialize_tiny(case.server_args.model_path)
            extras = case.sampling_params.extras
            if extras.get("enable_upscaling") or extras.get("enable_frame_interpolation"):
                plant_finishing_weights(HUB_CACHE)
            for repo_id in plan.adapters_of(ORIGINAL[case.id]):
                plan.make_adapter(repo_id, LORA_FOLDER)

    class TestSGLangServer(_TinyModels, DiffusionServerBase):
        """SGLang's one-GPU server cases (``test_server_1_gpu.py``) on one process."""

        case = diffusion_case_fixture(ONE_RANK)

    class TestSGLangServerTwoRanks(_TinyModels, DiffusionServerBase):
        """SGLang's two-GPU server cases (``test_server_2_gpu.py``) on two gloo processes."""

        case = diffusion_case_fixture(TWO_RANKS)

    def _cli_expectations(cls: type) -> type:
        """Mark ``cls``'s inherited tests listed in ``cases.EXPECTED_FAILURES`` (as ``Class::test``) expected failures."""
        for name in [n for n in dir(cls) if n.startswith("test_")]:
            reason = plan.expected_failure(f"{cls.__name__}::{name}")
            if reason:
                setattr(cls, name, pytest.mark.xfail(strict=True, reason=reason)(_calling(getattr(cls, name), name)))
        return cls

    def _calling(inherited, name: str):
        """A method of this module's class running ``inherited`` (a mark on it leaves SGLang's function alone)."""
        def test(self):
            return inherited(self)

        test.__name__ = name
        return test

    @_cli_expectations
    class TestSGLangZImageCLI(sglang_zimage_cli.TestZImageTurboCLI):
        """SGLang's ``test_generate_zimage_turbo_cli.py`` on the tiny Z-Image."""

        model_path = "tiny-z-image"
        width = height = 64

    @_cli_expectations
    class TestSGLangI2ICLI(sglang_i2i_cli.TestQwenImageEditI2I):
        """SGLang's ``test_generate_i2i.py`` (several prompts, several input URLs) on the tiny Qwen-Image-Edit-Plus."""

        model_path = "tiny-qwen-image-edit-plus"
        width = height = 64
        test_image_urls = [INPUTS.url(url) for url in sglang_i2i_cli.TestQwenImageEditI2I.test_image_urls]

    def test_every_mapped_case_is_accounted_for():
        """A new SGLang case on a model sgld has shows up here: it is run (core or all), or named as out."""
        ids = [case.id for case in gpu_cases.ONE_GPU_CASES + gpu_cases.TWO_GPU_CASES
               if case.server_args.model_path in plan.TINY]
        assert len(ids) == len(ORIGINAL) + len(plan.OUT)
        unknown = (set(plan.CORE) | set(plan.OUT)
                   | {k for k in plan.EXPECTED_FAILURES if "::" not in k and "[" not in k}) - set(ids)
        assert not unknown, f"cases.py names cases SGLang's list lacks: {sorted(unknown)}"


def _sglang_flags(command: str) -> list:
    from tests.support.sglang_suite import flags, wheel

    found = flags.serve_flags(wheel.source)
    if command == "generate":
        found += flags.generate_flags(wheel.source)
    return [flag for flag in found if flag.names[0].startswith("--")]


def _sample(flag, name: str) -> list[str]:
    """A command-line use of ``flag`` (spelt ``name``) as SGLang takes it."""
    if flag.action in ("store_true", "store_false"):
        return [name]
    if flag.action == "StoreBoolean":
        return [name, "true"]
    return [name, "1"]


@pytest.mark.parametrize("command", [_expected(f"test_every_sglang_flag_is_known[{c}]", c) for c in ("serve", "generate")])
def test_every_sglang_flag_is_known(command, capsys):
    """Each flag of SGLang's parser (read from its wheel) is taken by sgld's: as an option of its own, mapped,
    accepted with a log line, or refused with the reason; never argparse's "unrecognized arguments"."""
    if UNAVAILABLE is not None:
        pytest.fail(f"SGLang's flags come from its wheel: {UNAVAILABLE}")
    from sgld.cli import build_parser, parse
    from sgld.errors import UserError

    parser = build_parser()
    unknown, refused = [], []
    for flag, name in [(flag, name) for flag in _sglang_flags(command) for name in flag.names]:
        try:
            parse(parser, [command, "--model-path", "tiny-wan-t2v", *_sample(flag, name)])
        except UserError as exc:
            if "sgld does not support" in str(exc):
                refused.append(name)
        except SystemExit:
            if "unrecognized arguments" in capsys.readouterr().err:
                unknown.append(name)
    assert not unknown, f"sgld's parser does not know SGLang's {unknown}"
    assert len(refused) > 20  # the refused ones say so (disaggregation, Spectrum, ...)


def test_sglang_flag_table_matches_sglang():
    """sgld's table of SGLang's flags (sgld.config.sglang_flags) takes each flag the way SGLang's parser does (a
    value, true/false, none, several), and names no flag SGLang lacks."""
    if UNAVAILABLE is not None:
        pytest.fail(f"SGLang's flags come from its wheel: {UNAVAILABLE}")
    from sgld.config import sglang_flags as table

    shapes = {}
    for flag in _sglang_flags("generate"):
        shape = {"StoreBoolean": table.BOOL, "store_true": table.SWITCH, "store_false": table.SWITCH}.get(
            flag.action) or {"+": table.MANY, "*": table.ANY}.get(flag.nargs, table.VALUE)
        for name in flag.names:
            shapes[name] = shape
    wrong = {name: (row.shape, shapes.get(name)) for row in table.TABLE for name in row.names
             if name != "--model-type" and shapes.get(name) != row.shape}
    assert not wrong, f"flags whose shape differs from SGLang's (sgld's, SGLang's): {wrong}"


# sgld's task where SGLang's registry has no entry of its own for the model: HunyuanVideo-1.5 I2V matches
# HunyuanVideo's T2V config by its short name there; it takes a first frame, so it is I2V here.
TASK_DIFFERENCES = {"hunyuanvideo-community/HunyuanVideo-1.5-480p_i2v": ("I2V", "T2V")}


def test_task_types_match_sglangs_registry():
    """Each released model sgld knows (sgld.variants) has the task type SGLang's registry gives it (read from the
    wheel's pipeline configs), the deliberate differences aside."""
    if UNAVAILABLE is not None:
        pytest.fail(f"SGLang's registry comes from its wheel: {UNAVAILABLE}")
    from sgld.families import FAMILIES
    from sgld.variants import VARIANTS

    answers = {}
    for variant in (v for v in VARIANTS if not v.tiny):
        info = registry.get_model_info(variant.name)
        answers[variant.name] = (FAMILIES[variant.family].task.value, info and info.pipeline_config_cls.task_type.name)
    differ = {name: pair for name, pair in answers.items() if pair[0] != pair[1]}
    assert differ == TASK_DIFFERENCES
