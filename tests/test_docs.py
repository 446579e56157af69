"""The architecture document stays an architecture document: short enough to read in one sitting."""

from __future__ import annotations

from pathlib import Path

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"


def test_the_architecture_document_is_under_200_lines():
    lines = ARCHITECTURE.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 200, f"docs/ARCHITECTURE.md has {len(lines)} lines: move details to docs/COMPONENTS.md"
