"""The package layout docs/architecture.md promises: no import cycles, and each layer imports only the ones above it.

Imports are read from the source (lazy, function-level ones included), so a cycle hidden inside a
function body counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ARCHITECTURE = REPO / "docs" / "architecture.md"


def _layer_table() -> list[tuple[list[str], str]]:
    """docs/architecture.md's layer table, top to bottom: (the row's packages/modules, its "may import" cell)."""
    rows, in_table = [], False
    for line in ARCHITECTURE.read_text().splitlines():
        if line.startswith("| layer | owns | may import |"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break
        if in_table and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            names = [part.strip("`").removesuffix("/").removesuffix(".py").replace("/", ".")
                     for part in cells[0].split(", ")]
            rows.append(([n.removesuffix(".__init__") for n in names], cells[-1]))
    assert rows, "docs/architecture.md has no layer table"
    return rows


# Layer of each package or top-level module, read from the docs' table (row order): a module may import its own
# layer (without cycles) and lower numbers.
LAYERS = {name: index for index, (names, _) in enumerate(_layer_table()) for name in names}


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
    raise AssertionError(f"{module} has no row in docs/architecture.md's layer table (add it)")


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


def _allowed_imports() -> dict[str, set[str]]:
    """Each layer-table entry -> the entries it may import: its row's "may import" cell, taken transitively
    ("everything above": every earlier row; "sgld": every sgld entry)."""
    rows = _layer_table()
    short = {name.rpartition(".")[2]: name for names, _ in rows for name in names if name != "sgld"}
    direct: dict[str, set[str]] = {}
    for index, (names, cell) in enumerate(rows):
        if cell == "everything above":
            allowed = {n for earlier, _ in rows[:index] for n in earlier}
        elif cell == "nothing of sgld":
            allowed = set()
        elif cell == "sgld":
            allowed = {n for row, _ in rows for n in row if n == "sgld" or n.startswith("sgld.")}
        else:
            unknown = [word for word in cell.split(", ") if word not in short]
            assert not unknown, f"docs/architecture.md's layer table names {unknown}, which is no row of it"
            allowed = {short[word] for word in cell.split(", ")}
        for name in names:
            direct[name] = allowed | set(names)
    closed = {name: set(allowed) for name, allowed in direct.items()}
    changed = True
    while changed:
        changed = False
        for name, allowed in closed.items():
            grown = allowed.union(*(closed[other] for other in allowed if other in closed))
            if grown != allowed:
                closed[name], changed = grown, True
    return closed


def test_each_layer_imports_only_what_the_docs_table_says_it_may():
    """The "may import" column of docs/architecture.md's layer table is true (read transitively)."""
    allowed = _allowed_imports()
    wrong = []
    for module, targets in _imports(_modules()).items():
        group = _layer_of(module)[0]
        for target in targets:
            target_group = _layer_of(target)[0]
            if target_group not in allowed[group]:
                wrong.append(f"{module} imports {target} ({target_group} is not in {group}'s row)")
    assert not wrong, wrong


def test_no_script_module_shadows_an_installed_package():
    """``python bench/x.py`` puts bench/ first on sys.path: a module there named like an installed package (or a
    standard-library module) would be imported instead of it (bench/kernels.py once hid transformers' ``kernels``)."""
    import importlib.metadata
    import sys

    taken = set(importlib.metadata.packages_distributions()) | set(sys.stdlib_module_names)
    clashes = [f"{path.relative_to(REPO)} shadows `{path.stem}`" for folder in ("bench",)
               for path in sorted((REPO / folder).glob("*.py")) if path.stem in taken and path.stem != "__init__"]
    assert not clashes, clashes


def test_the_development_guide_names_every_test_file():
    """docs/development.md's test table says what each test file holds: a new file gets its row."""
    guide = (REPO / "docs" / "development.md").read_text()
    missing = [str(path.relative_to(REPO)) for path in sorted((REPO / "tests").rglob("test_*.py"))
               if f"`{path.relative_to(REPO)}`" not in guide]
    assert not missing, f"docs/development.md's Tests table lacks {missing}"
