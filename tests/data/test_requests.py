"""Ordinary requests: structures named the way people ask, pairs, and structures outside the catalogue."""

from __future__ import annotations

import random

import pytest

from medisee.conversation import parse_answer
from medisee.data import Record, requests, templates
from medisee.data.knowledge import find_structure, outside_structures
from medisee.data.loader import asked_structures, to_training_sample
from medisee.data.mlmr import mask_bbox

TOKENS = ("[SEG]", "[BBOX]")


@pytest.fixture
def slice_records(scan):
    liver = Record(scan["image"], scan["liver"], "liver", "q", "q", mask_bbox(scan["liver_mask"]), source="t:1")
    spleen = Record(scan["image"], scan["ring"], "spleen", "q", "q", mask_bbox(scan["ring_mask"]), source="t:2")
    absent = Record(scan["image"], None, "left kidney", "q", "q", None, "This image does not show the left kidney.",
                    absent=True, source="t:3")
    return [liver, spleen, absent]


def test_every_catalogue_structure_is_named_in_several_ways():
    rng = random.Random(0)
    for structure in ("liver", "left kidney", "grey matter"):
        names = {requests.structure_name(structure, rng) for _ in range(200)}
        assert structure in names and len(names) >= 3
        plain = {n.removeprefix("patient's ") for n in names}
        assert all(find_structure(n) is find_structure(structure) or n in find_structure(structure).informal
                   for n in plain)
    with pytest.raises(ValueError, match="not in the catalogue"):
        requests.structure_name("gallbladder", rng)


def test_paired_organs_are_asked_for_together():
    rng = random.Random(1)
    asked = {requests.several_names(["left kidney", "right kidney"], rng) for _ in range(100)}
    assert "both kidneys" in asked and any(" and " in a or "," in a or "+" in a for a in asked)
    assert requests._paired_plural(["liver", "spleen"]) is None
    assert requests._paired_plural(["right lung", "left lung"]) == "lungs"
    assert "the both" not in " ".join(requests.request("both kidneys", rng) for _ in range(200))


def test_instructions_ask_single_structures_pairs_and_structures_outside_the_catalogue(slice_records):
    rng = random.Random(0)
    made = requests.instructions(slice_records, rng, per_record=2, outside_per_slice=1.0)
    singles = [r for r in made if len(r.extra["asked"]) == 1]
    pairs = [r for r in made if len(r.extra["asked"]) == 2]
    outside = [r for r in made if r.extra["asked"] == []]
    assert len(singles) == 6 and len(pairs) == 1 and len(outside) == 1  # one slice, one pair, one outside request
    liver = [r for r in singles if r.class_text == "liver"]
    assert all(parse_answer(r.extra["answer"], TOKENS).phrases == ["liver"] for r in liver)
    kidney = [r for r in singles if r.class_text == "left kidney"]
    assert all(r.absent and r.extra["answer"].startswith("No, there is no left kidney") for r in kidney)
    pair = pairs[0]
    assert parse_answer(pair.extra["answer"], TOKENS).phrases == ["liver", "spleen"]
    assert [t["class_text"] for t in pair.extra["targets"]] == ["liver", "spleen"]
    assert outside[0].absent and outside[0].mask is None
    assert not templates.CANDIDATE_PATTERN.search(outside[0].extra["answer"])
    assert outside[0].extra["answer"].startswith("No, there is no")


def test_request_records_become_samples_with_what_they_ask_for(slice_records):
    rng = random.Random(0)
    made = requests.instructions(slice_records, rng, per_record=1, outside_per_slice=1.0)
    for record in made:
        sample = to_training_sample(record, rng)
        assert sample.asked == tuple(record.extra["asked"]) == asked_structures(record)
        assert sample.answer == record.extra["answer"] and sample.query == record.short  # no reasoning suffix
        assert len(sample.masks) == len(record.extra["asked"]) or record.absent


def test_outside_requests_name_the_structure_or_describe_it():
    rng = random.Random(3)
    gallbladder = next(s for s in outside_structures() if s.name == "gallbladder")
    answers = [requests.outside_request(gallbladder, rng) for _ in range(30)]
    assert any("gallbladder" in q for q, _ in answers) and any("gallbladder" not in q for q, _ in answers)
    assert all(a.startswith("No, there is no") for _, a in answers)


def test_asked_structures_of_generator_records(scan):
    liver = Record(scan["image"], scan["liver"], "liver", "q", "q", (0.1, 0.1, 0.5, 0.5))
    assert asked_structures(liver) == ("liver",)
    boxed = Record(liver.image, liver.mask, "liver", "q", "q", liver.bbox, extra={"prompt_box": [0.1, 0.1, 0.5, 0.5]})
    assert asked_structures(boxed) == ()
    several = Record(liver.image, liver.mask, "liver", "q", "q", liver.bbox,
                     extra={"targets": [{"class_text": "liver"}, {"class_text": "Kidney_Left"}]})
    assert asked_structures(several) == ("liver", "left kidney")
    assert asked_structures(Record(liver.image, liver.mask, "polyp", "q", "q", liver.bbox)) is None
