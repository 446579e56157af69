"""Retrain on radiologists' corrections and keep the result only if it is no worse.

``retrain`` (used by the MONAI Label trainer) and ``python -m training.retrain``:

1. every correction becomes records (:mod:`medisee.data.corrections`) in ``work_dir/data``;
2. the records are split by study: whole corrected studies are held out (about
   ``heldout_fraction`` of them, at least one, never all). With a single study a
   deterministic subset of its labelled slices is held out instead; neighbouring slices
   look alike, so that estimate is optimistic, and the report says so;
3. the base model is evaluated on the held-out records and on the reference studies
   (``training.reference``: phantoms whose truth nobody corrected), in the mode the model
   will be served in (``medisee.evaluation.evaluate``; ``full`` by default);
4. ``training.train.run`` trains from ``checkpoint:<base_model>`` in the paper's end-to-end
   phase (LoRA on the language model; mask decoder, routers, projections and box decoder
   trained; encoders frozen) with a small learning rate, into ``work_dir/run``;
5. the new model (``work_dir/run/model``) is evaluated on the same records and **accepted
   only when** (``judge``): at least ``min_targets`` targets were evaluated, it finds
   something, its held-out gIoU is at least the base model's (ties accept: a round that
   changes nothing measurable does no harm and keeps the corrections' influence), and its
   reference gIoU fell by no more than ``REFERENCE_TOLERANCE``. Held-out corrections share
   the corrections' mistakes (swapped left and right kidneys look right there); the
   reference studies do not.

Held-out multi-target records (a question grounding several entities on one slice) are
neither trained on nor evaluated: the evaluation scores one entity per question. The
report is also written to ``work_dir/report.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medisee.atomic import write_json
from medisee.data.corrections import Correction, correction_records, study_name
from medisee.data.mlmr import write_mlmr_jsonl
from medisee.data.records import Record
from medisee.evaluation.evaluate import evaluate
from medisee.models import DEFAULT, default_model_dir
from medisee.predictor import Predictor
from medisee.weights import load_checkpoint

from .config import DataSource, TrainConfig
from .reference import REFERENCE_SEEDS, reference_corrections
from .train import run

log = logging.getLogger("medisee.retrain")

HEADLINE = "giou"
MIN_TARGETS = 8  # present targets (held-out and reference) below which no model can be judged
REFERENCE_TOLERANCE = 0.02  # gIoU a retrained model may lose on the reference studies
RULE = (f"accepted when, in the served mode, the retrained model's held-out gIoU >= the base model's (ties accept), "
        f"its reference gIoU is at most {REFERENCE_TOLERANCE} lower, it finds something, and at least {MIN_TARGETS} "
        "targets were evaluated")
HEADLINE_KEYS = ("giou", "ciou", "dice", "box_iou", "box_acc", "absence_rate", "count", "absent_count", "queries")
Progress = Callable[[str, int, int], None]  # (phase, done, total); phases: data, before, train, after


@dataclass
class RetrainReport:
    accepted: bool
    rule: str
    before: dict  # the base model on the held-out records: HEADLINE_KEYS + records
    after: dict  # the retrained model on the same records
    reference_before: dict  # the base model on the reference studies
    reference_after: dict
    reasons: list[str]  # why the model was rejected (empty when accepted)
    mode: str  # the inference mode both models were evaluated in
    base_model: Path
    new_model_dir: Path  # the retrained checkpoint (work_dir/run/model)
    n_train: int  # training records (samples)
    n_heldout: int  # held-out records evaluated
    heldout_by: str  # "study" or "slice"
    train_studies: list[str]
    heldout_studies: list[str]
    steps: int
    seconds: float
    work_dir: Path
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


def should_accept(before: float, after: float) -> bool:
    """The acceptance rule: the new model must be no worse on the headline metric (ties accept;
    NaN never does)."""
    return after >= before


def judge(before: dict, after: dict, reference_before: dict, reference_after: dict,
          min_targets: int = MIN_TARGETS) -> list[str]:
    """Why the retrained model may not be served (empty: it may); see the module docstring."""
    reasons = []
    targets = (before.get("count") or 0) + (reference_before.get("count") or 0)
    if targets < min_targets:
        reasons.append(f"only {targets} targets were evaluated; at least {min_targets} are needed to judge a model")
    found = [numbers.get(HEADLINE) or 0.0 for numbers in (after, reference_after) if numbers.get("count")]
    if not any(value > 0 for value in found):
        reasons.append("the retrained model finds nothing on the held-out and reference studies")
    if before.get("count") and not should_accept(before[HEADLINE] or 0.0, after[HEADLINE] or 0.0):
        reasons.append(f"held-out gIoU fell from {_fmt(before[HEADLINE])} to {_fmt(after[HEADLINE])}")
    if reference_before.get("count"):
        fell = (reference_before[HEADLINE] or 0.0) - (reference_after[HEADLINE] or 0.0)
        if not fell <= REFERENCE_TOLERANCE:
            reasons.append(f"reference gIoU fell from {_fmt(reference_before[HEADLINE])} to "
                           f"{_fmt(reference_after[HEADLINE])} (more than {REFERENCE_TOLERANCE})")
    return reasons


def headline(metrics: dict) -> dict:
    """The numbers the decision and the report need, from ``medisee.evaluation.evaluate``'s metrics."""
    overall = metrics["overall"]
    return {**{key: overall.get(key) for key in HEADLINE_KEYS}, "records": metrics["records"]}


