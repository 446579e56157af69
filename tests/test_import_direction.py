"""Dependencies point one way: the server and the Slicer module on top, then training, then
the ``medisee`` model library, which imports none of the layers above it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABOVE_THE_LIBRARY = ("training", "monailabel_app", "MediSeeLib", "MediSeeSlicer", "slicer", "qt", "ctk")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_model_library_imports_nothing_above_it():
    offenders = {str(path.relative_to(ROOT)): sorted(name for name in imported_modules(path)
                                                     if name.split(".")[0] in ABOVE_THE_LIBRARY)
                 for path in ROOT.joinpath("medisee").rglob("*.py")}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_training_imports_neither_the_server_nor_slicer():
    offenders = {str(path.relative_to(ROOT)): sorted(name for name in imported_modules(path)
                                                     if name.split(".")[0] in ABOVE_THE_LIBRARY[1:])
                 for path in ROOT.joinpath("training").rglob("*.py")}
    assert {path: names for path, names in offenders.items() if names} == {}
