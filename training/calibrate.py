"""Choose a model's score threshold on validation data, never on the test split.

An entity's score is the probability the answer gives to grounding it; below the model's
``score_threshold`` the predictor reports nothing, which is how "that structure is not on
this slice" comes out. 0.5 is an arbitrary default: how sure a small model is differs from
run to run. The calibrated threshold is the lowest on a grid at which at least
``absent_goal`` of the validation split's absent targets get no entity, so present
targets are found as often as that allows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


def choose_threshold(present: list[float], absent: list[float], absent_goal: float = ABSENT_GOAL,
                     grid: tuple[float, ...] = GRID) -> Calibration:
    """The lowest grid threshold meeting ``absent_goal`` (the highest when none does)."""
    if not absent or not present:
        raise ValueError(f"calibration needs present and absent targets; got {len(present)} and {len(absent)}")
    present_scores, absent_scores = np.asarray(present), np.asarray(absent)
    chosen = next((t for t in grid if np.mean(absent_scores < t) >= absent_goal), grid[-1])
    return Calibration(chosen, float(np.mean(absent_scores < chosen)), float(np.mean(present_scores >= chosen)),
                       len(absent_scores), len(present_scores))


def presence_scores(predictor, records) -> tuple[list[float], list[float]]:
    """The best entity score of every short and long query (0 when none), split by whether
    the record's target is present. ``predictor`` must keep every entity (threshold 0)."""
    from medisee.data.loader import load_image

    present, absent = [], []
    for record in records:
        image = load_image(record)
        for query in (record.short, record.long):
            entities = predictor.predict(image, query, mode="fast").entities
            (absent if record.absent else present).append(max((e.score for e in entities), default=0.0))
    return present, absent


def calibrate(model_dir: Path, val: Path, absent_goal: float = ABSENT_GOAL) -> Calibration:
    """Measure on ``val`` and write the threshold into ``model_dir``'s config (atomically)."""
    from medisee.atomic import write_json
    from medisee.config import MediSeeConfig
    from medisee.data.mlmr import read_mlmr_jsonl
    from medisee.predictor import Predictor
    from medisee.weights import CONFIG_FILE, load_checkpoint

    predictor = Predictor(load_checkpoint(model_dir), score_threshold=0.0)
    result = choose_threshold(*presence_scores(predictor, read_mlmr_jsonl(val)), absent_goal=absent_goal)
    path = Path(model_dir) / CONFIG_FILE
    config = MediSeeConfig.load(path)
    config.score_threshold = result.threshold
    write_json(path, config.to_dict())
    log.info("%s: score threshold %.2f (validation: %.1f%% of %d absent targets answered with nothing, "
             "%.1f%% of %d present ones found)", model_dir, result.threshold, 100 * result.absent_none, result.absent,
             100 * result.present_found, result.present)
    return result
