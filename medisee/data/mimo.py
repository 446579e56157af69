"""MIMOSeg-style instructions over Records, from four perspectives:

* I: label-guided segmentation. The labels are named ("Please segment the liver and
  spleen in this image."); the answer gives one ``<p>label</p> [SEG] and [BBOX]`` group per
  label, one label included (as MIMO's label-guided answers): the name is copied into the
  group rather than into free text, which a small model drifts away from.
* II: visual-prompt perceiving. A box or point is given, the answer names what is there.
  II and IV answers open with the marked structure's ``<p>name</p>`` group
  (``templates.named_answer``), then explain.
* III: a reasoning question with a grounded, explained answer (:mod:`.queries`).
* IV: visual-prompt-assisted reasoning. A box or point plus a question about the marked
  structure, answered from the knowledge base.

Each generator returns a :class:`Record`: ``long``/``short`` hold the question (the same
text for I and II), ``explanation`` the text after the candidate tokens, and ``extra`` adds
``perspective``, ``answer`` (the whole answer text), ``prompt_box``/``prompt_point``
(normalised, for II and IV: the question only says "the drawn box", the model reads the
coordinates through its visual prompt encoder) and,
for a multi-label I, ``targets``: class_text, mask and bbox of every target in answer order
(the record's own ``mask``/``bbox`` are the first target's).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence

import numpy as np

from . import templates
from .knowledge import find_structure
from .mlmr import read_mask
from .queries import TargetContext, coarse_position, display_name, generate_queries, visual_prompt_query
from .records import Record
from .templates import DEFAULT_CANDIDATES, grounded_answer, grouped_answer, named_answer

PERSPECTIVES = ("I", "II", "III", "IV")
BOX_JITTER = 0.05  # each edge moves by up to this fraction of the box's width or height
POINT_JITTER = 0.05  # the centroid moves by up to this fraction of the box's width or height
NESTED_SHARE = 0.9  # a structure holding this share of a smaller one's mask contains it
SAME_BOX_IOU = 0.9  # two structures whose boxes overlap this much cannot be told apart by a box

__all__ = [
    "PERSPECTIVES",
    "grouped_answer",
    "instructions",
    "jitter_box",
    "join_labels",
    "label_guided",
    "prompt_perceiving",
    "prompt_kinds",
    "prompt_point",
    "prompted_question",
    "reasoning_question",
    "target_context",
]


def _check_present(record: Record) -> None:
    if record.absent or record.mask is None or record.bbox is None:
        raise ValueError(f"{record.source or record.image}: instructions need a present target with a mask and a box")


def _derived(record: Record, long: str, short: str, explanation: str, answer: str, perspective: str,
             **extra: object) -> Record:
    return Record(record.image, record.mask, record.class_text, long, short, record.bbox, explanation,
                  source=record.source, extra={**record.extra, "perspective": perspective, "answer": answer, **extra})


def join_labels(names: Sequence[str]) -> str:
    """"liver", "liver and spleen", "liver, spleen and stomach"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def target_context(record: Record) -> TargetContext:
    """What the query generator may use about a record's target: ``extra`` may give
    ``modality``, ``plane``, ``present`` and ``position``; the position defaults to the box's."""
    structure = find_structure(record.class_text)
    modality = record.extra.get("modality") or (structure.modalities[0] if structure else "CT")
    position = record.extra.get("position") or (coarse_position(record.bbox) if record.bbox else None)
    return TargetContext(record.class_text, modality, record.extra.get("plane", "axial"),
                         list(record.extra.get("present", [])), position)


def jitter_box(bbox: Sequence[float], rng: random.Random, amount: float = BOX_JITTER) -> list[float]:
    """The box with each edge moved a little, as a user would draw it; stays valid and in [0, 1]."""
    x0, y0, x1, y1 = bbox
    width, height = x1 - x0, y1 - y0
    moved = [min(max(v + rng.uniform(-amount, amount) * size, 0.0), 1.0)
             for v, size in ((x0, width), (y0, height), (x1, width), (y1, height))]
    if moved[0] >= moved[2] or moved[1] >= moved[3]:
        moved = [float(v) for v in bbox]
    return [round(v, 4) for v in moved]


def prompt_point(mask: np.ndarray, rng: random.Random, amount: float = POINT_JITTER) -> list[float]:
    """A click on the target near its centroid: the centroid, jittered, then moved to the
    nearest mask pixel (the centroid of a curved target can lie outside it)."""
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    cx = xs.mean() + rng.uniform(-amount, amount) * (xs.max() - xs.min() + 1)
    cy = ys.mean() + rng.uniform(-amount, amount) * (ys.max() - ys.min() + 1)
    nearest = int(np.argmin((xs - cx) ** 2 + (ys - cy) ** 2))
    return [round((xs[nearest] + 0.5) / width, 4), round((ys[nearest] + 0.5) / height, 4)]


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _record_mask(record: Record) -> np.ndarray:
    return read_mask(record.mask, record.source or str(record.mask))


def prompt_kinds(target: Record, others: Sequence[Record],
                 mask_of: Callable[[Record], np.ndarray] = _record_mask) -> tuple[str, ...]:
    """The visual prompts that single ``target`` out among the ``others`` on its slice, so
    that a prompted question has one right answer: none when the target contains another
    structure (every box or point on the brain is also on its grey or white matter), only
    a point when another structure has nearly the same box (the grey matter's box is the
    brain's), else a box or a point. ``mask_of`` reads a record's mask (pass a cached one
    to read each mask of a slice once)."""
    _check_present(target)
    mask = mask_of(target)
    kinds = ("box", "point")
    for other in others:
        if other.absent or other.mask is None or other.bbox is None:
            continue
        inner = mask_of(other)
        smaller = inner.shape == mask.shape and 0 < inner.sum() < mask.sum()
        if smaller and (inner & mask).sum() >= NESTED_SHARE * inner.sum():
            return ()
        if _box_iou(target.bbox, other.bbox) >= SAME_BOX_IOU:
            kinds = ("point",)
    return kinds


