import json

import numpy as np
import pytest

from medisee.data import DataError
from medisee.data.mlmr import mask_bbox
from medisee.data.samed2d import read_samed2d_map

GOOD = {"images/scan.png": {"masks/liver.png": "liver", "masks/ring.png": "kidney_left"}}


def write_map(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_reads_every_mask_as_a_record(tmp_path, scan):
    path = write_map(tmp_path / "train.json", GOOD)
    liver, ring = read_samed2d_map(path, seed=3)
    assert liver.image == scan["image"] and liver.mask == scan["liver"] and liver.class_text == "liver"
    assert liver.bbox == mask_bbox(scan["liver_mask"]) and ring.bbox == mask_bbox(scan["ring_mask"])
    assert "liver" in liver.short and "liver" in liver.long and liver.short != liver.long
    assert "left kidney" in ring.short and "left kidney" in ring.explanation  # readable name for the label
    assert liver.extra == {"source_type": "samed2d"} and not liver.absent
    assert liver.source == f"{path}: images/scan.png: masks/liver.png"
    again = read_samed2d_map(path, seed=3)
    assert [(r.short, r.long, r.explanation) for r in again] == [(r.short, r.long, r.explanation) for r in (liver, ring)]
    others = [read_samed2d_map(path, seed=s)[0].short for s in range(4, 12)]
    assert any(text != liver.short for text in others)


def test_validate_false_skips_the_image_checks(tmp_path, scan):
    path = write_map(tmp_path / "train.json", {"images/nope.png": {"masks/liver.png": "liver"}})
    assert read_samed2d_map(path, validate=False)[0].image == tmp_path / "images" / "nope.png"


@pytest.fixture
def bad_cases(tmp_path, write_png):
    write_png("masks/small.png", np.ones((32, 32), bool))
    write_png("masks/empty.png", np.zeros((48, 64), bool))
    image, masks = "images/scan.png", tmp_path / "masks"
    return [
        ('{"a": ', "invalid JSON: Expecting value at line 1 column 7"),
        ("[]", "expected an object mapping image paths to {mask path: class name} objects"),
        ({image: ["masks/liver.png"]}, f"{image}: expected a non-empty object mapping mask paths to class names"),
        ({image: {}}, f"{image}: expected a non-empty object mapping mask paths to class names"),
        ({"images/nope.png": {"masks/liver.png": "liver"}},
         f"images/nope.png: image file not found: {tmp_path / 'images' / 'nope.png'}"),
        ({image: {"masks/nope.png": "liver"}}, f"{image}: masks/nope.png: mask file not found: {masks / 'nope.png'}"),
        ({image: {"masks/small.png": "liver"}}, f"{image}: masks/small.png: mask is 32x32 but the image is 64x48"),
        ({image: {"masks/empty.png": "liver"}},
         f"{image}: masks/empty.png: mask is empty (all zero) for a present target"),
        ({image: {"masks/liver.png": ""}}, f"{image}: masks/liver.png: class name must be a non-empty string"),
        ({image: {"masks/liver.png": 3}}, f"{image}: masks/liver.png: class name must be a non-empty string"),
    ]


def test_each_bad_map_names_file_and_entry(tmp_path, scan, bad_cases):
    for data, message in bad_cases:
        path = write_map(tmp_path / "bad.json", data)
        with pytest.raises(DataError) as error:
            read_samed2d_map(path)
        assert str(error.value) == f"{path}: {message}", data
