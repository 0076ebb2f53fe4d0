"""Hugging Face repo ids: the local cache first, else a download of only what sgld loads.

A repo's ``model_index.json`` names its components; sgld fetches, for each of them, the
configs, safetensors weights and tokenizer files (never pickle weights, never the
single-file checkpoints some repos keep at their root). ``HF_HUB_OFFLINE=1`` or
``model.download=false`` (``--no-download``) keeps to the cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from sgld.errors import UserError

# What sgld loads from a component folder: configs, weights (safetensors only), tokenizer and processor files.
COMPONENT_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken")


def looks_like_repo_id(path: str) -> bool:
    """``org/name``: two non-empty parts, not a relative or absolute path."""
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not path.startswith((".", "/", "~"))


def component_names(index: Mapping[str, Any]) -> list[str]:
    """The component folders a model_index.json lists (entries with a library and class)."""
    return [name for name, spec in index.items()
            if not name.startswith("_") and isinstance(spec, list) and len(spec) == 2 and spec[0] is not None]


def download_patterns(index: Mapping[str, Any]) -> list[str]:
    """The files a download asks for: model_index.json, then COMPONENT_FILES in each component folder."""
    return ["model_index.json"] + [f"{name}/{pattern}" for name in component_names(index) for pattern in COMPONENT_FILES]


def cached_folder(repo_id: str) -> Path | None:
    """The repo's snapshot in the local cache when every component folder is there; else None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
        return None
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        return None
    try:
        index = json.loads(index_file.read_text())
    except json.JSONDecodeError:
        return None
    return folder if all((folder / name).is_dir() for name in component_names(index)) else None


def downloads_off_reason(download: bool) -> str | None:
    """Why this run must not download (None: it may)."""
    from huggingface_hub import constants

    if not download:
        return "downloads are off (--no-download / model.download=false)"
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "downloads are off (HF_HUB_OFFLINE is set)"
    return None


def repo_folder(repo_id: str, download: bool = True) -> Path:
    """The local folder of ``repo_id``: from the cache as it is, else downloaded (progress bars, HF_TOKEN)."""
    folder = cached_folder(repo_id)
    if folder is not None:
        return folder
    reason = downloads_off_reason(download)
    if reason is not None:
        raise UserError(not_downloaded_message(repo_id, reason), param="model_path")
    return _download(repo_id)


def not_downloaded_message(repo_id: str, reason: str) -> str:
    """What a user reads when a repo id is not in the cache and may not be downloaded."""
    from huggingface_hub.constants import HF_HUB_CACHE

    return (f"model {repo_id!r} is not downloaded: it is not in the Hugging Face cache ({HF_HUB_CACHE}) and {reason}. "
            f"Download it first (huggingface-cli download {repo_id}) or pass a local folder")


def _download(repo_id: str) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        index = json.loads(Path(hf_hub_download(repo_id, "model_index.json")).read_text())
        return Path(snapshot_download(repo_id, allow_patterns=download_patterns(index)))
    except GatedRepoError:
        raise UserError(f"model {repo_id!r} is gated: accept its license on the Hugging Face Hub and set HF_TOKEN "
                        "to a token of that account", param="model_path") from None
    except RepositoryNotFoundError:
        raise UserError(f"model {repo_id!r} is not on the Hugging Face Hub (or is private: set HF_TOKEN)",
                        param="model_path") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"model {repo_id!r}: its model_index.json is not valid JSON ({exc})", param="model_path") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise UserError(f"could not download model {repo_id!r}: {exc}", param="model_path") from None


def split_file_reference(reference: str) -> tuple[str, str] | None:
    """``org/name/dir/file.gguf`` -> (``org/name``, ``dir/file.gguf``): a file in a Hub repo; None for anything else."""
    parts = reference.split("/")
    if len(parts) < 3 or not all(parts) or reference.startswith((".", "/", "~")):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def repo_file(repo_id: str, filename: str, download: bool = True) -> Path:
    """One file of a Hub repo: from the cache as it is, else downloaded (that file only)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
    )

    reference = f"{repo_id}/{filename}"
    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    except (LocalEntryNotFoundError, EntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    reason = downloads_off_reason(download)
    if reason is not None:
        from huggingface_hub.constants import HF_HUB_CACHE

        raise UserError(f"{reference!r} is not downloaded: it is not in the Hugging Face cache ({HF_HUB_CACHE}) and "
                        f"{reason}. Download it first (huggingface-cli download {repo_id} {filename}) or pass a "
                        "local path", param="dit_weights")
    try:
        return Path(hf_hub_download(repo_id, filename))
    except GatedRepoError:
        raise UserError(f"{reference!r}: the repo is gated: accept its license on the Hugging Face Hub and set "
                        "HF_TOKEN to a token of that account", param="dit_weights") from None
    except RepositoryNotFoundError:
        raise UserError(f"{reference!r}: no repo {repo_id!r} on the Hugging Face Hub (or it is private: set HF_TOKEN)",
                        param="dit_weights") from None
    except EntryNotFoundError:
        raise UserError(f"{reference!r}: the repo {repo_id!r} has no file {filename!r}", param="dit_weights") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise UserError(f"could not download {reference!r}: {exc}", param="dit_weights") from None
