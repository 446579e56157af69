"""``medisee calibrate --model DIR --data val.jsonl``: choose the model's score threshold and
box source on validation data (code in ``medisee/evaluation/calibrate.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..evaluation.calibrate import calibrate


def register(commands) -> None:
    parser = commands.add_parser(
        "calibrate", help="choose a trained model's score threshold and box source on validation data",
        description="Measure a trained model on an MLMR-SD-format validation file (never the test split) and "
        "write into its config the lowest score threshold at which the given share of the file's absent "
        "targets are answered with nothing (below the threshold no entity is reported), and whether boxes come "
        "from the box decoder or from the masks (the one with the higher Acc@0.5 on the file's present targets).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, type=Path, help="a MediSee checkpoint folder (rewritten in place)")
    parser.add_argument("--data", required=True, type=Path, help="validation .jsonl with present and absent targets")
    parser.add_argument("--absent-goal", type=float, default=0.85,
                        help="share of absent targets that must get no entity")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.absent_goal <= 1:
        raise ValueError(f"--absent-goal must be in (0, 1], got {args.absent_goal}")
    result = calibrate(args.model, args.data, absent_goal=args.absent_goal)
    print(f"score threshold {result.threshold:g} written to {args.model}: {100 * result.absent_none:.1f}% of "
          f"{result.absent} absent targets answered with nothing, {100 * result.present_found:.1f}% of "
          f"{result.present} present targets found; boxes from the {result.box_source} (Acc@0.5 decoder "
          f"{100 * result.box_acc['decoder']:.1f}%, mask {100 * result.box_acc['mask']:.1f}%)")
    return 0
