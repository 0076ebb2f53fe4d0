"""The package layout docs/architecture.md promises: no import cycles, and each layer imports only the ones above it.

Imports are read from the source (lazy, function-level ones included), so a cycle hidden inside a
function body counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Layer of each package or top-level module: a module may import its own layer (without cycles) and lower numbers.
LAYERS = {
    "sgld.errors": 0, "sgld.request": 0,
    "sgld.config": 1,
    "sgld.checks": 2, "sgld.families": 2,
    "sgld.models": 3, "sgld.parallel": 3,
    "sgld.stages": 4,
    "sgld.pipelines": 5,
    "sgld.diffusers_patches": 6,
    "sgld.api": 7, "sgld.run_config": 7, "sgld.batch": 7, "sgld.runner": 7, "sgld.outputs": 7, "sgld.report": 7,
    "sgld": 8, "server": 8,
    "sgld.cli": 9, "sgld.generate": 9,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in list((REPO / "sgld").rglob("*.py")) + list((REPO / "server").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the sgld/server modules it imports anywhere in its body (TYPE_CHECKING blocks excluded)."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                     and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in names:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        edges[name] = targets
    return edges


def _layer_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return key, LAYERS[key]
    raise AssertionError(f"{module} has no layer in tests/test_layout.py (add it, and to docs/architecture.md)")


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles_between_modules_or_packages():
    edges = _imports(_modules())
    assert _cycle(edges) is None, " -> ".join(_cycle(edges))
    packages: dict[str, set[str]] = {}
    for module, targets in edges.items():
        for target in targets:
            a, b = _layer_of(module)[0], _layer_of(target)[0]
            if a != b:
                packages.setdefault(a, set()).add(b)
    assert _cycle(packages) is None, " -> ".join(_cycle(packages))


def test_each_layer_imports_only_its_own_and_the_layers_above_it():
    wrong = []
    for module, targets in _imports(_modules()).items():
        group, layer = _layer_of(module)
        for target in targets:
            target_group, target_layer = _layer_of(target)
            if target_layer > layer:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong
