"""MediSeeLib is imported the way Slicer imports it: from the module folder, as a top-level package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "MediSeeSlicer"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from tests.support.studies import write_study_set  # noqa: E402


@pytest.fixture(scope="session")
def slicer_studies(tmp_path_factory) -> Path:
    """Two NIfTI studies (the datastore) and one DICOM series read by its server-side path."""
    return write_study_set(tmp_path_factory.mktemp("slicer-studies"))
