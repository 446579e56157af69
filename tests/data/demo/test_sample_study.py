"""The sample study a fresh server serves: DICOM and NIfTI copies of the CT must agree (the model must see the
same study through Orthanc and through the local datastore), and re-running must leave MONAI Label's files alone."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from medisee.cli import main
from medisee.data.demo import brain
from medisee.data.demo.sample_study import FIELD_OF_VIEW_Z, SampleStudy, build_sample_study
from medisee.imaging import read_image

SLICES = 10


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> SampleStudy:
    return build_sample_study(tmp_path_factory.mktemp("sample") / "out", seed=1, slices=SLICES)


def stats(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its inode and modification time: what a rewrite would change."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_layout_is_a_dicom_series_and_a_datastore_folder(study):
    assert study.written == (study.ct_dicom, study.ct_nifti, study.brain_nifti)
    assert sorted(p.name for p in study.out.iterdir()) == ["dicom", "studies"]  # no staging folder left behind
    assert sorted(p.name for p in study.studies.iterdir()) == ["brain-mni.nii.gz", "ct-phantom.nii.gz"]
    assert len(list(study.ct_dicom.glob("*.dcm"))) == SLICES


def test_dicom_series_reads_back_as_the_nifti(study):
    dicom, nifti = read_image(study.ct_dicom), read_image(study.ct_nifti)
    assert dicom.modality == "CT" and dicom.shape == nifti.shape == (SLICES, 160, 160)
    np.testing.assert_array_equal(dicom.array, nifti.array)
    np.testing.assert_allclose(dicom.spacing, (2.5, 2.5, FIELD_OF_VIEW_Z / SLICES), atol=1e-4)
    for key in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(dicom, key), getattr(nifti, key), atol=1e-4, err_msg=key)
    assert dicom.array.min() <= -900 and dicom.array.max() >= 200  # air and bone in HU


def test_brain_is_a_non_empty_volume(study):
    image = read_image(study.brain_nifti)
    assert image.is_volume and image.shape == brain.DEFAULT_SHAPE
    assert np.count_nonzero(image.array) > image.array.size // 10


def test_second_run_is_a_no_op(study):
    before = stats(study.out)
    again = build_sample_study(study.out, seed=1, slices=SLICES)
    assert again.written == () and stats(study.out) == before


def test_damaged_or_different_items_are_replaced_and_the_rest_kept(study, tmp_path):
    out = Path(shutil.copytree(study.out, tmp_path / "copy"))
    brain_before = stats(out / "studies")["brain-mni.nii.gz"]
    os.truncate(out / "studies" / "ct-phantom.nii.gz", 1000)
    (out / "dicom" / "ct-phantom" / "IM00004.dcm").unlink()
    repaired = build_sample_study(out, seed=1, slices=SLICES)
    assert repaired.written == (repaired.ct_dicom, repaired.ct_nifti)
    assert len(list(repaired.ct_dicom.glob("*.dcm"))) == SLICES
    other_seed = build_sample_study(out, seed=2, slices=SLICES)
    assert other_seed.written == (other_seed.ct_dicom, other_seed.ct_nifti)
    assert stats(out / "studies")["brain-mni.nii.gz"] == brain_before
    assert sorted(p.name for p in out.iterdir()) == ["dicom", "studies"]


def test_cli_prints_a_summary(study, capsys):
    assert main(["sample-study", "--out", str(study.out), "--seed", "1", "--slices", str(SLICES)]) == 0
    printed = capsys.readouterr().out
    assert "0 of 3 items written" in printed and printed.count("(kept)") == 3
    assert f"--studies {study.studies}" in printed


def test_cli_rejects_a_file_as_output_folder(tmp_path, capsys):
    path = tmp_path / "a-file"
    path.write_text("")
    assert main(["sample-study", "--out", str(path)]) == 2
    assert f"{path}: exists and is not a folder" in capsys.readouterr().err


def test_cli_rejects_too_few_slices(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample-study", "--out", str(tmp_path), "--slices", "1"])
    assert exit_info.value.code == 2 and "expected 2 to 512 slices" in capsys.readouterr().err
