"""Finishing models' weights: a local file or folder, or a Hugging Face repo id (``org/name`` with the default file,
or SGLang's ``org/name:file``) fetched through sgld.models.hub's rules (the cache first; --no-download and
HF_HUB_OFFLINE keep to it). Safetensors load as they are; pickle checkpoints only through torch.load(weights_only=True),
which refuses anything but tensors and plain containers (no code runs)."""

from __future__ import annotations

from pathlib import Path

from sgld.errors import UserError
from sgld.models.hub import downloads_off_reason, looks_like_repo_id, not_downloaded_message

PICKLE = (".pth", ".pkl", ".pt", ".ckpt")


def resolve(reference: str, default_file: str, option: str, download: bool = True, fetch: bool = True) -> Path | None:
    """The weight file ``reference`` names: a local file, a file in a local folder, or a Hub file.

    ``fetch=False`` (checking a request before it queues): None where the file would be downloaded, a UserError
    where it cannot be had at all."""
    local = Path(reference).expanduser()
    if local.is_file():
        return local
    if local.is_dir():
        found = [local / default_file] if (local / default_file).is_file() else sorted(
            p for p in local.iterdir() if p.suffix in (".safetensors", *PICKLE))
        if not found:
            raise UserError(f"{option}={reference!r}: the folder holds no {default_file} nor any .safetensors/.pth file",
                            param=option)
        return found[0]
    repo, _, filename = reference.partition(":")
    if not looks_like_repo_id(repo):
        raise UserError(f"{option}={reference!r} is neither a local file or folder nor a Hugging Face repo id "
                        "(org/name or org/name:file)", param=option)
    return _hub_file(repo, filename or default_file, option, download, fetch)


def _hub_file(repo: str, filename: str, option: str, download: bool, fetch: bool = True) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo, filename, local_files_only=True))
    except (LocalEntryNotFoundError, EntryNotFoundError, OSError, ValueError):
        pass
    reason = downloads_off_reason(download)
    if reason is not None:
        raise UserError(f"{option}: {not_downloaded_message(f'{repo}:{filename}', reason)}", param=option)
    if not fetch:
        return None
    try:
        return Path(hf_hub_download(repo, filename))
    except RepositoryNotFoundError:
        raise UserError(f"{option}: no repo {repo!r} on the Hugging Face Hub (or it is private: set HF_TOKEN)",
                        param=option) from None
    except EntryNotFoundError:
        raise UserError(f"{option}: the repo {repo!r} has no file {filename!r}", param=option) from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise UserError(f"{option}: could not download {repo}:{filename}: {exc}", param=option) from None


def load_state_dict(path: Path, option: str) -> dict:
    """Tensors of a weight file: safetensors, or a pickle read by torch.load(weights_only=True)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix not in PICKLE:
        raise UserError(f"{option}: {path.name} is neither .safetensors nor a PyTorch checkpoint ({', '.join(PICKLE)})",
                        param=option)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler's refusal (code, unknown globals) or a broken file
        raise UserError(f"{option}: {path.name} does not load as plain tensors (weights_only): {exc}",
                        param=option) from None
    if not isinstance(state, dict):
        raise UserError(f"{option}: {path.name} holds a {type(state).__name__}, not a state dict", param=option)
    return state
