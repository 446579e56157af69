"""MediSeeLib is imported the way Slicer imports it: from the module folder, as a top-level package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "MediSeeSlicer"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from tests.support.studies import write_phantom, write_phantom_series  # noqa: E402


@pytest.fixture(scope="session")
def slicer_studies(tmp_path_factory) -> Path:
    """Two NIfTI studies (the datastore) and one DICOM series read by its server-side path."""
    root = tmp_path_factory.mktemp("slicer-studies")
    (root / "studies").mkdir()
    write_phantom(11, root / "studies", "ct-a")
    write_phantom(12, root / "studies", "ct-b")
    write_phantom_series(13, root / "dicom" / "ct-c")
    return root
