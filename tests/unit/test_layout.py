"""The code's shape rules (README "Development"): one module per concept, small enough to read.

Every module under connector/ stays below 400 lines and no class grows past 200: when one does,
a concept is hiding inside it and wants a module (or a function) of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
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


# Imports: the layers are import-linter's contracts (pyproject.toml [tool.importlinter], run by
# `make lint` and `make test`); what a layers contract cannot see is a cycle inside one package.


def import_cycles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """One cycle per strongly connected component of `graph` (modules each reachable from the
    other), each as the modules along it, first module repeated last; sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm; the package is a few dozen modules deep
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component: set[str] = set()
            while module not in component:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
            if len(component) > 1:
                components.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    cycles = []
    for component in components:
        start = min(component)
        step = min(set(graph.find_modules_directly_imported_by(start)) & component)
        cycles.append((start, *graph.find_shortest_chain(importer=step, imported=start)))
    return sorted(cycles)


def test_connector_has_no_import_cycle() -> None:
    """TYPE_CHECKING imports count (grimp's default): a cycle through one is still a tangle."""
    graph = grimp.build_graph("connector", cache_dir=None)
    cycles = import_cycles(graph)
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_cycle_check_sees_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "tangled_for_test_layout"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from tangled_for_test_layout import b\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\n\n"
        "if TYPE_CHECKING:\n    from tangled_for_test_layout import c\n"
    )
    (package / "c.py").write_text("import tangled_for_test_layout.a\n")
    (package / "d.py").write_text("import tangled_for_test_layout.a\n")  # into it, not in it
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("tangled_for_test_layout", cache_dir=None)
    assert import_cycles(graph) == [
        (
            "tangled_for_test_layout.a",
            "tangled_for_test_layout.b",
            "tangled_for_test_layout.c",
            "tangled_for_test_layout.a",
        )
    ]


PACKAGES = sorted({module.parent for module in MODULES})


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_every_package_says_what_it_is(package: Path) -> None:
    init = package / "__init__.py"
    assert init.is_file(), f"{package.relative_to(PACKAGE.parent)} has no __init__.py"
    assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), f"{init}: no docstring"


def test_the_import_contracts_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    """The contracts `make lint` runs (lint-imports), in-process. Not through importlinter.cli:
    that one reconfigures logging (dictConfig disables every existing logger)."""
    from importlinter import api  # noqa: F401 -- configures import-linter (contract types, I/O)
    from importlinter.application import use_cases

    kept = use_cases.lint_imports(
        config_filename=str(PACKAGE.parent / "pyproject.toml"), cache_dir=None, no_logo=True
    )
    assert kept, capsys.readouterr().out