def _evaluable(record: Record) -> bool:
    """``medisee.evaluation.evaluate`` scores one entity per question: multi-target records are left out."""
    return "targets" not in record.extra


def split_records(records: list[Record], heldout_fraction: float, seed: int) -> tuple[list[Record], list[Record], str, list[str]]:
    """(train, held-out, "study" or "slice", held-out studies). Whole studies are held out
    when there are two or more; otherwise labelled slices of the one study."""
    studies = sorted({r.extra["study"] for r in records})
    rng = random.Random(f"{seed}:split")
    if len(studies) > 1:
        count = min(len(studies) - 1, max(1, round(heldout_fraction * len(studies))))
        heldout = set(rng.sample(studies, count))
        return ([r for r in records if r.extra["study"] not in heldout],
                [r for r in records if r.extra["study"] in heldout], "study", sorted(heldout))
    labelled = sorted({r.extra["slice"] for r in records if not r.absent})
    if len(labelled) < 2:
        raise ValueError("a single corrected study with one labelled slice cannot be split into training and "
                         "held-out data: correct more slices or more studies")
    count = min(len(labelled) - 1, max(1, round(heldout_fraction * len(labelled))))
    heldout = set(rng.sample(labelled, count))
    return ([r for r in records if r.extra["slice"] not in heldout],
            [r for r in records if r.extra["slice"] in heldout], "slice", [])


def _evaluate(model_dir: Path, records: list[Record], out_dir: Path, phase: str, mode: str,
              progress: Progress | None) -> dict:
    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(phase, done, total)

    if not records:
        return {key: None for key in HEADLINE_KEYS} | {"records": 0}
    metrics = evaluate(Predictor(load_checkpoint(model_dir)), records, out_dir, mode=mode, progress=report)
    numbers = headline(metrics)
    log.info("%s: gIoU %s on %d records (%d present queries, %s mode)", phase, _fmt(numbers["giou"]),
             len(records), numbers["count"] or 0, mode)
    return numbers


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


