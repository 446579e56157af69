import random

import numpy as np
import pytest

from medisee.conversation import parse_answer
from medisee.data import Record, mimo, templates
from medisee.data.mlmr import mask_bbox

TOKENS = ("[SEG]", "[BBOX]")


@pytest.fixture
def targets(scan):
    liver = Record(scan["image"], scan["liver"], "liver", "q", "q", mask_bbox(scan["liver_mask"]), source="t:1",
                   extra={"present": ["stomach"]})
    ring = Record(scan["image"], scan["ring"], "polyp", "q", "q", mask_bbox(scan["ring_mask"]), source="t:2")
    return liver, ring


def test_label_guided_single_and_multiple(targets):
    liver, ring = targets
    single = mimo.label_guided([liver], random.Random(0))
    assert single.extra["perspective"] == "I" and "liver" in single.short and single.long == single.short
    assert single.extra["answer"] == templates.grouped_answer(["liver"]) and "targets" not in single.extra
    assert parse_answer(single.extra["answer"], TOKENS).phrases == ["liver"]
    both = mimo.label_guided([liver, ring], random.Random(0))
    assert "liver and polyp" in both.short
    assert parse_answer(both.extra["answer"], TOKENS).phrases == ["liver", "polyp"]
    assert [t["class_text"] for t in both.extra["targets"]] == ["liver", "polyp"]
    assert both.mask == liver.mask and both.extra["targets"][1]["bbox"] == list(ring.bbox)


def test_label_guided_rejects_mixed_images_and_absent_targets(targets, tmp_path):
    liver, _ = targets
    other = Record(tmp_path / "other.png", liver.mask, "liver", "q", "q", liver.bbox)
    with pytest.raises(ValueError, match="one image"):
        mimo.label_guided([liver, other], random.Random(0))
    absent = Record(liver.image, None, "spleen", "q", "q", None, absent=True)
    with pytest.raises(ValueError, match="present target"):
        mimo.label_guided([absent], random.Random(0))


def test_prompt_perceiving_box_and_point(targets, scan):
    liver, ring = targets
    for seed in range(10):
        boxed = mimo.prompt_perceiving(liver, random.Random(seed), prompt="box")
        box = boxed.extra["prompt_box"]
        width, height = liver.bbox[2] - liver.bbox[0], liver.bbox[3] - liver.bbox[1]
        assert all(abs(a - b) <= 0.05 * s + 1e-4 for a, b, s in zip(box, liver.bbox, (width, height) * 2))
        assert boxed.short in templates.BOX_QUESTIONS and "liver" in boxed.explanation
        assert not any(ch.isdigit() for ch in boxed.short)  # the box reaches the model as a visual prompt
        assert boxed.extra["perspective"] == "II" and boxed.extra["answer"] == templates.named_answer("liver", boxed.explanation)
        pointed = mimo.prompt_perceiving(ring, random.Random(seed), prompt="point")
        x, y = pointed.extra["prompt_point"]
        assert scan["ring_mask"][int(y * 48), int(x * 64)]  # on the ring, although its centroid is not
        assert pointed.short in templates.POINT_QUESTIONS and "prompt_box" not in pointed.extra
    with pytest.raises(ValueError, match="prompt"):
        mimo.prompt_perceiving(liver, random.Random(0), prompt="scribble")


