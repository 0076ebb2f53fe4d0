"""SGLang's diffusion command-line flags, read by AST from the wheel's sources (nothing of SGLang is imported).

``serve`` takes ``ServerArgs.add_cli_args`` and what it calls (the disaggregation mixin, Nunchaku's SVDQuant
args, ``PipelineConfig.add_cli_args`` with the VAE / DiT / T5 configs under their prefixes) plus ``cli/serve.py``'s
``--config``; ``generate`` takes all of those and ``SamplingParams.add_cli_args`` plus ``cli/generate.py``'s own.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Callable

ROOT = "sglang/multimodal_gen/"
FILES = {
    "ServerArgs": ROOT + "runtime/server_args/server_args.py",
    "disagg": ROOT + "runtime/server_args/disagg.py",
    "NunchakuSVDQuantArgs": ROOT + "configs/quantization/nunchaku.py",
    "PipelineConfig": ROOT + "configs/pipeline_configs/base.py",
    "DiTConfig": ROOT + "configs/models/dits/base.py",
    "VAEConfig": ROOT + "configs/models/vaes/base.py",
    "T5Config": ROOT + "configs/models/encoders/t5.py",
    "SamplingParams": ROOT + "configs/sample/sampling_params.py",
    "generate": ROOT + "runtime/entrypoints/cli/generate.py",
}


@dataclass(frozen=True)
class Flag:
    """One SGLang flag: its spellings, how it takes a value, and where SGLang defines it."""

    names: tuple[str, ...]
    action: str  # "" (a value), "StoreBoolean" (optional true/false), "store_true", ...
    nargs: str
    origin: str

    @property
    def takes_value(self) -> bool:
        return self.action not in ("store_true", "store_false", "StoreBoolean")


def _find(tree: ast.AST, cls: str | None, func: str) -> ast.FunctionDef:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and (cls is None or node.name == cls):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == func:
                    return item
        if cls is None and isinstance(node, ast.FunctionDef) and node.name == func:
            return node
    raise KeyError(f"{cls}.{func}")


def _render(node: ast.AST, env: dict[str, str]) -> str:
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(str(v.value) if isinstance(v, ast.Constant) else _render(v.value, env) for v in node.values)
    if isinstance(node, ast.Name):
        return env.get(node.id, "")
    return ast.unparse(node)


def _walk(func: ast.FunctionDef, env: dict[str, str], origin: str, read: Callable[[str], str], out: list[Flag]) -> None:
    # (owner expression, method) -> (FILES key, class) of the add_cli_args calls SGLang's parser makes.
    nested = {("ServerArgs", "add_disagg_cli_args"): ("disagg", "DisaggServerArgsMixin"),
              ("NunchakuSVDQuantArgs", "add_cli_args"): ("NunchakuSVDQuantArgs", "NunchakuSVDQuantArgs"),
              ("PipelineConfig", "add_cli_args"): ("PipelineConfig", "PipelineConfig"),
              ("VAEConfig", "add_cli_args"): ("VAEConfig", "VAEConfig"),
              ("DiTConfig", "add_cli_args"): ("DiTConfig", "DiTConfig"),
              ("T5Config", "add_cli_args"): ("T5Config", "T5Config")}
    for node in ast.walk(func):
        if not isinstance(node, ast.Call):
            continue
        method = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if method == "add_argument":
            names = tuple(_render(a, env) for a in node.args)
            keywords = {k.arg: k.value for k in node.keywords}
            action = keywords.get("action")
            action_name = "" if action is None else (action.value if isinstance(action, ast.Constant) else ast.unparse(action))
            nargs = keywords.get("nargs")
            out.append(Flag(names, action_name, "" if nargs is None else _render(nargs, env), origin))
        elif isinstance(node.func, ast.Attribute) and (ast.unparse(node.func.value), method) in nested:
            key, cls = nested[(ast.unparse(node.func.value), method)]
            if key == origin == "ServerArgs" and method == "add_cli_args":
                continue
            prefix = next((_render(k.value, env) for k in node.keywords if k.arg == "prefix"), "")
            sub_env = {"prefix": prefix, "prefix_with_dot": f"{prefix}." if prefix.strip() else ""}
            _walk(_find(ast.parse(read(FILES[key])), cls, method), sub_env, key, read, out)


def serve_flags(read: Callable[[str], str]) -> list[Flag]:
    """Every flag ``sglang serve`` (diffusion) takes; ``read(path)`` gives a file of the wheel."""
    out: list[Flag] = [Flag(("--config",), "", "", "cli/serve.py")]
    _walk(_find(ast.parse(read(FILES["ServerArgs"])), "ServerArgs", "add_cli_args"), {}, "ServerArgs", read, out)
    # PipelineConfig repeats --model-path for its own parser; ServerArgs already has it.
    return [f for f in out if not (f.origin == "PipelineConfig" and f.names == ("--model-path",))]


def generate_flags(read: Callable[[str], str]) -> list[Flag]:
    """The flags ``sglang generate`` takes beyond ``serve``'s: the sampling parameters and generate's own."""
    out: list[Flag] = []
    _walk(_find(ast.parse(read(FILES["SamplingParams"])), "SamplingParams", "add_cli_args"), {}, "SamplingParams",
          read, out)
    tree = ast.parse(read(FILES["generate"]))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"
                and node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("--")):
            keywords = {k.arg: k.value for k in node.keywords}
            action = keywords.get("action")
            out.append(Flag(tuple(_render(a, {}) for a in node.args),
                            "" if action is None else _render(action, {}), "", "cli/generate.py"))
    return out
