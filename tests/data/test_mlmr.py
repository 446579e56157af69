import json

import numpy as np
import pytest
import SimpleITK as sitk

from medisee.data import DataError, Record
from medisee.data.mlmr import mask_bbox, read_mlmr_jsonl, write_mlmr_jsonl

GOOD = {"image": "images/scan.png", "mask": "masks/liver.png", "class_text": "liver",
        "long": "A patient drinks heavily. Which organ may be fatty?", "short": "Which organ stores glycogen?",
        "bbox": [0.125, 0.25, 0.453125, 0.5833]}
ABSENT = {"image": "images/scan.png", "mask": None, "class_text": "spleen", "long": "Which organ filters blood?",
          "short": "Which organ removes old red cells?", "bbox": None, "absent": True,
          "explanation": "The spleen is not visible in this image."}


def write_lines(path, *lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_reads_good_samples(tmp_path, scan):
    extra = dict(GOOD, explanation="The liver stores glycogen.", split="train", modality="CT")
    path = write_lines(tmp_path / "data.jsonl", extra, "", ABSENT)
    present, absent = read_mlmr_jsonl(path)
    assert present.image == scan["image"] and present.mask == scan["liver"] and present.image.is_absolute()
    assert present.bbox == (0.125, 0.25, 0.453125, 0.5833) and present.explanation == "The liver stores glycogen."
    assert present.extra == {"split": "train", "modality": "CT"} and present.source == f"{path}:1"
    assert not present.absent
    assert absent.absent and absent.mask is None and absent.bbox is None and absent.source == f"{path}:3"


def test_write_then_read_round_trips(tmp_path, scan):
    records = read_mlmr_jsonl(write_lines(tmp_path / "data.jsonl", GOOD, ABSENT))
    records[0].extra["present"] = ["stomach"]
    out = tmp_path / "out" / "copy.jsonl"
    write_mlmr_jsonl(records, out)
    first = json.loads(out.read_text().splitlines()[0])
    assert first["image"] == "../images/scan.png" and first["present"] == ["stomach"] and "absent" not in first
    again = read_mlmr_jsonl(out)
    for a, b in zip(records, again):
        assert (a.image, a.mask, a.class_text, a.long, a.short, a.bbox, a.explanation, a.absent, a.extra) == \
               (b.image, b.mask, b.class_text, b.long, b.short, b.bbox, b.explanation, b.absent, b.extra)
    assert sorted(p.name for p in out.parent.iterdir()) == ["copy.jsonl"]  # no temporary file left


def test_write_rejects_extra_keys_that_clash(tmp_path, scan):
    record = Record(scan["image"], scan["liver"], "liver", "q", "q", (0.1, 0.1, 0.5, 0.5), extra={"bbox": [1]})
    with pytest.raises(ValueError, match="clash"):
        write_mlmr_jsonl([record], tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_nifti_image_with_png_mask(tmp_path, scan):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((48, 64), np.int16)), str(tmp_path / "images" / "ct.nii.gz"))
    path = write_lines(tmp_path / "data.jsonl", dict(GOOD, image="images/ct.nii.gz"))
    assert read_mlmr_jsonl(path)[0].image.name == "ct.nii.gz"
    small = write_lines(tmp_path / "small.jsonl", dict(GOOD, image="images/ct.nii.gz", mask="masks/small.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((1, 8, 8), np.uint8)), str(tmp_path / "masks" / "small.nii.gz"))
    with pytest.raises(DataError) as error:
        read_mlmr_jsonl(small)
    assert str(error.value) == f"{small}:1: mask is 8x8 but the image is 64x48"


def bad_cases(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    return [
        ('{"image": ', "invalid JSON: Expecting value at column 11"),
        ("[1, 2]", "expected a JSON object, got list"),
        ({k: v for k, v in GOOD.items() if k != "short"}, "missing required key 'short'"),
        (dict(GOOD, image="images/nope.png"), f"image file not found: {images / 'nope.png'}"),
        (dict(GOOD, mask="masks/nope.png"), f"mask file not found: {masks / 'nope.png'}"),
        (dict(GOOD, mask="masks/small.png"), "mask is 32x32 but the image is 64x48"),
        (dict(GOOD, mask="masks/empty.png"), "mask is empty (all zero) for a present target"),
        (dict(GOOD, image="images/broken.png"), "cannot read"),
        (dict(GOOD, bbox=[0.1, 0.2, 0.3]), "bbox must be 4 numbers, got [0.1, 0.2, 0.3]"),
        (dict(GOOD, bbox="0.1 0.2 0.3 0.4"), "bbox must be 4 numbers, got '0.1 0.2 0.3 0.4'"),
        (dict(GOOD, bbox=[0.1, True, 0.3, 0.4]), "bbox must be 4 numbers, got [0.1, True, 0.3, 0.4]"),
        (dict(GOOD, bbox=[8, 12, 29, 28]), "bbox must be normalised to [0, 1], got [8, 12, 29, 28]"),
        (dict(GOOD, bbox=[0.5, 0.1, 0.4, 0.3]), "bbox needs x0 < x1 and y0 < y1, got [0.5, 0.1, 0.4, 0.3]"),
        (dict(GOOD, bbox=[0.1, 0.3, 0.4, 0.3]), "bbox needs x0 < x1 and y0 < y1, got [0.1, 0.3, 0.4, 0.3]"),
        (dict(GOOD, long="  "), "'long' must be a non-empty string"),
        (dict(GOOD, short=""), "'short' must be a non-empty string"),
        (dict(GOOD, class_text=None), "'class_text' must be a non-empty string"),
        (dict(ABSENT, mask="masks/liver.png"), "absent target must not have a mask"),
        (dict(ABSENT, bbox=[0.1, 0.1, 0.2, 0.2]), "absent target must not have a bbox"),
        (dict(GOOD, absent="no"), "'absent' must be true or false, got 'no'"),
        (dict(GOOD, explanation="It is [SEG]."), "explanation must not contain candidate tokens such as [SEG]"),
    ]


def test_each_bad_sample_names_file_and_line(tmp_path, scan, write_png):
    write_png("masks/small.png", np.ones((32, 32), bool))
    write_png("masks/empty.png", np.zeros((48, 64), bool))
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png at all")
    for line, message in bad_cases(tmp_path):
        path = write_lines(tmp_path / "bad.jsonl", GOOD, line)
        with pytest.raises(DataError) as error:
            read_mlmr_jsonl(path)
        if message == "cannot read":
            assert str(error.value).startswith(f"{path}:2: cannot read {tmp_path / 'images' / 'broken.png'}: ")
        else:
            assert str(error.value) == f"{path}:2: {message}", line


def test_validate_false_skips_only_the_file_checks(tmp_path):
    path = write_lines(tmp_path / "data.jsonl", dict(GOOD, image="images/nope.png"))
    assert read_mlmr_jsonl(path, validate=False)[0].image == tmp_path / "images" / "nope.png"
    bad = write_lines(tmp_path / "bad.jsonl", dict(GOOD, image="images/nope.png", bbox=[0, 0, 2, 1]))
    with pytest.raises(DataError, match=r"bad.jsonl:1: bbox must be normalised"):
        read_mlmr_jsonl(bad, validate=False)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_mlmr_jsonl(tmp_path / "none.jsonl")


def test_mask_bbox_is_normalised_and_exclusive():
    mask = np.zeros((10, 20), bool)
    mask[2:5, 4:10] = True
    assert mask_bbox(mask) == (0.2, 0.2, 0.5, 0.5)
