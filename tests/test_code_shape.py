"""The code stays readable: no function over 80 lines, and imports at module top unless a
comment beside one inside a function says why (a heavy or order-sensitive dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("medisee", "training", "monailabel_app", "MediSeeSlicer", "benchmarks")
MAX_LINES = 80


def python_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in ROOT.joinpath(package).rglob("*.py"))


def functions(tree: ast.AST):
    return (node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))


def long_functions(source: str, limit: int = MAX_LINES) -> list[str]:
    return [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in functions(ast.parse(source))
            if node.end_lineno - node.lineno + 1 > limit]


def unexplained_imports(source: str) -> list[str]:
    """Imports inside function bodies without a comment: on their line, on another import
    of the lines just above them, or on a comment line above those."""
    lines = source.splitlines()
    found = []
    for function in functions(ast.parse(source)):
        for node in ast.walk(function):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                start = node.lineno - 1
                while start > 0 and lines[start - 1].strip().startswith(("import ", "from ")):
                    start -= 1
                block = lines[start:node.lineno]
                if not any("#" in line for line in block) and not lines[start - 1].strip().startswith("#"):
                    found.append(f"line {node.lineno} in {function.name}: {lines[node.lineno - 1].strip()}")
    return found


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_are_at_most_80_lines(path):
    assert long_functions(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_inside_functions_say_why(path):
    assert unexplained_imports(path.read_text(encoding="utf-8")) == []


def test_the_checks_catch_what_they_look_for():
    long = "def f():\n" + "    x = 1\n" * 80
    assert long_functions(long) == ["f (81 lines)"] and long_functions("def g():\n    pass\n") == []
    hidden = ("def f():\n    import json\n\n\ndef g():\n    import os  # needed late: why\n    import re\n\n\n"
              "def h():\n    # heavy: why\n    import csv\n    import io\n")
    assert unexplained_imports(hidden) == ["line 2 in f: import json"]