def test_reasoning_and_prompted_questions(targets):
    liver, _ = targets
    held_out = {p.id for p in templates.REASONING_PHRASINGS + templates.VISUAL_PHRASINGS if p.held_out}
    for seed in range(10):
        third = mimo.reasoning_question(liver, "test", random.Random(seed))
        assert third.extra["perspective"] == "III" and third.extra["template_id"] in held_out
        assert "liver" not in third.long + third.short and "liver" in third.explanation
        assert third.extra["answer"] == templates.grounded_answer(third.explanation)
        fourth = mimo.prompted_question(liver, "train", random.Random(seed))
        assert fourth.extra["perspective"] == "IV" and fourth.extra["template_id"] not in held_out
        assert ("prompt_box" in fourth.extra) != ("prompt_point" in fourth.extra)
        assert "the drawn box" in fourth.long + fourth.short or "the clicked point" in fourth.long + fourth.short
        assert "liver" not in fourth.long + fourth.short and "liver" in fourth.explanation
        assert fourth.extra["answer"] == templates.named_answer("liver", fourth.explanation)
        assert parse_answer(fourth.extra["answer"], TOKENS).phrases == ["liver"]


def test_target_context_reads_record_extras(targets):
    liver, ring = targets
    context = mimo.target_context(liver)
    assert (context.modality, context.plane, context.present, context.position) == ("CT", "axial", ["stomach"], "left side")
    brain = Record(liver.image, liver.mask, "white matter", "q", "q", liver.bbox, extra={"plane": "coronal"})
    assert (mimo.target_context(brain).modality, mimo.target_context(brain).plane) == ("MR", "coronal")
    assert mimo.target_context(ring).present == []


def test_instructions_cover_all_perspectives(targets, tmp_path):
    liver, ring = targets
    absent = Record(liver.image, None, "spleen", "q", "q", None, absent=True)
    out = mimo.instructions([liver, ring, absent], "train", random.Random(0))
    # I for both, I for each alone, then II-IV per target (no knowledge about polyps: no III, IV)
    assert [r.extra["perspective"] for r in out] == ["I", "I", "I", "II", "III", "IV", "II"]
    assert [len(r.extra.get("targets", [None])) for r in out[:3]] == [2, 1, 1]
    assert out[1].extra["answer"] == templates.grouped_answer(["liver"]) and "liver" in out[1].short
    assert out == mimo.instructions([liver, ring, absent], "train", random.Random(0))
    third = Record(liver.image, liver.mask, "stomach", "q", "q", liver.bbox, source="t:3")
    out = mimo.instructions([liver, ring, third], "train", random.Random(0))
    pairs = [r for r in out if r.extra["perspective"] == "I" and len(r.extra.get("targets", [])) == 2]
    assert len(pairs) == 1 and len(out[0].extra["targets"]) == 3  # all three, then one named pair, then each alone
    more = mimo.instructions([liver, ring, third], "train", random.Random(0), pairs=5)
    asked = [tuple(t["class_text"] for t in r.extra["targets"]) for r in more
             if r.extra["perspective"] == "I" and len(r.extra.get("targets", [])) == 2]
    assert len(asked) == 3 and len({frozenset(p) for p in asked}) == 3  # every pair once, however many asked for
    assert asked[0] == tuple(t["class_text"] for t in pairs[0].extra["targets"])  # the first pair as with one
    assert mimo.join_labels(["a", "b", "c"]) == "a, b and c"


def test_prompts_single_out_their_target(targets, scan, write_png):
    """No prompt for a structure that contains another (every box or point on it is on the
    inner one too); only a point where another structure has nearly the same box."""
    liver, ring = targets
    assert mimo.prompt_kinds(liver, [ring]) == ("box", "point")
    grown = scan["liver_mask"] | np.roll(scan["liver_mask"], 1, axis=1)  # holds the liver, one column wider
    outer = Record(liver.image, write_png("masks/outer.png", grown), "brain", "q", "q", mask_bbox(grown), source="t:3")
    assert mimo.prompt_kinds(outer, [liver, ring]) == ()
    assert mimo.prompt_kinds(liver, [outer, ring]) == ("point",)
    out = mimo.instructions([liver, ring, outer], "train", random.Random(0))
    prompted = [r for r in out if r.extra["perspective"] in ("II", "IV")]
    assert {r.class_text for r in prompted} == {"liver", "polyp"}
    assert all("prompt_point" in r.extra for r in prompted if r.class_text == "liver")
