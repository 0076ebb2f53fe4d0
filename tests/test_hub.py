"""Repo ids download on first use: only what sgld loads, never with downloads off; a cached folder is used as is.

No test reaches the network: the Hub's download functions are replaced by fakes that record what was asked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sgld.errors import UserError
from sgld.models import hub
from tests.conftest import run_cli


class FakeHub:
    """Stands in for huggingface_hub's downloads: serves ``folder`` as the repo and records the requests."""

    def __init__(self, folder: Path, target: Path):
        self.folder, self.target, self.asked = folder, target, []

    def hf_hub_download(self, repo_id, filename, **kwargs):
        self.asked.append(("file", repo_id, filename))
        return str(self.folder / filename)

    def snapshot_download(self, repo_id, allow_patterns=None, local_files_only=False, **kwargs):
        from huggingface_hub.errors import LocalEntryNotFoundError

        if local_files_only:
            if not self.target.exists():
                raise LocalEntryNotFoundError("not in the cache")
            return str(self.target)
        self.asked.append(("snapshot", repo_id, tuple(allow_patterns)))
        shutil.copytree(self.folder, self.target)
        return str(self.target)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path, tiny_wan_folder):
    import huggingface_hub

    fake = FakeHub(tiny_wan_folder, tmp_path / "snapshot")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return fake


def test_a_repo_id_downloads_only_configs_safetensors_and_tokenizer_files(fake_hub, tiny_wan_folder):
    from sgld.models.registry import choose_model, resolve_model_folder

    choice = choose_model("acme/tiny-wan")
    assert choice.group == "wan21" and choice.values["model.path"] == "acme/tiny-wan"
    index = json.loads((tiny_wan_folder / "model_index.json").read_text())
    components = sorted(name for name, spec in index.items() if isinstance(spec, list) and spec[0] is not None)
    assert fake_hub.asked[0] == ("file", "acme/tiny-wan", "model_index.json")
    kind, repo, patterns = fake_hub.asked[1]
    assert kind == "snapshot" and repo == "acme/tiny-wan"
    assert patterns[0] == "model_index.json"
    assert sorted({p.split("/")[0] for p in patterns[1:]}) == components  # each component folder, nothing at the root
    assert all(p.endswith(hub.COMPONENT_FILES) for p in patterns[1:])
    assert not [p for p in patterns if p.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl", "*"))]  # never pickle
    # Once downloaded, the cached folder is used as it is: no second request.
    assert resolve_model_folder("acme/tiny-wan") == fake_hub.target
    assert len(fake_hub.asked) == 2


def test_downloads_off_keeps_to_the_cache_with_the_reason(fake_hub, monkeypatch):
    from sgld.models.registry import choose_model

    with pytest.raises(UserError, match=r"not downloaded: .* and downloads are off \(--no-download"):
        choose_model("acme/tiny-wan", download=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"not downloaded: .* and downloads are off \(HF_HUB_OFFLINE is set\)"):
        choose_model("acme/tiny-wan")
    assert fake_hub.asked == []


def test_the_cli_says_why_it_does_not_download(sgld_home):
    for extra in (["--no-download"], []):  # the test session runs with HF_HUB_OFFLINE=1
        proc = run_cli("sgld.cli", "generate", "--model-path", "acme/not-cached", "--prompt", "x", *extra)
        assert proc.returncode == 2 and "is not downloaded" in proc.stderr and "Traceback" not in proc.stderr
        assert ("--no-download" if extra else "HF_HUB_OFFLINE") in proc.stderr
