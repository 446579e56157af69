"""Studies for the server tests: two CT studies as NIfTI (the local datastore) and one as a
DICOM series (read by path, or stored in Orthanc)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.studies import write_phantom, write_phantom_series


@pytest.fixture(scope="session")
def studies_template(tmp_path_factory) -> Path:
    """Copy ``studies`` before a test writes labels into it."""
    root = tmp_path_factory.mktemp("studies-template")
    (root / "studies").mkdir()
    write_phantom(11, root / "studies", "ct-a")
    write_phantom(12, root / "studies", "ct-b")
    write_phantom_series(13, root / "dicom" / "ct-c")
    return root
