"""The code stays readable: thin node files, short functions, one-way imports in ml/.

Kedro's starters keep ``nodes.py`` thin and the logic in a library; a newcomer reads a
function of 80 lines in one screen. A longer function is allowed only where its
docstring says why (a line holding ``LONG_BECAUSE``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src/distillery"
ML = SRC / "ml"
MAX_NODE_FILE_LINES = 300
MAX_FUNCTION_LINES = 80
LONG_BECAUSE = "Long because:"

# What each ml/ subpackage may import from ml/: the layers of docs/architecture.md,
# each using only those below it; metrics is a leaf everyone may use.
BELOW = {
    "metrics": set(),
    "models": {"metrics"},
    "data": {"metrics", "models"},
    "train": {"metrics", "models", "data"},
    "compress": {"metrics", "models", "data", "train"},
    "serve": {"metrics", "models", "data", "train", "compress"},
    "report": {"metrics", "models", "data", "train", "compress", "serve"},
}
# The library never reaches up into the Kedro project.
NOT_FROM_ML = (
    "kedro",
    "distillery.pipelines",
    "distillery.hooks",
    "distillery.settings",
)


def _modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions longer than ``limit`` lines whose docstrings do not say why.

    Args:
        source: Python source.
        limit: Most lines from ``def`` to the function's last line.

    Returns:
        ``name (lines)`` of each such function, in source order.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        lines = node.end_lineno - node.lineno + 1
        if lines > limit and LONG_BECAUSE not in (ast.get_docstring(node) or ""):
            found.append(f"{node.name} ({lines})")
    return found


def imported_modules(source: str) -> set[str]:
    """Every module a source file imports, by its absolute name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_long_functions_are_found_unless_their_docstring_says_why() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(80))
    source = (
        f'def short():\n    """Short."""\n    return 1\n\n'
        f'def long():\n    """Does much."""\n{body}\n\n'
        f'def explained():\n    """Does much.\n\n    {LONG_BECAUSE} one graph.\n    """\n'
        f"{body}\n"
    )
    assert long_functions(source) == ["long (82)"]


@pytest.mark.parametrize(
    "path", sorted(SRC.glob("pipelines/*/nodes.py")), ids=lambda p: p.parent.name
)
def test_node_files_are_thin(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_NODE_FILE_LINES, f"{path.name}: {lines} lines"


@pytest.mark.parametrize(
    "path", _modules(SRC), ids=lambda p: p.relative_to(SRC).as_posix()
)
def test_functions_are_short(path: Path) -> None:
    assert not long_functions(path.read_text())


@pytest.mark.parametrize(
    "path", _modules(ML), ids=lambda p: p.relative_to(ML).as_posix()
)
def test_ml_imports_run_one_way_and_never_into_kedro(path: Path) -> None:
    layer = path.relative_to(ML).parts[0].removesuffix(".py")
    allowed = BELOW.get(layer, set(BELOW))  # ml/__init__.py sits above every layer
    imports = imported_modules(path.read_text())
    upward = {
        name
        for name in imports
        if name.startswith("distillery.ml.")
        and (used := name.split(".")[2]) != layer
        and used not in allowed
    }
    assert not upward, f"ml/{layer} imports a layer above it: {sorted(upward)}"
    into_kedro = {
        name for name in imports if name.startswith(NOT_FROM_ML) or name == "kedro"
    }
    assert not into_kedro, sorted(into_kedro)
