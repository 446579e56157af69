"""The ``medisee`` command line, run as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.data import get_testdata_file

from medisee.cli import main
from medisee.imaging import read_image, write_dicom_series
from medisee.models import default_model_dir

CT_SMALL = get_testdata_file("CT_small.dcm")
QUERY = "which organ filters the blood?"


def run_cli(*args: str) -> tuple[int, str, str]:
    """The installed console script in a subprocess: what a user sees, exit code included."""
    exe = Path(sys.executable).with_name("medisee")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300,
                          env=os.environ | {"PYTHONWARNINGS": "ignore"})
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.slow
def test_predict_on_pydicom_ct_small_writes_result_mask_and_overlay(tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("predict", "--model", "default", "--image", CT_SMALL, "--query", QUERY, "--out", str(out))
    assert code == 0, stderr
    bundled = (default_model_dir() / "config.json").exists()
    assert ("untrained" in stderr) != bundled  # a placeholder model is announced as such
    result = json.loads((out / "result.json").read_text())
    assert result["query"] == QUERY and result["slices"] == [0] and result["image_shape"] == [1, 128, 128]
    assert isinstance(result["answer"], str) and isinstance(result["entities"], list)
    labels = sitk.ReadImage(str(out / result["files"]["labels"]))
    source = read_image(CT_SMALL)
    assert sitk.GetArrayFromImage(labels).shape == (1, 128, 128)
    np.testing.assert_allclose(labels.GetSpacing()[:2], source.spacing[:2], atol=1e-5)
    np.testing.assert_allclose(labels.GetOrigin(), source.origin, atol=1e-4)
    np.testing.assert_allclose(labels.GetDirection(), source.direction, atol=1e-5)
    overlay = Image.open(out / "overlay.png")
    assert overlay.size == (128, 128) and overlay.mode == "RGB"


@pytest.fixture(scope="module")
def seeded_checkpoint(tmp_path_factory, tiny_tokenizer):
    """The seeded random tiny model as a checkpoint: its outputs do not depend on whichever
    default model is bundled."""
    from medisee.builder import build_random
    from medisee.weights import save_checkpoint

    return str(save_checkpoint(build_random("tiny", tokenizer=tiny_tokenizer), tmp_path_factory.mktemp("ckpt") / "tiny"))


def test_predict_entities_are_written_with_their_mask_files(tmp_path, capsys, seeded_checkpoint):
    """With the threshold at zero the seeded model reports its entity: check the files."""
    volume = np.full((6, 40, 50), -1000, np.int16)
    volume[:, 10:30, 15:35] = 60
    write_dicom_series(volume, tmp_path / "series", spacing=(0.8, 0.8, 2.5), origin=(-20, -16, 30))
    out = tmp_path / "out"
    code = main(["predict", "--model", seeded_checkpoint, "--image", str(tmp_path / "series"), "--query", QUERY, "--slice", "1-3",
                 "--mode", "fast", "--threshold", "0", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["slices"] == [1, 2, 3] and result["schema_version"] == 1
    (entity,) = result["entities"]
    assert sorted(entity["slices"]) == ["1", "2", "3"] and entity["label"] == 1
    assert result["label_names"] == {QUERY: 1} and isinstance(result["model_trained"], bool)
    files = result["files"]
    mask = nib.load(out / files["masks"]["1"]).get_fdata()
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / files["labels"])))
    assert labels.shape == (6, 40, 50)
    assert labels[[0, 4, 5]].max() == 0 and (labels[1:4] > 0).any()  # only the asked slices
    assert mask.sum() == (labels == 1).sum()
    for index, found in entity["slices"].items():
        assert found["pixels"] == int((labels[int(index)] == 1).sum())
    assert "entities: 1;" in capsys.readouterr().out


def test_predict_on_a_2d_png_writes_png_masks(tmp_path, seeded_checkpoint):
    Image.fromarray((np.random.default_rng(0).random((60, 80)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    out = tmp_path / "out"
    assert main(["predict", "--model", seeded_checkpoint, "--image", str(tmp_path / "x.png"), "--query", QUERY, "--threshold", "0",
                 "--mode", "fast", "--box", "5,5,60,50", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["files"]["labels"] == "labels.png" and result["files"]["masks"]["1"].endswith(".png")
    assert Image.open(out / "labels.png").size == (80, 60)


def _nifti_4d(path: Path) -> str:
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), path)
    return str(path)


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d: ["--image", str(d / "missing.dcm"), "--query", QUERY], "no such file"),
        (lambda d: ["--image", get_testdata_file("MR_truncated.dcm"), "--query", QUERY], "corrupt or truncated"),
        (lambda d: ["--image", _nifti_4d(d / "v.nii.gz"), "--query", QUERY], "unsupported image dimensions"),
        (lambda d: ["--image", CT_SMALL, "--query", "  "], "the query is empty"),
        (lambda d: ["--image", CT_SMALL, "--query", QUERY, "--box", "0,0,500,20"], "lies outside the image"),
        (lambda d: ["--image", CT_SMALL, "--query", QUERY, "--slice", "4"], "slice 4 out of range"),
        (lambda d: ["--image", CT_SMALL, "--query", QUERY, "--model", "gpt-9"], "unknown model 'gpt-9'"),
        (lambda d: ["--image", CT_SMALL, "--query", QUERY, "--window", "sunset"], "unknown"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(tmp_path, capsys, make_args, message):
    code = main(["predict", *make_args(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("medisee: error:") and message in err[-1]
    assert not any("Traceback" in line for line in err)


@pytest.mark.slow
def test_bad_input_through_the_console_script_has_no_traceback(tmp_path):
    code, _, stderr = run_cli("predict", "--image", str(tmp_path / "nope.dcm"), "--query", QUERY, "--out", str(tmp_path))
    assert code == 2 and "Traceback" not in stderr and "no such file" in stderr
    code, _, stderr = run_cli("predict", "--image", CT_SMALL, "--query", QUERY, "--box", "1,2,3", "--out", str(tmp_path))
    assert code == 2 and "expected X0,Y0,X1,Y1" in stderr


def test_info_counts_parameters_of_presets_without_allocating(capsys, monkeypatch, tmp_path):
    assert main(["info", "--preset", "medisee-7b"]) == 0
    out = capsys.readouterr().out
    assert "vocab 32002" in out and "576 image tokens" in out
    total = int(next(line for line in out.splitlines() if line.strip().startswith("total")).split()[1].replace(",", ""))
    assert 7.5e9 < total < 7.9e9
    assert "boxes: the box decoder's" in out  # the paper's boxes unless calibration chose the masks'
    monkeypatch.setattr("medisee.models.default_model_dir", lambda: tmp_path)  # no bundled weights
    assert main(["info", "--model", "default"]) == 0
    assert "UNTRAINED" in capsys.readouterr().out


TWO_STRUCTURES = "Please segment the left lung and right lung in this image."


@pytest.mark.slow
def test_a_box_and_a_question_naming_two_structures_give_two_entities(tmp_path):
    """The plumbing of several grounded entities: two phrases, two masks, two boxes, two
    label values. (Whether the names are right is the model card's business.)"""
    from tests.support.studies import structure_box, write_phantom

    image = write_phantom(11, tmp_path, "ct")
    box = ",".join(f"{v:g}" for v in structure_box(11, "vertebra", 6))
    out = tmp_path / "out"
    assert main(["predict", "--image", str(image), "--query", TWO_STRUCTURES, "--slice", "6", "--box", box,
                 "--threshold", "0", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    entities = result["entities"]
    assert len(entities) >= 2 and len({e["phrase"] for e in entities}) == len(entities)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / result["files"]["labels"])))
    for entity in entities:
        found = entity["slices"]["6"]
        x0, y0, x1, y1 = found["box"]
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96 and list(entity["slices"]) == ["6"]
        assert (out / result["files"]["masks"][str(entity["label"])]).exists() and found["pixels"] > 0
    assert set(np.unique(labels[6])) - {0} <= {e["label"] for e in entities} and len(np.unique(labels[6])) >= 3
