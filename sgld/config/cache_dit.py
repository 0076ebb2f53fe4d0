"""Cache-DiT settings as SGLang takes them, resolved to the flat options cache-dit's own loader reads.

Three sources, later ones winning key by key: SGLang's ``SGLANG_CACHE_DIT_*`` environment variables (with
SGLang's defaults: F1B0, 4 warm-up steps, threshold 0.24, at most 3 cached steps in a row), or instead of them a
``--cache-dit-config`` file in cache-dit's YAML/JSON format (its flat options or a ``cache_config`` section);
then a request's ``cache_dit_params`` (SGLang's knob names). The result is cache-dit's flat option mapping,
turned into its config objects by ``cache_dit.load_cache_config`` where the lever applies it. No torch here:
requests are checked with it before anything loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from sgld.errors import UserError

# SGLang's per-request knobs (cache_dit_integration.CACHE_DIT_REQUEST_*): name -> type.
KNOBS: dict[str, type] = {
    "Fn_compute_blocks": int, "Bn_compute_blocks": int, "max_warmup_steps": int, "residual_diff_threshold": float,
    "max_continuous_cached_steps": int, "enable_taylorseer": bool, "taylorseer_order": int, "enable_dmd": bool,
    "dmd_history": int, "dmd_rank": int, "dmd_ridge": float, "dmd_svd_precision": str,
}
SCM_KEYS = ("scm_preset", "scm_compute_bins", "scm_cache_bins", "scm_policy")
REQUEST_KEYS = (*KNOBS, *SCM_KEYS, "secondary")
SCM_PRESETS = ("none", "slow", "medium", "fast", "ultra")

# SGLang's environment variables (envs.py): variable suffix -> knob, and SGLang's default for it.
_ENV_KNOBS = {
    "FN": ("Fn_compute_blocks", 1), "BN": ("Bn_compute_blocks", 0), "WARMUP": ("max_warmup_steps", 4),
    "RDT": ("residual_diff_threshold", 0.24), "MC": ("max_continuous_cached_steps", 3),
    "TAYLORSEER": ("enable_taylorseer", False), "TS_ORDER": ("taylorseer_order", 1), "DMD": ("enable_dmd", False),
    "DMD_HISTORY": ("dmd_history", 6), "DMD_RANK": ("dmd_rank", 0), "DMD_RIDGE": ("dmd_ridge", 1e-8),
    "DMD_SVD_PRECISION": ("dmd_svd_precision", "medium"),
}
_ENV_SCM = {"SCM_PRESET": ("scm_preset", "none"), "SCM_COMPUTE_BINS": ("scm_compute_bins", None),
            "SCM_CACHE_BINS": ("scm_cache_bins", None), "SCM_POLICY": ("scm_policy", "dynamic")}
ENV_PREFIX = "SGLANG_CACHE_DIT_"

# What sgld sets itself and a config file may not: the parallel layout and attention kernel are sgld's options.
_NOT_TAKEN = {"parallelism_config": "--ulysses-degree / --ring-degree / --enable-cfg-parallel",
              "attention_backend": "--attention-backend", "quantize_config": "--quantization"}
# Calibrator options of cache-dit's flat format (load_cache_options_from_dict), beside DBCacheConfig's fields.
CALIBRATOR_KEYS = ("enable_taylorseer", "enable_encoder_taylorseer", "taylorseer_cache_type", "taylorseer_order",
                   "enable_dmd", "enable_encoder_dmd", "calibrator_cache_type", "dmd_history", "dmd_rank",
                   "dmd_ridge", "dmd_svd_precision", "enable_foca", "enable_encoder_foca")


def env_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """``SGLANG_CACHE_DIT_ENABLED``: Cache-DiT on by default for every request."""
    return _parse_bool("SGLANG_CACHE_DIT_ENABLED", (os.environ if environ is None else environ).get(
        "SGLANG_CACHE_DIT_ENABLED", "false"))


def env_settings(environ: Mapping[str, str] | None = None, secondary: bool = False) -> dict[str, Any]:
    """SGLang's knobs from ``SGLANG_CACHE_DIT_*`` (``..._SECONDARY_*`` for Wan2.2's low-noise expert), its defaults else."""
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for suffix, (knob, default) in _ENV_KNOBS.items():
        name = ENV_PREFIX + ("SECONDARY_" if secondary else "") + suffix
        raw = environ.get(name)
        if raw is None and secondary:  # SGLang has secondary variables for the DBCache knobs only
            raw = environ.get(ENV_PREFIX + suffix)
        out[knob] = default if raw is None else _parse(name, raw, KNOBS[knob])
    for suffix, (key, default) in _ENV_SCM.items():
        raw = environ.get(ENV_PREFIX + suffix)
        out[key] = default if raw is None or raw == "" else raw
    return _check_knobs(out, where="SGLANG_CACHE_DIT_*")


def file_settings(path: str) -> dict[str, Any]:
    """A ``--cache-dit-config`` file (YAML or JSON, cache-dit's format) as cache-dit's flat options."""
    import yaml

    file = Path(path).expanduser()
    try:
        data = yaml.safe_load(file.read_text())  # JSON is YAML
    except OSError as exc:
        raise UserError(f"cache_dit_config={path!r}: cannot read it ({exc.strerror or exc})",
                        param="cache.cache_dit_config") from None
    except yaml.YAMLError as exc:
        raise UserError(f"cache_dit_config={path!r} is neither YAML nor JSON: {exc}",
                        param="cache.cache_dit_config") from None
    if not isinstance(data, dict):
        raise UserError(f"cache_dit_config={path!r} must hold a mapping (cache-dit's cache_config), got "
                        f"{type(data).__name__}", param="cache.cache_dit_config")
    for key, flag in _NOT_TAKEN.items():
        if key in data:
            raise UserError(f"cache_dit_config={path!r} sets {key}: sgld sets it with its own options ({flag}); "
                            "keep only cache_config in the file", param="cache.cache_dit_config")
    flat = data["cache_config"] if "cache_config" in data else data
    if not isinstance(flat, dict):
        raise UserError(f"cache_dit_config={path!r}: cache_config must be a mapping", param="cache.cache_dit_config")
    return dict(flat)


def request_settings(params: Any) -> dict[str, Any]:
    """A request's ``cache_dit_params``, checked: SGLang's knob names only (``secondary`` nests the knobs)."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise UserError(f"cache_dit_params must be an object of knobs, got {type(params).__name__}",
                        param="cache_dit_params")
    unknown = sorted(set(params) - set(REQUEST_KEYS))
    if unknown:
        raise UserError(f"cache_dit_params: unknown key(s) {', '.join(unknown)} (known: {', '.join(REQUEST_KEYS)})",
                        param="cache_dit_params")
    out = _check_knobs({k: v for k, v in params.items() if k != "secondary"}, where="cache_dit_params")
    secondary = params.get("secondary")
    if secondary is not None:
        if not isinstance(secondary, Mapping) or set(secondary) - set(KNOBS):
            raise UserError(f"cache_dit_params.secondary must be an object of the knobs {', '.join(KNOBS)}",
                            param="cache_dit_params.secondary")
        out["secondary"] = _check_knobs(dict(secondary), where="cache_dit_params.secondary")
    return out


