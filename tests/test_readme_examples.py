"""The README's command-line examples are golden end-to-end tests: each runs on the sample
study with the bundled default model and must name, and segment, what its comment promises
(the comment after ``#``: structures joined by "and", or "nothing"; after a ``;``, words for
people). A question about a whole volume must give one structure each, of the right volume."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medisee.cli import main
from medisee.data.demo.brain import generate_brain
from medisee.data.demo.sample_study import BRAIN_ID, build_sample_study, sample_phantom

README = Path(__file__).resolve().parent.parent / "README.md"
MIN_IOU = 0.5  # each promised structure's label against the truth, over the slices asked


def readme_examples() -> list[str]:
    """The README's ``medisee predict`` lines (with ``$ct`` as the README sets it)."""
    text = README.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip().startswith(".venv/bin/medisee predict")]


def promised(line: str) -> list[str]:
    """The structures an example's comment promises ([] for "nothing")."""
    comment = line.split("#", 1)[1].split(";")[0].strip()
    if comment.startswith("nothing"):
        return []
    return [name.strip() for name in comment.removesuffix(" on each slice").split(" and ")]


def test_every_readme_example_promises_an_answer():
    examples = readme_examples()
    assert len(examples) >= 6
    for line in examples:
        assert "#" in line, f"README example without the answer it gives: {line}"
        assert all(re.fullmatch(r"[a-z ]+", name) for name in promised(line)), line


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample-study")
    build_sample_study(out)
    brain = generate_brain(0, patient_id=BRAIN_ID, augment=False)
    return out, {"ct-phantom": sample_phantom(0).masks, "brain-mni": brain.masks}


@pytest.mark.slow
@pytest.mark.parametrize("line", readme_examples())
def test_readme_example_gives_the_answer_it_promises(line, sample, tmp_path, capsys):
    study, truths = sample
    command = line.split("#", 1)[0].replace("$ct", "runs/sample-study/studies/ct-phantom.nii.gz")
    args = [arg.replace("runs/sample-study", str(study)) for arg in shlex.split(command)[1:]]
    out = tmp_path / "out"
    args[args.index("--out") + 1] = str(out)
    assert main(args) == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    expected = promised(line)
    named = {re.sub(r"\s*#\d+$", "", e["phrase"]) for e in result["entities"]}
    assert named == set(expected), (result["answer"], [e["phrase"] for e in result["entities"]])
    if not expected:
        return
    truth = next(masks for key, masks in truths.items() if key in command)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / result["files"]["labels"])))
    asked = result["slices"]
    for name in expected:
        values = [value for phrase, value in result["label_names"].items() if re.sub(r"\s*#\d+$", "", phrase) == name]
        mask, true = np.isin(labels[asked], values), truth[name][asked]
        iou = (mask & true).sum() / max((mask | true).sum(), 1)
        assert iou >= MIN_IOU, f"{name}: IoU {iou:.2f} over slices {asked}"
    if "--slice all" in command:  # a volume: one structure each, its mL within 10% of the truth's
        structures = {s["phrase"]: s for s in result["structures"]}
        assert sorted(structures) == sorted(expected)
        image = sitk.ReadImage(args[args.index("--image") + 1] if "--image" in args else "")
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000
        for name in expected:
            true_ml = truth[name].sum() * voxel_ml
            assert abs(structures[name]["volume_ml"] - true_ml) <= 0.1 * true_ml, (name, structures[name], true_ml)
