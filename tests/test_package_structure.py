"""The package's import structure, read from its source: no import circle between its modules and
no module importing another's private names. Every import counts, wherever it is written: at
the top, inside a function (a lazy import), under ``TYPE_CHECKING``, and a module named in a
string (``importlib.import_module``, a ``"module:function"`` handler, a lazy export table)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_pycontain"


def module_names() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = module_names()


def imports_of(name: str, path: Path) -> tuple[set[str], list[str]]:
    """The package modules ``name`` depends on, and the private names it imports (as
    ``module._name``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: set[str] = set()
    private: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:  # a module: ``from . import state``
                    edges.add(f"{source}.{alias.name}")
                elif source in MODULES:
                    edges.add(source)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append(f"{source}.{alias.name}")
        else:
            edges.update(named_in_strings(node))
    edges.discard(name)
    return edges, private


def named_in_strings(node: ast.AST) -> set[str]:
    """Modules imported by name at run time: ``importlib.import_module("m")``, a handler
    ``"m:function"``, a lazy export table's ``("m", "Name")``. (A ``python -m m`` argv runs in
    another process: no import of ours.)"""
    strings: list[str] = []
    if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
        strings = [a.value for a in node.args[:1] if isinstance(a, ast.Constant)]
    elif isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:
        strings = [node.value.partition(":")[0]]
    elif isinstance(node, ast.Tuple) and len(node.elts) == 2 and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        strings = [node.elts[0].value]  # type: ignore[attr-defined]
    return {m for m in strings if isinstance(m, str) and m in MODULES}


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def test_the_walk_sees_the_package() -> None:
    assert "pytest_pycontain.native.engine" in MODULES
    # a lazy import (inside a method) and a module named in a string both count
    assert "pytest_pycontain.build" in GRAPH["pytest_pycontain.native.engine"][0]
    assert "pytest_pycontain.engine" in GRAPH["pytest_pycontain"][0]  # the lazy export table
    assert "pytest_pycontain.native.netrecords" in GRAPH["pytest_pycontain.native.state"][0]


def find_circle(graph: dict[str, tuple[set[str], list[str]]]) -> list[str] | None:
    """One circle of imports (its modules in order, the first again at the end), or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name):], name]
        if name in done:
            return None
        for target in sorted(graph[name][0]):
            circle = visit(target, [*path, name])
            if circle:
                return circle
        done.add(name)
        return None

    for name in sorted(graph):
        circle = visit(name, [])
        if circle:
            return circle
    return None


def test_a_circle_is_found_and_shown() -> None:
    graph = {"a": ({"b"}, []), "b": ({"c"}, []), "c": ({"a"}, []), "d": ({"a"}, [])}
    assert find_circle(graph) == ["a", "b", "c", "a"]
    assert find_circle({"a": ({"b"}, []), "b": (set(), [])}) is None


def test_no_import_circle() -> None:
    circle = find_circle(GRAPH)
    assert circle is None, "an import circle: " + " -> ".join(circle or ())


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_another_ones_private_names(name: str) -> None:
    assert GRAPH[name][1] == [], f"{name} imports private names: {GRAPH[name][1]}"
