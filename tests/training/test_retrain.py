"""Retraining on corrections: the acceptance rule, the held-out split, input errors, the
command line, and one real (short) DeepSpeed round from the bundled model."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medisee.data.corrections import Correction
from medisee.data.demo.ct_phantom import generate_phantom
from medisee.data.mlmr import read_mlmr_jsonl
from medisee.data.records import Record
from medisee.models import default_model_dir
from medisee.weights import load_checkpoint
from training.retrain import RULE, judge, main, retrain, should_accept, split_records

SHAPE, SPACING = (12, 64, 64), (6.0, 6.0, 16.0)
QUERY = "Which organs in the upper abdomen filter or store blood?"
NAMES = {1: "liver", 2: "spleen"}


def write_study(folder: Path, seed: int, values: dict[str, int] | None = None, shape=SHAPE,
                spacing=SPACING) -> tuple[Path, Path]:
    """Phantom ``seed`` (NIfTI, HU) and its label volume: structure -> value in ``values``
    (default liver 1, spleen 2)."""
    phantom = generate_phantom(seed, shape=shape, spacing=spacing)
    image = phantom.to_medical_image().to_sitk()
    labels = np.zeros(phantom.shape, np.uint8)
    for structure, value in (values or {"liver": 1, "spleen": 2}).items():
        labels[phantom.masks[structure]] = value
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(image)
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / f"ct{seed}.nii.gz"))
    sitk.WriteImage(label, str(folder / f"ct{seed}-label.nii.gz"))
    return folder / f"ct{seed}.nii.gz", folder / f"ct{seed}-label.nii.gz"


def fake_records(studies: dict[str, int]) -> list[Record]:
    """``slices`` present records per study (one per slice) plus one absent record each."""
    records = []
    for study, slices in studies.items():
        for k in range(slices):
            records.append(Record(Path(f"/{study}/{k}.png"), Path(f"/{study}/{k}_m.png"), "liver", "q", "q",
                                  (0.1, 0.1, 0.5, 0.5), extra={"study": study, "slice": k}))
        records.append(Record(Path(f"/{study}/99.png"), None, "liver", "q", "q", None, absent=True,
                              extra={"study": study, "slice": 99}))
    return records


@pytest.mark.parametrize("before, after, accepted", [
    (0.30, 0.31, True), (0.30, 0.30, True), (0.0, 0.0, True), (0.30, 0.2999, False), (0.5, math.nan, False),
])
def test_the_new_model_is_accepted_only_when_no_worse(before, after, accepted):
    assert should_accept(before, after) is accepted
    assert "gIoU" in RULE and "ties accept" in RULE


def numbers(giou, count=10):
    return {"giou": giou, "count": count}


GOOD, EMPTY = numbers(0.5), {"giou": None, "count": None}


@pytest.mark.parametrize("before,after,ref_before,ref_after,reason", [
    (GOOD, numbers(0.55), GOOD, numbers(0.49), None),  # better held out, reference within the tolerance
    (GOOD, numbers(0.45), GOOD, GOOD, "held-out gIoU fell"),
    (GOOD, numbers(0.9), GOOD, numbers(0.3), "reference gIoU fell"),  # learned the corrections' mistake
    (numbers(0.0), numbers(0.0), numbers(0.0), numbers(0.0), "finds nothing"),
    (numbers(0.2, 3), numbers(0.3, 3), EMPTY, EMPTY, "only 3 targets"),
    (EMPTY, EMPTY, GOOD, GOOD, None),  # the reference alone can judge
])
def test_the_guard_says_why_it_refuses(before, after, ref_before, ref_after, reason):
    reasons = judge(before, after, ref_before, ref_after, min_targets=8)
    assert (reasons == []) if reason is None else any(reason in r for r in reasons), reasons


def test_whole_studies_are_held_out_when_there_are_several():
    records = fake_records({"a": 3, "b": 4, "c": 2, "d": 5})
    train, heldout, by, studies = split_records(records, 0.25, seed=0)
    assert by == "study" and len(studies) == 1
    assert {r.extra["study"] for r in heldout} == set(studies)
    assert not {r.extra["study"] for r in train} & set(studies) and len(train) + len(heldout) == len(records)
    assert split_records(records, 0.25, seed=0)[3] == studies  # deterministic
    _, _, _, most = split_records(fake_records({"a": 2, "b": 2}), 0.9, seed=0)
    assert len(most) == 1  # never every study


def test_a_single_study_holds_out_some_of_its_labelled_slices():
    records = fake_records({"only": 8})
    train, heldout, by, studies = split_records(records, 0.25, seed=3)
    assert by == "slice" and studies == []
    held = {r.extra["slice"] for r in heldout}
    assert len(held) == 2 and not held & {r.extra["slice"] for r in train}
    assert all(not r.absent for r in heldout)  # the empty slice trains
    assert split_records(records, 0.25, seed=3)[1] == heldout
    with pytest.raises(ValueError, match="one labelled slice"):
        split_records(fake_records({"only": 1}), 0.25, seed=0)


def test_bad_inputs_fail_before_any_training(tmp_path):
    image, label = write_study(tmp_path / "s", 3)
    correction = Correction(image, label, NAMES, QUERY)
    with pytest.raises(ValueError, match="no corrections"):
        retrain(default_model_dir(), [], tmp_path / "w1")
    with pytest.raises(ValueError, match="not a MediSee checkpoint"):
        retrain(tmp_path, [correction], tmp_path / "w2")
    (tmp_path / "w3").mkdir()
    (tmp_path / "w3" / "old.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        retrain(default_model_dir(), [correction], tmp_path / "w3")
    with pytest.raises(ValueError, match="unknown mode"):
        retrain(default_model_dir(), [correction], tmp_path / "w5", mode="turbo")
    with pytest.raises(ValueError, match="heldout_fraction"):
        retrain(default_model_dir(), [correction], tmp_path / "w4", heldout_fraction=1.0)


def test_command_line_help_and_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--names" in capsys.readouterr().out
    image, label = write_study(tmp_path / "s", 3)
    base = ["--model", "default", "--image", str(image), "--label", str(label), "--out", str(tmp_path / "w")]
    assert main([*base, "--names", "{1: liver}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    small = tmp_path / "small.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((12, 8, 8), np.uint8)), str(small))
    assert main(["--model", "default", "--image", str(image), "--label", str(small), "--names", '{"1": "liver"}',
                 "--out", str(tmp_path / "w")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "(12, 8, 8)" in error and "(12, 64, 64)" in error
    assert main([*base, "--label", str(label), "--names", '{"1": "liver"}']) == 2
    assert "one label per image" in capsys.readouterr().err


@pytest.mark.slow
def test_a_retraining_round_reports_before_and_after_on_held_out_studies(tmp_path):
    base = shutil.copytree(default_model_dir(), tmp_path / "base")  # a snapshot: the bundled model may be rebuilt
    corrections = [Correction(*write_study(tmp_path / "studies", seed), NAMES, QUERY) for seed in (3, 4)]
    seen = []
    report = retrain(base, corrections, tmp_path / "work", steps=4, batch_size=2, max_slices_per_study=4, mode="fast",
                     progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert report.heldout_by == "study" and len(report.heldout_studies) == 1 and len(report.train_studies) == 1
    assert report.n_train > 0 and report.n_heldout > 0 and report.steps == 4
    for numbers in (report.before, report.after):
        assert 0.0 <= numbers["giou"] <= 1.0 and numbers["count"] > 0 and numbers["records"] == report.n_heldout
    assert report.mode == "fast" and report.reference_before["count"] >= 8 and report.reference_after["count"] > 0
    assert report.accepted == (judge(report.before, report.after, report.reference_before, report.reference_after) == [])
    assert report.accepted == (report.reasons == [])
    assert load_checkpoint(report.new_model_dir).config.name == "tiny"
    assert not (tmp_path / "work" / "run" / "checkpoints").exists()  # only the exported model is kept
    assert json.loads((tmp_path / "work" / "report.json").read_text()) == json.loads(json.dumps(report.to_dict()))
    heldout = read_mlmr_jsonl(tmp_path / "work" / "data" / "heldout.jsonl")
    train = read_mlmr_jsonl(tmp_path / "work" / "data" / "train.jsonl")
    assert {r.extra["study"] for r in heldout} == set(report.heldout_studies)
    assert {r.extra["study"] for r in train} == set(report.train_studies)
    assert ("train", 4, 4) in seen and ("data", 2, 2) in seen
    assert {phase for phase, *_ in seen} == {"data", "before", "reference before", "train", "after", "reference after"}


@pytest.mark.slow
def test_corrections_with_left_and_right_swapped_are_refused(tmp_path):
    base = shutil.copytree(default_model_dir(), tmp_path / "base")
    swapped = {"right kidney": 1, "left kidney": 2}  # value 1 is named "left kidney" below: the wrong way round
    corrections = [Correction(*write_study(tmp_path / "studies", seed, swapped, (16, 96, 96), (3.5, 3.5, 14.0)),
                              {1: "left kidney", 2: "right kidney"}, "Segment the kidneys.") for seed in (3, 4, 5)]
    report = retrain(base, corrections, tmp_path / "work", steps=30, batch_size=2, mode="fast")
    assert not report.accepted
    assert any(reason.startswith("reference gIoU fell") for reason in report.reasons), report.reasons
