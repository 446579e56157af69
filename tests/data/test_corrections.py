"""Corrected label volumes -> training records: files match the labels, the records load for
training and evaluation, and bad corrections fail with a message that says what is wrong."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medisee.data import DataError
from medisee.data.corrections import Correction, correction_records, label_names_of, study_name
from medisee.data.demo.ct_phantom import generate_phantom
from medisee.data.loader import load_image, load_mask, to_training_sample
from medisee.data.mlmr import mask_bbox, read_mlmr_jsonl, write_mlmr_jsonl
from medisee.data.templates import grounded_answer, grouped_answer
from medisee.imaging import MedicalImage, extract_slice, read_image, to_uint8

SHAPE, SPACING = (12, 64, 64), (6.0, 6.0, 16.0)  # 12 slices over 192 mm: kidneys to lungs
QUERY = "Which organs in the upper abdomen filter or store blood?"


def write_study(folder, seed: int = 3, values: dict[str, int] | None = None, name: str = "ct"):
    """A phantom CT (NIfTI, HU) and its label volume: ``values`` structure -> label value."""
    values = values or {"liver": 1, "spleen": 2, "vertebra": 5}
    phantom = generate_phantom(seed, shape=SHAPE, spacing=SPACING)
    image = phantom.to_medical_image().to_sitk()
    labels = np.zeros(phantom.shape, np.uint8)
    for structure, value in values.items():
        labels[phantom.masks[structure]] = value
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(image)
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
    sitk.WriteImage(label, str(folder / f"{name}-label.nii.gz"))
    return folder / f"{name}.nii.gz", folder / f"{name}-label.nii.gz", labels


@pytest.fixture
def study(tmp_path):
    return write_study(tmp_path / "study")


def test_masks_and_slices_are_the_label_volume_windowed_as_inference_sees_it(study, tmp_path, caplog):
    image_path, label_path, labels = study
    correction = Correction(image_path, label_path, {1: "liver", "2": "spleen", 0: "background"}, QUERY)
    with caplog.at_level(logging.WARNING, logger="medisee.data.corrections"):
        records = correction_records(correction, tmp_path / "out", min_area=10, absent_slices=2)
    assert "[5]" in caplog.text  # the unnamed vertebra label is ignored, loudly
    display = to_uint8(read_image(image_path))
    names = {"liver": 1, "spleen": 2}
    present = [r for r in records if not r.absent]
    assert present and all(r.extra["study"] == "ct" for r in records)
    assert any("targets" in r.extra for r in present)  # liver and spleen share some slices
    for record in present:
        k = record.extra["slice"]
        assert np.array_equal(np.asarray(Image.open(record.image)), display[k])
        mask = np.asarray(Image.open(record.mask)) > 0
        assert np.array_equal(mask, labels[k] == names[record.class_text])
        assert record.bbox == mask_bbox(mask) and mask.sum() >= 10
    for k in {r.extra["slice"] for r in present}:  # every entity on a slice: one referring record each
        on_slice = {name for name, value in names.items() if (labels[k] == value).sum() >= 10}
        referring = [r for r in present if r.extra["slice"] == k and r.extra["kind"] == "referring"]
        assert sorted(r.class_text for r in referring) == sorted(on_slice)
        assert all(r.class_text in r.long and r.class_text in r.short for r in referring)
        assert all(r.extra["answer"] == grouped_answer([r.class_text]) for r in referring)
        (query,) = [r for r in present if r.extra["slice"] == k and r.extra["kind"] == "query"]
        assert query.long == query.short == QUERY
        if len(on_slice) == 1:
            assert query.class_text in query.explanation and "targets" not in query.extra
        else:
            assert [t["class_text"] for t in query.extra["targets"]] == ["liver", "spleen"]
            assert query.extra["answer"] == grouped_answer(["liver", "spleen"])
    absent = [r for r in records if r.absent]
    assert {r.extra["kind"] for r in absent} == {"referring-absent"}  # two names: the query is not one target's
    assert len({r.extra["slice"] for r in absent}) == 2
    for record in absent:
        assert record.mask is None and record.bbox is None
        assert not np.isin(labels[record.extra["slice"]], [1, 2]).any()


def test_records_round_trip_through_jsonl_and_feed_the_training_loader(study, tmp_path):
    image_path, label_path, _ = study
    records = correction_records(Correction(image_path, label_path, {1: "liver", 2: "spleen"}, QUERY), tmp_path / "out")
    write_mlmr_jsonl(records, tmp_path / "out" / "train.jsonl")
    back = read_mlmr_jsonl(tmp_path / "out" / "train.jsonl")  # validates files, sizes and non-empty masks
    assert len(back) == len(records)
    for before, after in zip(records, back):
        assert (after.image, after.mask, after.class_text, after.long, after.short, after.absent) == (
            before.image, before.mask, before.class_text, before.long, before.short, before.absent)
        assert after.bbox == pytest.approx(before.bbox) if before.bbox else after.bbox is None
        assert after.extra == before.extra
    rng = random.Random(0)
    for record in back:
        sample = to_training_sample(record, rng)
        assert sample.image.shape == load_image(record).shape == SHAPE[1:]
        if record.absent:
            assert sample.masks.shape[0] == 0 and sample.answer.startswith("No, there is no")
        elif "targets" in record.extra:
            assert sample.masks.shape[0] == 2 and sample.answer == grouped_answer(["liver", "spleen"])
        elif record.extra["kind"] == "referring":
            assert np.array_equal(sample.masks[0] > 0, load_mask(record))
            assert sample.answer == grouped_answer([record.class_text])
        else:
            assert np.array_equal(sample.masks[0] > 0, load_mask(record))
            assert sample.answer == grounded_answer(record.explanation)


def test_single_entity_correction_also_asks_its_query_where_the_entity_is_absent(study, tmp_path):
    image_path, label_path, _ = study
    records = correction_records(Correction(image_path, label_path, {1: "liver"}, "Where is the liver?"), tmp_path / "o")
    kinds = {r.extra["kind"] for r in records}
    assert kinds == {"query", "referring", "query-absent", "referring-absent"}
    assert all("targets" not in r.extra for r in records)
    (absent_query, *_) = [r for r in records if r.extra["kind"] == "query-absent"]
    assert absent_query.long == "Where is the liver?" and "liver" in absent_query.explanation


def test_is_deterministic_and_without_a_query_gives_referring_records_only(study, tmp_path):
    image_path, label_path, _ = study
    correction = Correction(image_path, label_path, {1: "liver", 2: "spleen"})
    first = correction_records(correction, tmp_path / "a", seed=7, max_slices=3)
    second = correction_records(correction, tmp_path / "b", seed=7, max_slices=3)
    assert [(r.long, r.short, r.explanation, r.extra["slice"]) for r in first] == \
           [(r.long, r.short, r.explanation, r.extra["slice"]) for r in second]
    assert {r.extra["kind"] for r in first} == {"referring", "referring-absent"}
    assert len({r.extra["slice"] for r in first if not r.absent}) == 3


def test_other_axes_and_2d_images(study, tmp_path):
    image_path, label_path, labels = study
    records = correction_records(Correction(image_path, label_path, {1: "liver"}, axis="coronal"), tmp_path / "cor",
                                 max_slices=None, absent_slices=0)
    reference = MedicalImage(labels, SPACING, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert len(records) == sum((extract_slice(reference, k, "coronal") == 1).sum() >= 10 for k in range(SHAPE[1]))
    for record in records:
        expected = extract_slice(reference, record.extra["slice"], "coronal") == 1
        assert np.array_equal(np.asarray(Image.open(record.mask)) > 0, expected)

    plane, mask = np.full((32, 40), 60, np.uint8), np.zeros((32, 40), np.uint8)
    mask[8:20, 10:30] = 1
    Image.fromarray(plane).save(tmp_path / "xray.png")
    Image.fromarray(mask).save(tmp_path / "xray-label.png")
    (record,) = correction_records(Correction(tmp_path / "xray.png", tmp_path / "xray-label.png", {1: "lesion"}), tmp_path / "2d")
    assert record.bbox == (0.25, 0.25, 0.75, 0.625) and record.extra["slice"] == 0
    with pytest.raises(DataError, match="2D image"):
        correction_records(Correction(tmp_path / "xray.png", tmp_path / "xray-label.png", {1: "lesion"}, axis="sagittal"),
                           tmp_path / "2d")


def test_a_label_of_another_shape_is_refused_naming_both_shapes(study, tmp_path):
    image_path, _, _ = study
    small = sitk.GetImageFromArray(np.ones((SHAPE[0], 32, 32), np.uint8))
    sitk.WriteImage(small, str(tmp_path / "small.nii.gz"))
    with pytest.raises(DataError, match=r"\(12, 32, 32\).*\(12, 64, 64\)"):
        correction_records(Correction(image_path, tmp_path / "small.nii.gz", {1: "liver"}), tmp_path / "out")


@pytest.mark.parametrize("names, message", [
    ({"one": "liver"}, "non-negative integer"),
    ({-1: "liver"}, "non-negative integer"),
    ({1: "  "}, "non-empty phrase"),
    ({0: "background"}, "only the background"),
    ({}, "label_names must map"),
])
def test_bad_label_names_are_refused(study, names, message):
    image_path, label_path, _ = study
    with pytest.raises(DataError, match=message):
        Correction(image_path, label_path, names)


@pytest.mark.parametrize("info, names", [
    ({"label_names": {"liver": 1, "spleen": 2}}, {1: "liver", 2: "spleen"}),  # MONAI Label's way round
    ({"label_names": {"1": "liver", "2": " spleen "}}, {1: "liver", 2: "spleen"}),  # MediSee's module before
    ({"label_names": {"background": 0, "liver": 1}}, {1: "liver"}),
    # MONAI Label's Slicer plugin: idx counts a skipped "background" segment, the exported values do not
    ({"label_info": [{"name": "liver", "idx": 2}, {"name": "spleen", "idx": 3}]}, {1: "liver", 2: "spleen"}),
    ({"query": "Where is the liver?"}, {}),
])
def test_label_names_are_read_in_every_shape_clients_send(info, names):
    assert label_names_of(info) == names


@pytest.mark.parametrize("info, message", [
    ({"label_names": {"liver": 1, "spleen": 1}}, "one label value several names: \\[1\\]"),
    ({"label_names": {"liver": "one"}}, "must map phrases to label values"),
    ({"label_names": ["liver"]}, "must map phrases to label values"),
    ({"label_names": {"  ": 1}}, "needs a non-empty phrase"),
    ({"label_info": [{"idx": 1}]}, "label_info must list the segments saved"),
])
def test_label_names_that_cannot_be_read_are_refused(info, message):
    with pytest.raises(DataError, match=message):
        label_names_of(info)


def test_unreadable_files_fractional_labels_and_empty_labels(study, tmp_path):
    image_path, label_path, _ = study
    with pytest.raises(DataError, match="cannot read the corrected label: .*missing.nii.gz"):
        correction_records(Correction(image_path, tmp_path / "missing.nii.gz", {1: "liver"}), tmp_path / "out")
    with pytest.raises(DataError, match="cannot read the corrected study's image"):
        correction_records(Correction(tmp_path / "nope.nii.gz", label_path, {1: "liver"}), tmp_path / "out")
    reference = sitk.ReadImage(str(label_path))
    fractional = sitk.GetImageFromArray(sitk.GetArrayFromImage(reference).astype(np.float32) * 0.5)
    fractional.CopyInformation(reference)
    sitk.WriteImage(fractional, str(tmp_path / "half.nii.gz"))
    with pytest.raises(DataError, match="fractional"):
        correction_records(Correction(image_path, tmp_path / "half.nii.gz", {1: "liver"}), tmp_path / "out")
    with pytest.raises(DataError, match="no slice holds a named label"):
        correction_records(Correction(image_path, label_path, {7: "heart"}), tmp_path / "out")
    with pytest.raises(DataError, match="window"):
        Correction(image_path, label_path, {1: "liver"}, window="40")


def test_study_names_are_file_system_safe():
    assert study_name("/data/CT Scan_007.nii.gz") == "ct-scan-007"
    assert study_name("/dicom/series/") == "series" and study_name("___.nrrd") == "study"
