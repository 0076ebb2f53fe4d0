"""Stand-in for SGLang's model registry: which pipeline config (and so which task type) serves a model path.

The real registry imports every pipeline config (torch, model code) and reads ``model_index.json`` from the Hub
for unknown paths. This one reads the same table by AST from the wheel's ``configs/pipeline_configs/*.py``
sources: each ``register_configs(hf_model_paths=[...], pipeline_config_cls=C, model_detectors=[lambda ...])``
call, and each config class's ``task_type`` (inherited through its bases). Paths resolve as SGLang resolves
them: the exact repo id, then the longest registered short name contained in the path, then the detectors.
``ALIASES`` maps a tiny sgld model's name to the SGLang repo id it stands for in the suite.
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Callable, Optional

from sglang.multimodal_gen.configs.task_type import ModelTaskType

SOURCES: dict[str, str] = {}  # file name -> source of the wheel's configs/pipeline_configs/*.py (configure)
ALIASES: dict[str, str] = {}  # a tiny model's name -> the SGLang repo id it stands for


def configure(sources: dict[str, str], aliases: dict[str, str]) -> None:
    """Give the registry the wheel's pipeline-config sources and the suite's name aliases."""
    SOURCES.clear()
    SOURCES.update(sources)
    ALIASES.clear()
    ALIASES.update(aliases)
    _TABLE.clear()


@dataclasses.dataclass
class PipelineConfigInfo:
    """The resolved pipeline config class: its name and task type (what the harness reads)."""

    name: str
    task_type: ModelTaskType


@dataclasses.dataclass
class ModelInfo:
    """What ``get_model_info`` answers; the harness reads ``pipeline_config_cls.task_type``."""

    pipeline_config_cls: PipelineConfigInfo
    pipeline_cls: object = None
    sampling_param_cls: object = None


_TABLE: dict[str, tuple] = {}


def _table() -> tuple[dict[str, str], list[tuple[Callable[[str], bool], str]], dict[str, tuple[list[str], Optional[str]]]]:
    if not _TABLE:
        paths: dict[str, str] = {}
        detectors: list[tuple[Callable[[str], bool], str]] = []
        classes: dict[str, tuple[list[str], Optional[str]]] = {}
        for name in sorted(SOURCES):
            for node in ast.walk(ast.parse(SOURCES[name])):
                if isinstance(node, ast.ClassDef):
                    classes[node.name] = ([ast.unparse(b).split(".")[-1] for b in node.bases], _task_of(node))
                elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register_configs":
                    _register(node, paths, detectors)
        _TABLE["table"] = (paths, detectors, classes)
    return _TABLE["table"]


def _task_of(node: ast.ClassDef) -> Optional[str]:
    for statement in node.body:
        target = statement.target if isinstance(statement, ast.AnnAssign) else (
            statement.targets[0] if isinstance(statement, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "task_type" and getattr(statement, "value", None) is not None:
            return ast.unparse(statement.value).split(".")[-1]
    return None


def _register(call: ast.Call, paths: dict, detectors: list) -> None:
    keywords = {k.arg: k.value for k in call.keywords}
    config = ast.unparse(keywords["pipeline_config_cls"]) if "pipeline_config_cls" in keywords else None
    if isinstance(keywords.get("hf_model_paths"), ast.List):
        for item in keywords["hf_model_paths"].elts:
            if isinstance(item, ast.Constant):
                paths[item.value] = config
    if isinstance(keywords.get("model_detectors"), ast.List):
        for item in keywords["model_detectors"].elts:
            try:  # detectors are lambdas over the lower-cased path; one naming a helper function is left out
                detectors.append((eval(compile(ast.Expression(item), "detector", "eval"), {}), config))  # noqa: S307
            except Exception:  # noqa: BLE001
                pass


def _task(config: str, classes: dict) -> ModelTaskType:
    seen: set[str] = set()
    while config in classes and config not in seen:
        seen.add(config)
        bases, task = classes[config]
        if task:
            return ModelTaskType[task]
        config = bases[0] if bases else None
    return ModelTaskType.I2I  # PipelineConfig's own default


def get_model_info(model_path: str, backend=None, model_id: Optional[str] = None) -> Optional[ModelInfo]:
    """The pipeline config serving ``model_path`` (a repo id or an alias), None when SGLang knows no such model."""
    paths, detectors, classes = _table()
    model_path = ALIASES.get(model_path, model_path)
    config = paths.get(model_path)
    if config is None:
        short = model_path.rstrip("/").split("/")[-1].lower()
        config = next((paths[hf] for hf in sorted(paths, key=len, reverse=True)
                       if hf.rstrip("/").split("/")[-1].lower() in short), None)
    if config is None:
        for detector, candidate in detectors:
            try:
                if detector(model_path.lower()):
                    config = candidate
                    break
            except Exception:  # noqa: BLE001 - a detector that needs more than the path
                continue
    if config is None:
        return None
    return ModelInfo(PipelineConfigInfo(config, _task(config, classes)))


def get_pipeline_config_classes(pipeline_class_name: str):
    """SGLang's per-pipeline config lookup; the suite's cases never need it."""
    return None
