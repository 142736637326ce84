"""progress/ uses other packages through their public names only: no underscored import or attribute."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "progress"

# Underscored names that are documented public API of the package that owns them.
DOCUMENTED = {
    "_meta": "Django's Model _meta API (docs: ref/models/meta)",
}


def private(name: str) -> bool:
    """Whether a name is private by Python's convention (``_x``, not ``__x__``)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def sources() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))}


def own_names(trees: dict[Path, ast.Module]) -> set[str]:
    """Every name progress/ itself defines: functions, classes, attributes set on self, slots, variables."""
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
            ):
                names.add(node.attr)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
            ):
                names.update(
                    e.value
                    for e in ast.walk(node.value)
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                )
    return names


def foreign_uses(path: Path, tree: ast.Module, own: set[str]) -> list[str]:
    """Each use of another package's underscored name in one module, as "file:line: what"."""
    found: list[str] = []
    foreign_bindings: set[str] = set()

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and not (node.module or "").startswith("progress")
        ):
            if any(private(part) for part in (node.module or "").split(".")):
                report(node, f"from {node.module} import")
            for alias in node.names:
                foreign_bindings.add(alias.asname or alias.name)
                if private(alias.name):
                    report(node, f"from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                foreign_bindings.add(alias.asname or alias.name.split(".")[0])
                if any(private(part) for part in alias.name.split(".")):
                    report(node, f"import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in DOCUMENTED:
            on_module = isinstance(node.value, ast.Name) and node.value.id in foreign_bindings
            if on_module or node.attr not in own:
                report(node, f".{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and private(node.args[1].value)
            and node.args[1].value not in own
        ):
            report(node, f"{node.func.id}(..., {node.args[1].value!r})")
    return sorted(found, key=lambda use: int(use.split(":")[1]))


def test_progress_uses_no_underscored_foreign_name():
    trees = sources()
    own = own_names(trees)
    found = [use for path, tree in trees.items() for use in foreign_uses(path, tree, own)]
    assert found == []


def test_checker_finds_private_import_and_attribute(tmp_path):
    source = (
        "from channels_redis.utils import _wrap_close\n"
        "import asyncio\n"
        "asyncio._get_running_loop()\n"
        "def f(layer):\n"
        "    layer._get_layer()\n"
        "    getattr(layer, '_layers')\n"
        "    route._asgi_single_callable = True\n"
    )
    path = PACKAGE / "example.py"
    found = foreign_uses(path, ast.parse(source), own=set())
    assert [use.split(": ", 1)[1] for use in found] == [
        "from channels_redis.utils import _wrap_close",
        "._get_running_loop",
        "._get_layer",
        "getattr(..., '_layers')",
        "._asgi_single_callable",
    ]


def test_checker_allows_own_underscored_names():
    source = (
        "class A:\n"
        "    def __init__(self):\n"
        "        self._x = 1\n"
        "    def _helper(self):\n"
        "        return self._x\n"
        "_CACHE = {}\n"
        "def f(task):\n"
        "    return task._meta, A()._helper(), _CACHE\n"
    )
    tree = ast.parse(source)
    assert foreign_uses(PACKAGE / "example.py", tree, own_names({PACKAGE / "example.py": tree})) == []
