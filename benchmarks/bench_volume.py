"""Whole-volume answers: the language model on key slices only against on every slice, same run.

Goal (issue 20): for a whole volume in full mode, key slices are at least 5x faster than
every slice and lose at most 2 points of 3D Dice. Both read the sample CT (the phantom the
server ships, 40 slices) with the bundled default model; the encoders' cache is emptied
before each answer so that neither reuses the other's work, and the image encoders' time
(every slice needs its SAM encoding for its mask, whichever slices the language model reads)
is reported apart from the rest, and so is the language model's own time (the slices it
reads: generation, grounding and their masks). Dice is against the phantom's own masks, per
asked structure.

    .venv/bin/python benchmarks/bench_volume.py            # prints a table and one JSON line
    .venv/bin/python benchmarks/bench_volume.py --mode fast --repeats 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import numpy as np

from medisee.data.demo.sample_study import sample_phantom
from medisee.imaging import extract_slice, to_uint8
from medisee.metrics import mask_dice
from medisee.models import load_model
from medisee.predictor import MODES, Predictor
from medisee.study import StudyQuestion, ask_study

QUESTIONS = (  # (question, the structures it asks for): requests (short answers) and reasoning (explained)
    ("Segment the liver.", ("liver",)),
    ("outline both kidneys", ("left kidney", "right kidney")),
    ("where is the spleen?", ("spleen",)),
    ("show me the heart", ("heart",)),
    ("Which organ makes bile?", ("liver",)),
    ("Which organ pumps blood through the body?", ("heart",)),
    ("Which organ removes old red blood cells?", ("spleen",)),
)


class LanguageModelClock:
    """Seconds spent in ``Predictor.predict_slices`` (the language model reading slices)."""

    def __init__(self, predictor: Predictor) -> None:
        self.seconds = 0.0
        self.read = predictor.predict_slices
        predictor.predict_slices = self.timed

    def timed(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.read(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


def answer(predictor: Predictor, clock: LanguageModelClock, image, query: str, asked: tuple[str, ...], masks: dict,
           mode: str, language_slices: str) -> tuple[float, float, float, list[float]]:
    """Seconds for one whole-volume answer (the image encoders first, then the rest on their
    cached encodings), the language model's part of the rest and the 3D Dice of each asked
    structure."""
    predictor.cache.clear()
    planes = [extract_slice(dataclasses.replace(image, array=to_uint8(image)), i) for i in range(image.shape[0])]
    started = time.perf_counter()
    predictor.encode(planes)
    encoded = time.perf_counter()
    clock.seconds = 0.0
    study = ask_study(predictor, image, StudyQuestion(query=query, slices="all", mode=mode,
                                                      language_slices=language_slices))
    seconds = time.perf_counter() - encoded
    scores = []
    for name in asked:
        labels = [v.label for v in study.volume_entities if v.phrase == name]
        scores.append(mask_dice(np.isin(study.labels, labels), masks[name]))
    return encoded - started, seconds, clock.seconds, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", default="full", choices=MODES)
    parser.add_argument("--repeats", type=int, default=1, help="answers per question and reading (median time)")
    parser.add_argument("--slices", type=int, default=40, help="slices of the sample CT")
    args = parser.parse_args()
    phantom = sample_phantom(0, args.slices)
    image = phantom.to_medical_image()
    predictor = Predictor(load_model("default").bundle)
    predictor.predict(np.zeros((64, 64), np.uint8), "warm up", mode=args.mode)  # first-call costs out of the timing
    clock = LanguageModelClock(predictor)
    rows = []
    for query, asked in QUESTIONS:
        result = {"query": query}
        for reading in ("every", "key"):
            runs = [answer(predictor, clock, image, query, asked, phantom.masks, args.mode, reading)
                    for _ in range(args.repeats)]
            result["encode_s"] = statistics.median(r[0] for r in runs)
            result[f"{reading}_s"] = statistics.median(r[1] for r in runs)
            result[f"{reading}_lm_s"] = statistics.median(r[2] for r in runs)
            result[f"{reading}_dice"] = float(np.mean(runs[0][3]))
        rows.append(result)
    encode_s, every_s, key_s, every_lm_s, key_lm_s = (
        sum(r[k] for r in rows) for k in ("encode_s", "every_s", "key_s", "every_lm_s", "key_lm_s"))
    every_dice, key_dice = (float(np.mean([r[f"{k}_dice"] for r in rows])) for k in ("every", "key"))
    print(f"{'question':34s} {'encoders s':>10s} {'every s':>8s} {'(LM)':>6s} {'key s':>7s} {'(LM)':>6s} "
          f"{'every Dice':>10s} {'key Dice':>9s}")
    for r in rows:
        print(f"{r['query'][:34]:34s} {r['encode_s']:10.2f} {r['every_s']:8.2f} {r['every_lm_s']:6.2f} "
              f"{r['key_s']:7.2f} {r['key_lm_s']:6.2f} {100 * r['every_dice']:10.1f} {100 * r['key_dice']:9.1f}")
    print(f"{'all':34s} {encode_s:10.2f} {every_s:8.2f} {every_lm_s:6.2f} {key_s:7.2f} {key_lm_s:6.2f} "
          f"{100 * every_dice:10.1f} {100 * key_dice:9.1f}")
    whole = (encode_s + every_s) / (encode_s + key_s)
    summary = {"mode": args.mode, "slices": args.slices, "speedup_whole_volume": whole,
               "speedup_beyond_encoders": every_s / key_s, "speedup_language_model": every_lm_s / key_lm_s,
               "encoder_share_every": encode_s / (encode_s + every_s),
               "dice_every": every_dice, "dice_key": key_dice, "dice_lost_points": 100 * (every_dice - key_dice),
               "goal_speedup_5x": whole >= 5, "goal_dice_within_2_points": 100 * (every_dice - key_dice) <= 2}
    print(json.dumps(summary))

if __name__ == "__main__":
    main()
