"""Studies for the server tests: two CT studies as NIfTI (the local datastore) and one as a
DICOM series (read by path, or stored in Orthanc)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.studies import write_study_set


@pytest.fixture(scope="session")
def studies_template(tmp_path_factory) -> Path:
    """Copy ``studies`` before a test writes labels into it."""
    return write_study_set(tmp_path_factory.mktemp("studies-template"))