class _TrainSteps(logging.Handler):
    """Passes ``training.train``'s "step N/M" log lines on as progress (it has no callback)."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("step %d/%d") and len(record.args or ()) >= 2:
            self.progress("train", int(record.args[0]), int(record.args[1]))


def _train(base_model: Path, train_file: Path, run_dir: Path, steps: int, batch_size: int, lr: float, seed: int,
           progress: Progress | None) -> Path:
    config = TrainConfig(
        output_dir=run_dir, train=[DataSource(train_file)], init=f"checkpoint:{base_model}", phase="end_to_end",
        steps=steps, batch_size=batch_size, lr=lr, warmup_steps=max(1, steps // 10), save_every=steps,
        log_every=max(1, steps // 20), seed=seed, keep_checkpoints=1,
    )
    train_log = logging.getLogger("medisee.train")
    handler = _TrainSteps(progress) if progress is not None else None
    level = train_log.level
    if handler is not None:
        train_log.addHandler(handler)
        if not train_log.isEnabledFor(logging.INFO):
            train_log.setLevel(logging.INFO)
    try:
        result = run(config, show_progress=False)
    finally:
        if handler is not None:
            train_log.removeHandler(handler)
            train_log.setLevel(level)
    # the exported model is what gets served; the DeepSpeed state (optimizer included) would
    # only let this run resume, and for a 7B model it is many gigabytes
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return result.model_dir


def retrain(
    base_model: Path,
    corrections: list[Correction],
    work_dir: Path,
    steps: int = 60,
    batch_size: int = 2,
    lr: float = 1e-4,
    heldout_fraction: float = 0.25,
    seed: int = 0,
    progress: Progress | None = None,
    max_slices_per_study: int = 16,
    mode: str = "full",
    reference_seeds: tuple[int, ...] = REFERENCE_SEEDS,
    min_targets: int = MIN_TARGETS,
) -> RetrainReport:
    """Train ``base_model`` (a MediSee checkpoint folder) on ``corrections`` and compare it with
    the base on held-out records and the reference phantoms ``reference_seeds``
    (``training.reference``; none: held-out records alone), in ``mode`` (see the module
    docstring). ``work_dir`` must be new or empty. ``progress(phase, done, total)`` follows
    data building, the evaluations and training."""
    started = time.perf_counter()
    base_model, work_dir = Path(base_model).resolve(), Path(work_dir).resolve()
    _check_arguments(base_model, corrections, work_dir, steps, batch_size, lr, heldout_fraction, mode)
    work_dir.mkdir(parents=True, exist_ok=True)
    data_dir = work_dir / "data"
    records = _correction_records(corrections, data_dir, seed, max_slices_per_study, progress)
    train, heldout, heldout_by, heldout_studies, notes = _split_and_write(records, heldout_fraction, seed, data_dir)
    train_studies = sorted({r.extra["study"] for r in train})
    checks = _reference_records(work_dir / "reference", reference_seeds, seed)

    before = _evaluate(base_model, heldout, work_dir / "eval-before", "before", mode, progress)
    reference_before = _evaluate(base_model, checks, work_dir / "eval-reference-before", "reference before", mode,
                                 progress)
    log.info("training %d steps (batch %d, lr %g) from %s", steps, batch_size, lr, base_model)
    new_model = _train(base_model, data_dir / "train.jsonl", work_dir / "run", steps, batch_size, lr, seed, progress)
    after = _evaluate(new_model, heldout, work_dir / "eval-after", "after", mode, progress)
    reference_after = _evaluate(new_model, checks, work_dir / "eval-reference-after", "reference after", mode, progress)

    reasons = judge(before, after, reference_before, reference_after, min_targets)
    accepted = not reasons
    report = RetrainReport(
        accepted=accepted, rule=RULE, before=before, after=after, reference_before=reference_before,
        reference_after=reference_after, reasons=reasons, mode=mode, base_model=base_model, new_model_dir=new_model,
        n_train=len(train), n_heldout=len(heldout), heldout_by=heldout_by, train_studies=train_studies,
        heldout_studies=heldout_studies, steps=steps, seconds=round(time.perf_counter() - started, 2),
        work_dir=work_dir, notes=notes,
    )
    write_json(work_dir / "report.json", report.to_dict())
    log.info("held-out gIoU %s -> %s, reference %s -> %s: %s (%.0f s)", _fmt(before[HEADLINE]), _fmt(after[HEADLINE]),
             _fmt(reference_before[HEADLINE]), _fmt(reference_after[HEADLINE]),
             "accepted" if accepted else "rejected: " + "; ".join(reasons), report.seconds)
    return report


def _check_arguments(base_model: Path, corrections: list[Correction], work_dir: Path, steps: int, batch_size: int,
                     lr: float, heldout_fraction: float, mode: str) -> None:
    if not corrections:
        raise ValueError("no corrections to retrain on: submit at least one corrected label")
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"steps and batch_size must be at least 1 and lr positive, got {steps}, {batch_size}, {lr}")
    if mode not in ("full", "fast"):
        raise ValueError(f"unknown mode {mode!r}: choose full or fast")
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be between 0 and 1, got {heldout_fraction}")
    if not (base_model / "config.json").is_file():
        raise ValueError(f"{base_model} is not a MediSee checkpoint folder (no config.json)")
    if work_dir.exists() and any(work_dir.iterdir()):
        raise ValueError(f"{work_dir} is not empty: give retraining a new folder")


def _correction_records(corrections: list[Correction], data_dir: Path, seed: int, max_slices: int,
                        progress: Progress | None) -> list[Record]:
    """Every correction's records, each study under its own (unique) name."""
    log.info("building training records from %d corrected studies", len(corrections))
    records: list[Record] = []
    names: set[str] = set()
    for i, correction in enumerate(corrections):
        name = study_name(correction.image)
        study = name if name not in names else f"{name}-{i}"
        names.add(study)
        records += correction_records(correction, data_dir / study, study=study, seed=seed, max_slices=max_slices)
        if progress is not None:
            progress("data", i + 1, len(corrections))
    return records


