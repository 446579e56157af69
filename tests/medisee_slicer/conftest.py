"""MediSeeLib is imported the way Slicer imports it: from the module folder, as a top-level package."""

from __future__ import annotations

import importlib
import sys
import types
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


@pytest.fixture
def module(monkeypatch):
    """MediSee.py with the real ``slicer`` (the slicer-core wheel: MRML and module logics) and ``vtk``;
    stand-ins only for ``qt`` and the application's ScriptedLoadableModule bases (Qt widgets, which
    need the Slicer application)."""
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest"):
        setattr(scripted, name, type(name, (), {"__init__": lambda self, *args: None}))
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", scripted)
    monkeypatch.setitem(sys.modules, "qt", types.ModuleType("qt"))
    monkeypatch.delitem(sys.modules, "MediSee", raising=False)
    return importlib.import_module("MediSee")