def _visual_prompt(record: Record, rng: random.Random, kind: str | None) -> dict[str, list[float]]:
    """``{"box": [...]}`` or ``{"point": [...]}`` on the target (``kind`` None draws one)."""
    kind = kind or rng.choice(("box", "point"))
    if kind == "box":
        return {"box": jitter_box(record.bbox, rng)}
    if kind == "point":
        return {"point": prompt_point(read_mask(record.mask, record.source or str(record.mask)), rng)}
    raise ValueError(f"prompt must be 'box', 'point' or None, got {kind!r}")


def label_guided(targets: Sequence[Record], rng: random.Random,
                 candidate_tokens: tuple[str, ...] = DEFAULT_CANDIDATES) -> Record:
    """Perspective I for one image: segment the named targets (all on the same image)."""
    if not targets:
        raise ValueError("label-guided segmentation needs at least one target")
    for target in targets:
        _check_present(target)
        if target.image != targets[0].image:
            raise ValueError(f"all targets must be on one image: {targets[0].image} and {target.image}")
    names = [display_name(t.class_text) for t in targets]
    query = templates.referring_query(join_labels(names), rng)
    listed = [{"class_text": t.class_text, "mask": str(t.mask), "bbox": list(t.bbox)} for t in targets]
    several = {"targets": listed} if len(targets) > 1 else {}  # one target: the record's own mask
    return _derived(targets[0], query, query, "", grouped_answer(names, candidate_tokens), "I", **several)


def prompt_perceiving(target: Record, rng: random.Random, prompt: str | None = None,
                      candidate_tokens: tuple[str, ...] = DEFAULT_CANDIDATES) -> Record:
    """Perspective II: what is the structure in the box / at the point? (``prompt`` None draws one)."""
    _check_present(target)
    visual = _visual_prompt(target, rng, prompt)
    query = rng.choice(templates.BOX_QUESTIONS if "box" in visual else templates.POINT_QUESTIONS)
    name = display_name(target.class_text)
    explanation = rng.choice(templates.PROMPT_ANSWERS).format(class_name=name)
    return _derived(target, query, query, explanation, named_answer(name, explanation, candidate_tokens), "II",
                    **{f"prompt_{kind}": value for kind, value in visual.items()})


def reasoning_question(target: Record, split: str, rng: random.Random,
                       candidate_tokens: tuple[str, ...] = DEFAULT_CANDIDATES) -> Record:
    """Perspective III: an implicit question whose answer grounds and explains the target."""
    _check_present(target)
    qa = generate_queries(target_context(target), split, rng, count=1)[0]
    return _derived(target, qa.long, qa.short, qa.explanation, grounded_answer(qa.explanation, candidate_tokens),
                    "III", template_id=qa.template_id, orientation=qa.orientation)


def prompted_question(target: Record, split: str, rng: random.Random, prompt: str | None = None,
                      candidate_tokens: tuple[str, ...] = DEFAULT_CANDIDATES) -> Record:
    """Perspective IV: a box or point marks the target and the question asks about it."""
    _check_present(target)
    visual = _visual_prompt(target, rng, prompt)
    qa = visual_prompt_query(target_context(target), templates.prompt_region(**visual), split, rng)
    answer = named_answer(display_name(target.class_text), qa.explanation, candidate_tokens)
    return _derived(target, qa.long, qa.short, qa.explanation, answer, "IV", template_id=qa.template_id,
                    **{f"prompt_{kind}": value for kind, value in visual.items()})


def instructions(records: Sequence[Record], split: str, rng: random.Random,
                 candidate_tokens: tuple[str, ...] = DEFAULT_CANDIDATES, pairs: int = 1) -> list[Record]:
    """Every perspective for every image: I over all its present targets, over ``pairs``
    distinct random pairs (two named structures is the common request; images with three
    or more targets) and over each target alone, then III for each target the knowledge
    base knows, and II and IV (that one too only when known) for each target a prompt can
    single out (``prompt_kinds``). Absent targets are skipped."""
    by_image: dict = {}
    for record in records:
        if not record.absent and record.mask is not None:
            by_image.setdefault(record.image, []).append(record)
    out = []
    for targets in by_image.values():
        out.append(label_guided(targets, rng, candidate_tokens))
        if len(targets) >= 3:
            first = rng.sample(targets, 2)
            others = [list(p) for p in itertools.combinations(targets, 2) if {id(t) for t in p} != {id(t) for t in first}]
            for pair in [first] + rng.sample(others, min(pairs - 1, len(others))):
                out.append(label_guided(pair, rng, candidate_tokens))
        if len(targets) >= 2:
            out.extend(label_guided([target], rng, candidate_tokens) for target in targets)
        masks = {id(t): _record_mask(t) for t in targets}  # each mask read once per image
        for target in targets:
            kinds = prompt_kinds(target, [t for t in targets if t is not target], lambda r: masks[id(r)])
            if kinds:
                out.append(prompt_perceiving(target, rng, rng.choice(kinds), candidate_tokens))
            if find_structure(target.class_text) is not None:
                out.append(reasoning_question(target, split, rng, candidate_tokens))
                if kinds:
                    out.append(prompted_question(target, split, rng, rng.choice(kinds), candidate_tokens))
    return out
