import random

import numpy as np
from PIL import Image

from medisee.conversation import answer_prefix, parse_answer
from medisee.data.loader import slice_key, slice_structures, to_training_sample
from medisee.data.records import Record
from medisee.data.templates import grouped_answer

TOKENS = ("[SEG]", "[BBOX]")


def _files(tmp_path, name, box):
    image = np.zeros((32, 40), np.uint8)
    mask = np.zeros((32, 40), np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    image[mask > 0] = 200
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / f"{name}.png")
    return tmp_path / "img.png", tmp_path / f"{name}.png", (x0 / 40, y0 / 32, x1 / 40, y1 / 32)


def test_present_absent_and_multi_target_records_become_training_samples(tmp_path):
    image, mask, bbox = _files(tmp_path, "liver", (2, 3, 12, 20))
    present = Record(image, mask, "liver", "long q?", "short q?", bbox, "The liver makes bile.")
    sample = to_training_sample(present, random.Random(0), "short", with_plain_query=True, instruction_probability=0)
    assert sample.query == "short q?" and sample.answer == f"{answer_prefix(TOKENS)} The liver makes bile."
    assert sample.masks.shape == (1, 32, 40) and sample.masks.sum() == 10 * 17
    np.testing.assert_allclose(sample.boxes[0], bbox)
    assert sample.plain_query and "liver" in sample.plain_query

    absent = Record(image, None, "spleen", "long?", "short?", None, "It sits on the left.", absent=True)
    sample = to_training_sample(absent, random.Random(0), "long")
    assert sample.masks.shape == (0, 32, 40) and sample.boxes.shape == (0, 4)
    assert sample.answer.startswith("No,") and "[SEG]" not in sample.answer

    _, mask2, bbox2 = _files(tmp_path, "spleen", (25, 5, 35, 15))
    answer = grouped_answer(["liver", "spleen"], TOKENS)
    multi = Record(image, mask, "liver", "Segment the liver and the spleen.", "liver and spleen?", bbox, "",
                   extra={"answer": answer, "targets": [{"mask": str(mask), "bbox": bbox}, {"mask": str(mask2), "bbox": bbox2}]})
    sample = to_training_sample(multi, random.Random(0), "short")
    assert sample.answer == answer and parse_answer(answer, TOKENS).phrases == ["liver", "spleen"]
    assert sample.masks.shape == (2, 32, 40) and sample.masks[1].sum() == 100


def test_every_structure_on_the_slice_reaches_the_sample_for_the_patch_head(tmp_path):
    image, liver, bbox = _files(tmp_path, "liver", (2, 3, 12, 20))
    _, spleen, bbox2 = _files(tmp_path, "spleen", (25, 5, 35, 15))
    records = [
        Record(image, liver, "liver", "l?", "s?", bbox, "."),
        Record(image, spleen, "spleen", "l?", "s?", bbox2, "."),
        Record(image, None, "heart", "l?", "s?", None, ".", absent=True),
        Record(image, liver, "liver and spleen", "l?", "s?", bbox, "", extra={"targets": [{"mask": str(liver), "bbox": bbox}]}),
        Record(tmp_path / "other.png", liver, "stomach", "l?", "s?", bbox, "."),
    ]
    index = slice_structures(records)
    assert index[slice_key(records[0])] == {"liver": str(liver), "spleen": str(spleen)}  # absent and multi-target left out
    assert set(index) == {slice_key(records[0]), slice_key(records[4])}
    sample = to_training_sample(records[2], random.Random(0), structures=index[slice_key(records[2])])
    assert sorted(sample.structures) == ["liver", "spleen"] and sample.structures["spleen"].sum() == 100
    assert to_training_sample(records[0], random.Random(0)).structures is None  # not asked for: unknown
