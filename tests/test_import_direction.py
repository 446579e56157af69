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


def library_parts_graph() -> dict[str, set[str]]:
    """medisee's parts (``medisee.data``, ``medisee.model``, ``medisee.study``, ...) -> the
    parts they import, function-level imports included."""
    graph: dict[str, set[str]] = {}
    for path in ROOT.joinpath("medisee").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
        part = ".".join(module.split(".")[:2])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                targets = [".".join(base + ([node.module] if node.module else [])) + f".{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph.setdefault(part, set()).update(
                ".".join(t.split(".")[:2]) for t in targets if t.startswith("medisee."))
    return {part: targets - {part} for part, targets in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Edges a -> b where b also reaches a."""
    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            for nxt in graph.get(stack.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False
    return sorted((a, b) for a, targets in graph.items() for b in targets if reaches(b, a))


def test_the_library_parts_import_each_other_without_cycles():
    """Data never climbs back up (data -> study -> predictor -> data), nor the loss into a
    model head (model -> losses -> model)."""
    graph = library_parts_graph()
    assert "medisee.study" not in graph["medisee.data"] and "medisee.model" not in graph["medisee.losses"]
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [("a", "b"), ("b", "c"), ("c", "a")]
