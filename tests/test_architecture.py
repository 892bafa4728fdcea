"""The package's shape, checked: no import cycle between modules, no import from a lower layer
into a higher one, and no source file over 500 lines.

Imports are read from the source (every ``import`` and ``from ... import`` of a ``facesearch``
module, also those inside functions and under ``TYPE_CHECKING``: a lazy import is still a
dependency). The layers, lowest first, are :data:`LAYERS`; a module may import its own layer
and the ones below it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "facesearch"
MAX_LINES = 500

#: the layers, lowest first: each entry names top-level modules or packages of ``facesearch``
LAYERS: list[set[str]] = [
    {"errors", "extras", "logs", "settings", "home", "metrics", "processes"},  # foundation: imports nothing above it
    {"models"},  # model packs, runtimes, calibration (the one threshold-from-rate rule)
    {"pipeline"},  # decode, detect, align, quality, embed, video, tracking
    {"catalog", "index"},  # where faces are kept: rows and vectors
    {"search", "ingest", "cluster"},  # the algorithms over them
    {"services", "readiness"},  # orchestration: the engine, subjects, clusters
    {"governance", "backup"},  # who may do what, recorded
    {"eval", "api", "cli", "__init__", "__main__"},  # the shells and the evaluation harness
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the facesearch modules it imports (resolved to the longest existing module name)."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if base.split(".")[0] == "facesearch":
                    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "facesearch"]
            for target in targets:
                found = resolve(target)
                if found and found != name:
                    edges[name].add(found)
    return edges


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    raise AssertionError(f"{module}: its top-level name {top!r} is in no layer of LAYERS: add it")


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _is_package_init_edge(a: str, b: str, modules: dict[str, Path]) -> bool:
    """A package's ``__init__`` re-exports its own submodules: that edge is not a dependency cycle."""
    return modules[a].name == "__init__.py" and b.startswith(a + ".")


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], dict[str, set[str]]]:
    modules = _modules()
    return modules, _imports(modules)


def test_the_import_reader_sees_imports(graph):
    """The checks below are only as good as the reader: it must see known imports, lazy ones too."""
    modules, edges = graph
    assert len(modules) > 50
    assert "facesearch.api.deps" in edges["facesearch.api.app"]
    assert "facesearch.governance.policy" in edges["facesearch.governance.service"]


def test_no_import_cycles(graph):
    modules, edges = graph
    pruned = {a: {b for b in bs if not _is_package_init_edge(a, b, modules)} for a, bs in edges.items()}
    assert _cycles(pruned) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_upward_imports(graph):
    _modules_, edges = graph
    upward = sorted(f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
                    for a, bs in edges.items() for b in bs if _layer(b) > _layer(a))
    assert upward == []


def test_every_module_has_a_layer(graph):
    modules, _edges = graph
    for name in modules:
        _layer(name)


def test_no_source_file_over_500_lines():
    long = sorted(f"{p.relative_to(SRC)}: {n} lines" for p in SRC.rglob("*.py")
                  if (n := len(p.read_text().splitlines())) > MAX_LINES)
    assert long == []
