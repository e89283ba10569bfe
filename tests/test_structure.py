"""The package's rooms stay in order: no import cycles, no import that runs up the layers,
search never imports training, and no function grows past 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "elastic_nas"
# Lowest first; a module may import its own layer or lower ones, never a higher one.
LAYERS = [{"errors", "io", "config", "allocator"}, {"spaces", "data", "elastic"}, {"train", "search", "cluster"},
          {"pipeline", "cli", "__main__"}]
LAYER = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module -> the package's modules it imports (any depth: lazy imports count too)."""
    modules = {module_name(f): f for f in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("elastic_nas"):
                    found.add(t)
        edges[name] = found
    return edges


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_runs_up_the_layers_and_search_does_not_import_train():
    bad = [f"{a} -> {b}" for a, bs in imports().items() for b in bs
           if room(a) in LAYER and room(b) in LAYER and LAYER[room(b)] > LAYER[room(a)]]
    bad += [f"{a} -> {b}" for a, bs in imports().items() for b in bs if room(a) == "search" and room(b) == "train"]
    assert not bad, bad
    assert set(LAYER) >= {room(m) for m in imports() if room(m) != "__init__"}, "a new room needs a layer"


def test_no_import_cycles():
    """Package ``__init__`` re-exports aside, following imports never leads back."""
    edges = imports()
    init = {m for m in edges if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(edges[m] - init):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [m, n]))
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [])


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
