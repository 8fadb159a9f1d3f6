"""The package's boundaries, checked from its source: no object reaches into another module's
objects' private attributes, and nothing in the project points outside the repository. (The
import structure has its own test: tests/test_package_structure.py.) docs/architecture.md draws
the rooms and what each may touch."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_pycontain"
# stdlib names whose leading underscore is their public spelling
PUBLIC_UNDERSCORED = {("os", "_exit"), ("sys", "_getframe"), ("sys", "_current_frames")}


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def private_names_defined(tree: ast.AST) -> set[str]:
    """Private names a module defines itself: its functions, classes, module and class
    attributes and ``self._x`` fields (a module's helpers may share its private names; other
    modules may not)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):  # module and class attributes
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            names.add(node.attr)
    return {name for name in names if is_private(name)}


def private_reaches(path: Path) -> list[str]:
    """``x._name`` where ``x`` is not ``self``/``cls`` and ``_name`` is not one of this
    module's own: another module's object's private attribute."""
    tree = ast.parse(path.read_text(), str(path))
    own = private_names_defined(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not is_private(node.attr):
            continue
        if node.attr in own:
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if isinstance(owner, ast.Name) and (owner.id, node.attr) in PUBLIC_UNDERSCORED:
            continue
        if (isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name)
                and owner.func.id == "super"):
            continue
        found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_object_reaches_into_another_objects_private_attributes() -> None:
    offences = [hit for path in modules() for hit in private_reaches(path)]
    assert offences == []


def test_the_reach_finder_finds_a_reach(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("class A:\n    def f(self, b):\n        self._ok = b._bad\n"
                      "        os._exit(0)\n        super()._fine()\n        b._ok = 1\n")
    assert private_reaches(source) == ["x.py:3: b._bad"]


def test_nothing_in_the_project_points_outside_the_repository() -> None:
    """The project documents itself (docs/, README, docstrings): no pointer to the team's own
    notes beside the checkout."""
    team_notes = "DESIGN" + ".md"
    root = PACKAGE.parent
    texts = [*root.glob("*.md"), *(root / "docs").rglob("*.md")]
    for folder in ("pytest_pycontain", "tests", "testenv", "bench", "examples"):
        texts += [p for p in (root / folder).rglob("*") if p.suffix in (".py", ".md", ".toml")]
    outside = [f"{path.relative_to(root)}:{number}" for path in texts
               for number, line in enumerate(path.read_text().splitlines(), 1)
               if team_notes in line]
    assert outside == []
