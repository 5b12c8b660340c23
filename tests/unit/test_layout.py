"""The code's shape rules (README "Development"): one module per concept, small enough to read.

Every module under connector/ stays below 400 lines and no class grows past 200: when one does,
a concept is hiding inside it and wants a module (or a function) of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "connector"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 200


def test_the_package_is_where_the_rules_look() -> None:
    assert len(MODULES) > 20, PACKAGE


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_stays_below_400_lines(module: Path) -> None:
    lines = module.read_text(encoding="utf-8").count("\n")
    assert lines < MAX_MODULE_LINES, f"{module.relative_to(PACKAGE)}: {lines} lines"


def classes_over(limit: int, source: str) -> list[tuple[str, int]]:
    """(name, lines) of every class in `source` longer than `limit` lines."""
    sizes = (
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef)
    )
    return [(name, size) for name, size in sizes if size > limit]


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_class_grows_past_200_lines(module: Path) -> None:
    assert classes_over(MAX_CLASS_LINES, module.read_text(encoding="utf-8")) == []


def test_the_class_rule_sees_a_long_class() -> None:
    long_class = "class Big:\n" + "    x = 1\n" * MAX_CLASS_LINES
    assert classes_over(MAX_CLASS_LINES, long_class) == [("Big", MAX_CLASS_LINES + 1)]


def test_no_two_test_files_share_a_basename() -> None:
    """pytest imports test modules by basename (rootdir-relative, no __init__.py): a unit and an
    integration test of the same name make a whole-suite run stop at collection."""
    tests = Path(__file__).resolve().parents[1]
    names = [path.name for path in tests.rglob("test_*.py")]
    assert sorted({name for name in names if names.count(name) > 1}) == []
