"""Choose a model's score threshold and box source on validation data, never on the test split.

An entity's score is the probability the answer gives to grounding it; below the model's
``score_threshold`` the predictor reports nothing, which is how "that structure is not on
this slice" comes out. 0.5 is an arbitrary default: how sure a small model is differs from
run to run. The calibrated threshold is the lowest on a grid at which at least
``absent_goal`` of the validation split's absent targets get no entity, so present
targets are found as often as that allows.

The reported box (``box_source``) is the box decoder's or the tight box of the mask, which
the decoder's box prompted: whichever puts more of the validation split's found present
targets at box IoU > 0.5 (the decoder on a tie). A small box decoder trained from scratch
can miss a structure its mask finds (the tiny model's spleen boxes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medisee.atomic import write_json
from medisee.config import BOX_SOURCES, MediSeeConfig
from medisee.data.loader import load_image, load_mask
from medisee.data.mlmr import read_mlmr_jsonl
from medisee.metrics import box_iou, mask_to_box
from medisee.predictor import Predictor
from medisee.weights import CONFIG_FILE, load_checkpoint

from .evaluate import best_entity, gt_box_pixels

log = logging.getLogger("medisee.calibrate")
GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95
ABSENT_GOAL = 0.85  # a margin over the 80% the default model must reach on the test split


@dataclass
class Calibration:
    threshold: float
    absent_none: float  # share of the validation split's absent targets answered with nothing
    present_found: float  # share of its present targets that still get an entity
    absent: int
    present: int
    box_source: str = "decoder"
    box_acc: dict[str, float] = field(default_factory=dict)  # Acc@0.5 per source, found present targets


@dataclass
class Measurements:
    """Per query of a validation split: the best entity's score, and for present targets
    whether each box source puts it at IoU > 0.5 (None: no entity at all)."""

    present: list[float] = field(default_factory=list)
    absent: list[float] = field(default_factory=list)
    box_hits: list[dict[str, bool] | None] = field(default_factory=list)  # parallel to ``present``


def choose_threshold(present: list[float], absent: list[float], absent_goal: float = ABSENT_GOAL,
                     grid: tuple[float, ...] = GRID) -> Calibration:
    """The lowest grid threshold meeting ``absent_goal`` (the highest when none does)."""
    if not absent or not present:
        raise ValueError(f"calibration needs present and absent targets; got {len(present)} and {len(absent)}")
    present_scores, absent_scores = np.asarray(present), np.asarray(absent)
    chosen = next((t for t in grid if np.mean(absent_scores < t) >= absent_goal), grid[-1])
    return Calibration(chosen, float(np.mean(absent_scores < chosen)), float(np.mean(present_scores >= chosen)),
                       len(absent_scores), len(present_scores))


def choose_box_source(measured: Measurements, threshold: float) -> tuple[str, dict[str, float]]:
    """The box source with the higher Acc@0.5 over present targets found at ``threshold``."""
    found = [hits for score, hits in zip(measured.present, measured.box_hits) if hits is not None and score >= threshold]
    acc = {source: float(np.mean([hits[source] for hits in found])) if found else 0.0 for source in BOX_SOURCES}
    return ("mask" if acc["mask"] > acc["decoder"] else "decoder"), acc


def measure(predictor, records) -> Measurements:
    """Every short and long query of ``records``, fast mode. ``predictor`` must keep every
    entity (threshold 0) and report the decoder's boxes (the mask's box is derived here)."""
    out = Measurements()
    for record in records:
        image = load_image(record)
        gt_box = None if record.absent else gt_box_pixels(record, load_mask(record) > 0)
        for query in (record.short, record.long):
            entities = predictor.predict(image, query, mode="fast").entities
            best = best_entity(entities)
            score = best.score if best is not None else 0.0
            if record.absent:
                out.absent.append(score)
                continue
            out.present.append(score)
            out.box_hits.append(None if best is None else {
                "decoder": box_iou(best.box, gt_box) > 0.5, "mask": box_iou(mask_to_box(best.mask), gt_box) > 0.5})
    return out


def calibrate(model_dir: Path, val: Path, absent_goal: float = ABSENT_GOAL) -> Calibration:
    """Measure on ``val`` and write the threshold into ``model_dir``'s config (atomically)."""
    bundle = load_checkpoint(model_dir)
    bundle.config.box_source = "decoder"  # measure the decoder's boxes; the mask's come from the masks
    measured = measure(Predictor(bundle, score_threshold=0.0), read_mlmr_jsonl(val))
    result = choose_threshold(measured.present, measured.absent, absent_goal=absent_goal)
    result.box_source, result.box_acc = choose_box_source(measured, result.threshold)
    path = Path(model_dir) / CONFIG_FILE
    config = MediSeeConfig.load(path)
    config.score_threshold = result.threshold
    config.box_source = result.box_source
    write_json(path, config.to_dict())
    log.info("%s: score threshold %.2f (validation: %.1f%% of %d absent targets answered with nothing, "
             "%.1f%% of %d present ones found); boxes from the %s (Acc@0.5 decoder %.1f%%, mask %.1f%%)",
             model_dir, result.threshold, 100 * result.absent_none, result.absent, 100 * result.present_found,
             result.present, result.box_source, 100 * result.box_acc["decoder"], 100 * result.box_acc["mask"])
    return result