def merged(base: Mapping[str, Any], request: Mapping[str, Any], secondary: bool = False) -> dict[str, Any]:
    """The request's knobs over the base; Wan2.2's low-noise expert takes ``secondary`` over the request's own."""
    out = {**base, **{k: v for k, v in request.items() if k != "secondary"}}
    if secondary:
        out.update(request.get("secondary") or {})
    return out


def cache_options(settings: Mapping[str, Any], steps: int, separate_cfg: bool) -> dict[str, Any]:
    """cache-dit's flat options for one request of ``steps`` steps: SGLang's SCM keys become the step mask.

    ``separate_cfg``: the guided branches run as separate forwards (cond, then uncond), which cache-dit counts.
    """
    from cache_dit import steps_mask

    options = {k: v for k, v in settings.items() if k not in SCM_KEYS}
    preset = settings.get("scm_preset") or "none"
    compute, cache = _bins(settings.get("scm_compute_bins")), _bins(settings.get("scm_cache_bins"))
    if (compute is None) != (cache is None):
        raise UserError("scm_compute_bins and scm_cache_bins go together: give both or neither",
                        param="cache_dit_params")
    if compute is not None or preset != "none":
        try:
            options["steps_computation_mask"] = steps_mask(compute_bins=compute, cache_bins=cache, total_steps=steps,
                                                           mask_policy=preset if preset != "none" else "medium")
        except (AssertionError, ValueError) as exc:
            raise UserError(f"cache-dit step mask for {steps} steps: {exc}", param="cache_dit_params") from None
        options["steps_computation_policy"] = settings.get("scm_policy") or "dynamic"
    options["num_inference_steps"] = steps
    options["enable_separate_cfg"] = separate_cfg
    return options


def _bins(value: Any) -> list[int] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = value.split(",")
    try:
        return [int(x) for x in value]
    except (TypeError, ValueError):
        raise UserError(f"cache-dit SCM bins must be integers, got {value!r}", param="cache_dit_params") from None


def _check_knobs(knobs: dict[str, Any], where: str) -> dict[str, Any]:
    for key, value in knobs.items():
        kind = KNOBS.get(key)
        if kind is None:
            if key == "scm_preset" and value not in SCM_PRESETS:
                raise UserError(f"{where}: scm_preset={value!r} is not one of {', '.join(SCM_PRESETS)}",
                                param="cache_dit_params")
            if key == "scm_policy" and value not in ("dynamic", "static"):
                raise UserError(f"{where}: scm_policy={value!r} is not dynamic or static", param="cache_dit_params")
            continue
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            raise UserError(f"{where}: {key}={value!r} must be {kind.__name__}", param="cache_dit_params")
    if knobs.get("enable_taylorseer") and knobs.get("enable_dmd"):
        raise UserError(f"{where}: enable_taylorseer and enable_dmd are one calibrator slot: choose one",
                        param="cache_dit_params")
    return knobs


def _parse(name: str, raw: str, kind: type) -> Any:
    if kind is bool:
        return _parse_bool(name, raw)
    try:
        return kind(raw)
    except ValueError:
        raise UserError(f"{name}={raw!r} must be {kind.__name__}", param=name) from None


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise UserError(f"{name}={raw!r} must be true or false", param=name)

