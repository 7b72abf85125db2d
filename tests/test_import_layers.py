"""Imports go one way: cli → matrix → pipeline → targets → shared pieces, with no cycles.

For the layers every ``import segexport...`` in the package counts, lazy ones inside
functions too: a lazy import is still an arrow a reader must follow. Cycles are looked
for among the imports that run when a module is imported (its top level): those are
the ones that can fail on a half-initialised module. ``TYPE_CHECKING`` imports are for
type checkers only and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import segexport

ROOT = Path(__file__).resolve().parents[1]
#: Source folders and the package names they install as (pyproject's package-dir).
SOURCES = {"segexport": ROOT / "segexport", "segexport.arch": ROOT / "arch", "segexport.targets": ROOT / "targets",
           "segexport.calibration": ROOT / "calibration"}  # fmt: skip
#: Layer of each top-level part of the package; a module may import its own layer or lower ones only.
LAYERS: dict[str, int] = {
    "segexport.cli": 5,
    "segexport.matrix": 4,
    "segexport.pipeline": 3,
    "segexport.bench": 3,
    "segexport.evaluate": 3,
    "segexport.locate": 3,
    "segexport.targets": 2,
}
SHARED = 1  # parity, calibration, bundle, arch, errors, names, ... : what every layer above may use


def module_name(path: Path) -> str:
    for package, folder in SOURCES.items():
        if path.is_relative_to(folder) and (package != "segexport" or not any(path.is_relative_to(f) for p, f in SOURCES.items() if p != package)):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            return ".".join([package, *parts])
    raise AssertionError(path)


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    return LAYERS[best] if best else SHARED


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _in_function(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return True
    return False


def imports_of(path: Path, module: str, *, top_level: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if _in_type_checking(node, parents) or (top_level and _in_function(node, parents)):
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("segexport")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("segexport"):
                found.add(target)
    return found - {module}


def graph(*, top_level: bool = False) -> dict[str, set[str]]:
    files = {p for folder in SOURCES.values() for p in folder.rglob("*.py")}
    return {module_name(p): imports_of(p, module_name(p), top_level=top_level) for p in sorted(files)}


def test_the_package_is_imported_from_this_checkout():
    assert Path(segexport.__file__).resolve().parent == SOURCES["segexport"]


def test_no_import_points_up_a_layer():
    upward = sorted(
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in graph().items()
        for target in targets
        if layer(target) > layer(module)
    )
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    edges = graph(top_level=True)
    known = set(edges)

    def resolve(target: str) -> str | None:  # "segexport.targets.base" or a name inside a module
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    adjacency = {m: {r for t in ts if (r := resolve(t)) and r != m and not m.startswith(r + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(adjacency.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(adjacency):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("path", ["segexport/cli/__init__.py", "segexport/pipeline.py"])
def test_the_checker_sees_lazy_imports(path):
    """The arrows counted include imports inside functions (the CLI imports the pipeline lazily)."""
    module = module_name(ROOT / path)
    assert imports_of(ROOT / path, module)
