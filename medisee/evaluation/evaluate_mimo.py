"""Evaluation of MIMO's two capabilities on the four MIMOSeg perspectives (MIMO section 4,
appendix D), built from the present targets of an MLMR-SD file.

Every instruction is answered in ``full`` mode (the text names the entities) with its box
or point, when it has one, given as a visual prompt. Per perspective: mIoU and AP50 over
the entities' masks, the grounding F1 of appendix D (an entity counts when its phrase
names the ground truth's structure and its mask IoU > 0.5) and BLEU-4 / ROUGE-L / METEOR
of the answer text against the instruction's reference answer. For II and IV, where the
question does not name the structure, ``prompt_naming`` is the fraction of questions whose
highest-scoring entity names the right one.

Outputs in ``out_dir``: ``mimo_metrics.json`` and ``mimo_per_sample.jsonl``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medisee.atomic import write_text
from medisee.conversation import parse_answer
from medisee.data.loader import load_image, load_mask
from medisee.data.mimo import PERSPECTIVES, instructions
from medisee.data.records import DataError, Record
from medisee.metrics_mimo import (
    ByPerspective,
    Entity,
    GroundingF1Accumulator,
    MaskEntityAccumulator,
    TextAccumulator,
    phrases_match,
)
from medisee.predictor import PredictionInputError

SCHEMA_VERSION = 1
PROMPTED = ("II", "IV")  # perspectives whose question marks the structure without naming it

Progress = Callable[[int, int], None]


def mimo_instructions(records: list[Record], seed: int = 0, limit_per_perspective: int | None = None) -> list[Record]:
    """The perspectives I-IV over ``records``' present targets, with each record's own split's
    phrasings (held-out ones for "test"), at most ``limit_per_perspective`` of each (drawn
    evenly with ``seed``), in a reproducible order."""
    rng = random.Random(seed)
    by_split: dict[str, list[Record]] = {}
    for record in records:
        by_split.setdefault("test" if record.extra.get("split") == "test" else "train", []).append(record)
    built = [r for split, group in sorted(by_split.items()) for r in instructions(group, split, rng)]
    chosen = []
    for perspective in PERSPECTIVES:
        these = [r for r in built if r.extra["perspective"] == perspective]
        if limit_per_perspective is not None and len(these) > limit_per_perspective:
            these = [these[i] for i in sorted(rng.sample(range(len(these)), limit_per_perspective))]
        chosen += these
    return chosen


def _ground_truth(record: Record, shape: tuple[int, ...]) -> list[Entity]:
    targets = record.extra.get("targets") or [{"class_text": record.class_text, "mask": record.mask}]
    entities = []
    for target in targets:
        mask = load_mask(record, target["mask"])
        if mask.shape != shape:
            raise DataError(f"{record.source}: mask {mask.shape} and image {shape} differ in size")
        entities.append(Entity(target["class_text"], mask))
    return entities


def _prompt_pixels(record: Record, shape: tuple[int, ...]) -> dict:
    height, width = shape
    out = {}
    if record.extra.get("prompt_box"):
        x0, y0, x1, y1 = record.extra["prompt_box"]
        out["box"] = (x0 * width, y0 * height, x1 * width, y1 * height)
    if record.extra.get("prompt_point"):
        x, y = record.extra["prompt_point"]
        out["point"] = (min(x * width, width - 0.5), min(y * height, height - 0.5))
    return out


def evaluate_mimo(predictor, instructions_: list[Record], out_dir: Path, progress: Progress | None = None) -> dict:
    """Answer every instruction (``predictor.predict(image, query, box=, point=, mode="full")``)
    and write the metrics. Returns the dict written to ``out_dir/mimo_metrics.json``::

        {"schema": 1, "mode": "full", "instructions", "seconds_per_query",
         "perspectives": {"all" | "I" | ... : {"miou", "ap50", "gt_entities", "pred_entities",
                          "images", "grounding_f1", "grounding_precision", "grounding_recall",
                          "grounding_correct", "grounding_predicted", "grounding_gt",
                          "bleu4", "rouge_l", "meteor", "answers"}},
         "prompt_naming": {"all" | "box" | "point": {"rate", "count"}},
         "files": {"per_sample"}}
    """
    if not instructions_:
        raise ValueError("no MIMO instructions to evaluate")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    masks = ByPerspective(MaskEntityAccumulator)
    grounding = ByPerspective(GroundingF1Accumulator)
    text = ByPerspective(TextAccumulator)
    naming: dict[str, list[bool]] = {"all": [], "box": [], "point": []}
    samples, seconds = [], 0.0
    candidates = predictor.model.config.candidate_tokens
    for done, record in enumerate(instructions_, start=1):
        perspective = record.extra["perspective"]
        image = load_image(record)
        gts = _ground_truth(record, image.shape[:2])
        prompts = _prompt_pixels(record, image.shape[:2])
        tick = time.perf_counter()
        try:
            prediction = predictor.predict(image, record.short, mode="full", **prompts)
        except PredictionInputError as err:
            raise DataError(f"{record.source}: {err}") from err
        seconds += time.perf_counter() - tick
        preds = [Entity(e.phrase, np.asarray(e.mask, bool), e.score) for e in prediction.entities]
        masks.add(perspective, preds, gts)
        correct = grounding.add(perspective, preds, gts)
        reference = parse_answer(record.extra["answer"], candidates).text
        text.add(perspective, prediction.answer, reference)
        sample = {"source": record.source, "perspective": perspective, "query": record.short, **prompts,
                  "answer": prediction.answer, "reference": reference,
                  "ground_truth": [g.phrase for g in gts], "entities": [e.phrase for e in preds], "correct": correct}
        if perspective in PROMPTED:
            best = max(preds, key=lambda e: e.score) if preds else None
            right = best is not None and phrases_match(best.phrase, gts[0].phrase)
            for key in ("all", "box" if "box" in prompts else "point"):
                naming[key].append(right)
            sample["named_right"] = right
        samples.append(sample)
        if progress is not None:
            progress(done, len(instructions_))

    summaries = [masks.summary(), grounding.summary(), text.summary()]
    groups = sorted({g for s in summaries for g in s}, key=lambda g: (g != "all", g))
    metrics = {
        "schema": SCHEMA_VERSION,
        "mode": "full",
        "instructions": len(instructions_),
        "seconds_per_query": seconds / len(instructions_),
        "perspectives": {g: {k: v for s in summaries for k, v in s.get(g, {}).items()} for g in groups},
        "prompt_naming": {k: {"rate": (sum(v) / len(v)) if v else None, "count": len(v)} for k, v in naming.items()},
        "files": {"per_sample": "mimo_per_sample.jsonl"},
    }
    write_text(out_dir / "mimo_per_sample.jsonl", "".join(json.dumps(s) + "\n" for s in samples))
    write_text(out_dir / "mimo_metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
