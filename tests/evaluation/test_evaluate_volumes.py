"""``medisee.evaluation.evaluate_volumes``: whole volumes asked about their structures, scored in
3D, counted exactly with a scripted predictor on a hand-made dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medisee.evaluation.evaluate_human import HumanQueries
from medisee.evaluation.evaluate_volumes import evaluate_volumes
from medisee.predictor import Entity, Prediction

SHAPE = (8, 24, 24)  # (z, y, x)
SPACING = (1.5, 1.5, 4.0)


def _masks() -> dict[str, np.ndarray]:
    liver, spleen = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    liver[1:6, 4:12, 4:14] = True
    spleen[3:7, 14:20, 15:21] = True
    return {"liver": liver, "spleen": spleen}


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    masks = _masks()
    volume = np.full(SHAPE, -100, np.int16)  # soft tissue; liver 60 HU, spleen 200 HU
    volume[masks["liver"]], volume[masks["spleen"]] = 60, 200
    _write(volume, tmp_path / "volumes" / "ct001" / "image.nii.gz")
    for name, mask in masks.items():
        _write(mask.astype(np.uint8), tmp_path / "volumes" / "ct001" / "masks" / f"{name}.nii.gz")
    record = {"image": "x.png", "mask": "x_liver.png", "class_text": "liver", "long": "long", "patient": "ct001",
              "short": "Mark the organ that makes bile.", "bbox": [0, 0, 1, 1], "split": "test", "modality": "CT"}
    (tmp_path / "test.jsonl").write_text(json.dumps(record) + "\n")
    (tmp_path / "manifest.json").write_text(json.dumps({
        "structures": {"CT": ["liver", "spleen"], "MR": ["brain"]},
        "splits": {"test": {"patients": ["ct001"]}}}))
    return tmp_path


class Scripted:
    """Every slice read on its own: the liver (a window of the pixels, so exactly the truth)
    for bile, liver and spleen questions (the spleen is misunderstood), a stray kidney on
    slice 0 of those, a brain on the first slice of brain questions, nothing otherwise."""

    score_threshold = 0.1

    def __init__(self) -> None:
        self.seen = 0

    def asked(self, query: str) -> list[str]:
        return ["liver"] if "liver" in query.lower() else []

    def predict_slices(self, images, query, box=None, point=None, mode="full", progress=None):
        predictions = []
        for image in images:
            plane = np.asarray(image)
            entities = []
            if "brain" in query and self.seen % SHAPE[0] == 0:
                entities.append(Entity("brain", np.ones(plane.shape, bool), (0.0, 0.0, 24.0, 24.0), 0.5, 0.5))
            if any(w in query.lower() for w in ("liver", "bile", "spleen")):
                liver = (plane > 110) & (plane < 180)
                if liver.any():
                    entities.append(Entity("liver", liver, (0.0, 0.0, 1.0, 1.0), 0.9, 0.8))
                if self.seen % SHAPE[0] == 0:
                    stray = np.zeros_like(liver)
                    stray[20:23, 1:3] = True
                    entities.append(Entity("right kidney", stray, (1.0, 20.0, 3.0, 23.0), 0.2, 0.5))
            self.seen += 1
            predictions.append(Prediction("Sure, liver." if entities else "No.", entities))
        return predictions


def test_volumes_are_scored_in_3d_with_false_slices_and_absent_structures(dataset, tmp_path):
    people = HumanQueries({"liver": {"explicit": ("liver please",), "implicit": ("what makes bile",)},
                           "spleen": {"explicit": ("spleen",), "implicit": ()},
                           "brain": {"explicit": ("segment the brain",), "implicit": ()}},
                          (), (("pancreas", "show the pancreas"),))
    metrics = evaluate_volumes(Scripted(), dataset, tmp_path / "out", people, mode="full", language_slices="every")
    rows = [json.loads(line) for line in (tmp_path / "out" / "volume_per_question.jsonl").read_text().splitlines()]
    by_query = {r["query"]: r for r in rows}
    assert set(by_query) == {"Mark the organ that makes bile.", "liver please", "what makes bile", "spleen",
                             "segment the brain", "show the pancreas"}
    liver = by_query["liver please"]
    assert liver["found"] == ["liver"]  # the stray kidney on one slice lost the vote
    assert liver["structures"]["liver"]["dice"] == 1.0 and liver["false_slices"] == 0
    assert liver["structures"]["liver"]["ml"] == pytest.approx(5 * 8 * 10 * 1.5 * 1.5 * 4.0 / 1000)
    assert liver["structures"]["liver"]["slice_dice"] == 1.0
    spleen = by_query["spleen"]  # answered with the liver: a structure that is there, but not the one asked
    assert spleen["structures"]["spleen"]["dice"] == 0.0 and spleen["found"] == ["liver"]
    assert (spleen["false_slices"], spleen["unasked_slices"]) == (0, 5)
    brain = by_query["segment the brain"]  # a brain in a CT: a false entity on its one slice
    assert not brain["nothing"] and (brain["false_slices"], brain["unasked_slices"]) == (1, 0)
    assert by_query["show the pancreas"]["nothing"]
    groups = metrics["groups"]
    assert groups["class liver"]["dice3d"] == 1.0 and groups["class spleen"]["dice3d"] == 0.0
    assert groups["people absent"]["nothing_rate"] == 0.0 and groups["people not_in_catalogue"]["nothing_rate"] == 1.0
    assert groups["overall"]["false_slice_share"] == pytest.approx(1 / (6 * 8))
    assert groups["overall"]["unasked_slice_share"] == pytest.approx(5 / (6 * 8))
    assert metrics["patients"] == ["ct001"] and metrics["language_slices"] == "every"