def _split_and_write(records: list[Record], heldout_fraction: float, seed: int,
                     data_dir: Path) -> tuple[list[Record], list[Record], str, list[str], list[str]]:
    """Training and evaluable held-out records (written to ``data_dir``), how they were held
    out, the held-out studies and the notes the report carries about the split."""
    train, heldout_all, heldout_by, heldout_studies = split_records(records, heldout_fraction, seed)
    heldout = [r for r in heldout_all if _evaluable(r)]
    notes = []
    if heldout_by == "slice":
        notes.append("only one corrected study: held-out data are slices of the training study, so the "
                     "held-out figures are optimistic")
    if len(heldout) < len(heldout_all):
        notes.append(f"{len(heldout_all) - len(heldout)} held-out multi-entity records were not evaluated "
                     "(evaluation scores one entity per question)")
    write_mlmr_jsonl(train, data_dir / "train.jsonl")
    write_mlmr_jsonl(heldout, data_dir / "heldout.jsonl")
    log.info("%d training and %d held-out records (held out by %s%s)", len(train), len(heldout), heldout_by,
             f": {', '.join(heldout_studies)}" if heldout_studies else "")
    return train, heldout, heldout_by, heldout_studies, notes


def _reference_records(folder: Path, reference_seeds: tuple[int, ...], seed: int) -> list[Record]:
    """The reference phantoms' evaluable records (written to ``folder/reference.jsonl``)."""
    reference = reference_corrections(folder / "studies", reference_seeds)
    checks = [r for i, c in enumerate(reference)
              for r in correction_records(c, folder / f"study-{i}", study=f"reference-{i}", seed=seed,
                                          max_slices=4, absent_slices=0) if _evaluable(r)]
    write_mlmr_jsonl(checks, folder / "reference.jsonl")
    return checks


# -- command line ---------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.retrain",
        description="Retrain a MediSee checkpoint on corrected label volumes and report whether it got no worse "
                    "on held-out data. The new model is " + RULE + ".",
        epilog='example: python -m training.retrain --model default --image ct.nii.gz --label ct_labels.nii.gz '
               '--names \'{"1": "liver", "2": "spleen"}\' --query "Where is the liver?" --out runs/retrain-1',
    )
    parser.add_argument("--model", required=True, help="checkpoint folder to start from, or 'default' (the bundled model)")
    parser.add_argument("--image", required=True, action="append",
                        help="corrected study: NIfTI/NRRD file or DICOM folder (repeat for several studies)")
    parser.add_argument("--label", required=True, action="append",
                        help="integer label volume of the same shape, 0 = background (one per --image, in order)")
    parser.add_argument("--names", required=True, help='JSON map of label value to phrase, e.g. \'{"1": "liver"}\'')
    parser.add_argument("--query", default="", help="the question the labels answer (optional)")
    parser.add_argument("--axis", default="axial", help="slice axis: axial, coronal or sagittal (default axial)")
    parser.add_argument("--window", default=None, help="CT window: a preset name or LEVEL,WIDTH (default: as inference)")
    parser.add_argument("--out", required=True, help="new or empty work folder (data, run, evaluations, report.json)")
    parser.add_argument("--steps", type=int, default=60, help="training steps (default 60)")
    parser.add_argument("--batch-size", type=int, default=2, help="samples per step (default 2)")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    parser.add_argument("--heldout-fraction", type=float, default=0.25,
                        help="share of studies held out, or of labelled slices with one study (default 0.25)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", default="full", choices=["full", "fast"],
                        help="inference mode of both evaluations: the mode the model will be served in (default full)")
    parser.add_argument("--no-reference", action="store_true",
                        help="judge on the held-out corrections alone, without the reference phantoms")
    return parser


def _label_names(text: str) -> dict:
    try:
        names = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--names is not valid JSON ({err.msg}): give e.g. '{{\"1\": \"liver\"}}'") from None
    if not isinstance(names, dict):
        raise ValueError("--names must be a JSON object mapping label values to phrases, e.g. '{\"1\": \"liver\"}'")
    return names


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[medisee] %(message)s")
    try:
        if len(args.image) != len(args.label):
            raise ValueError(f"got {len(args.image)} --image but {len(args.label)} --label: give one label per image")
        names = _label_names(args.names)
        corrections = [Correction(image, label, names, args.query, args.axis, args.window)
                       for image, label in zip(args.image, args.label)]
        model = default_model_dir() if args.model == DEFAULT else Path(args.model)
        report = retrain(model, corrections, Path(args.out), steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         heldout_fraction=args.heldout_fraction, seed=args.seed, mode=args.mode,
                         reference_seeds=() if args.no_reference else REFERENCE_SEEDS)
    except (ValueError, OSError) as err:  # DataError, ImageReadError and WeightsError are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
