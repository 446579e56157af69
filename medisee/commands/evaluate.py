"""``medisee evaluate``: segmentation and detection metrics of a model on an MLMR-SD jsonl file.

Runs every record's short and long query once (code in ``medisee/evaluation/evaluate.py``), prints
a table like the paper's Tables 1-2 and writes ``metrics.json``, ``per_sample.jsonl`` and
``worst_cases.png`` into the output folder."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from ..data.mlmr import read_mlmr_jsonl
from ..evaluation.evaluate import evaluate
from ..evaluation.evaluate_human import evaluate_human, read_human_queries
from ..evaluation.evaluate_mimo import evaluate_mimo, mimo_instructions
from ..evaluation.evaluate_volumes import evaluate_volumes
from ..models import load_model
from ..predictor import MODES, Predictor
from ..study import LANGUAGE_SLICES

log = logging.getLogger("medisee.evaluate")

# (column title, key in a metrics group, as a percentage)
COLUMNS = (
    ("gIoU", "giou", True), ("cIoU", "ciou", True), ("Dice", "dice", True),
    ("boxIoU", "box_iou", True), ("Acc@0.5", "box_acc", True), ("n", "count", False),
    ("absent-ok", "absence_rate", True), ("n-absent", "absent_count", False), ("s/query", "seconds_per_query", False),
)  # fmt: skip


def register(commands) -> None:
    parser = commands.add_parser(
        "evaluate", help="measure segmentation and detection quality on an MLMR-SD jsonl file",
        description="Evaluate a model on an MLMR-SD-format jsonl file: every record's short and long query "
        "once. Prints gIoU, cIoU, Dice, box IoU and Acc@0.5 (overall, per query kind and per class; in %%) "
        "and writes metrics.json, per_sample.jsonl and worst_cases.png into the output folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default="default", help="'default' (bundled) or a MediSee checkpoint folder")
    parser.add_argument("--data", required=True, help="MLMR-SD-format .jsonl file")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--mode", default="fast", choices=MODES,
                        help="fast: masks only (teacher-forced answer); full: generate the answer text too")
    parser.add_argument("--threshold", type=float, default=None,
                        help="score below which no entity is reported (default: the model's own)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N records")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--mimo", action="store_true",
                        help="also evaluate the four MIMOSeg perspectives built from the file's present targets "
                        "(full mode, box/point prompts): mIoU, AP50, grounding F1, BLEU-4, ROUGE-L, METEOR "
                        "per perspective, written to mimo_metrics.json")
    parser.add_argument("--mimo-limit", type=int, default=100, help="at most N instructions per perspective")
    parser.add_argument("--human-queries", type=Path, default=None, metavar="FILE",
                        help="also ask the test records questions people wrote (human-queries.json: explicit and "
                        "implicit per structure, several structures at once, structures outside the catalogue), "
                        "reported beside the generator's phrasings and written to human_metrics.json")
    parser.add_argument("--human-per-record", type=int, default=2, metavar="N",
                        help="with --human-queries: N explicit and N implicit questions per target record")
    parser.add_argument("--human-mode", default="full", choices=MODES,
                        help="with --human-queries: the mode the people's questions are asked in")
    parser.add_argument("--volumes", action="store_true",
                        help="also ask the whole test volumes of the demo dataset --data belongs to (volumes/ beside "
                        "it) about each structure they hold and a few they do not: 3D Dice, false-entity slices, "
                        "nothing for absent structures, mL; with --human-queries people's questions too; written to "
                        "volume_metrics.json")
    parser.add_argument("--volume-reading", default="key", choices=LANGUAGE_SLICES,
                        help="with --volumes: the language model on key slices or on every slice")
    parser.add_argument("--volume-mode", default="full", choices=MODES, help="with --volumes: the mode volumes are asked in")
    parser.add_argument("--volume-patients", type=int, default=None, metavar="N",
                        help="with --volumes: the first N test patients of each modality (default: all)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    data = Path(args.data)
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such data file")
    if data.is_dir():
        raise ValueError(f"{data} is a folder: --data expects an MLMR-SD .jsonl file")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    if args.mimo_limit < 1:
        raise ValueError(f"--mimo-limit must be at least 1, got {args.mimo_limit}")
    if args.human_per_record < 1:
        raise ValueError(f"--human-per-record must be at least 1, got {args.human_per_record}")
    questions = read_human_queries(args.human_queries) if args.human_queries is not None else None
    records = read_mlmr_jsonl(data)  # raises DataError ("file:line: why") for bad records
    if args.limit is not None:
        records = records[: args.limit]
    if not records:
        raise ValueError(f"{data}: no records to evaluate")

    loaded = load_model(args.model, device=args.device)
    if not loaded.trained:
        log.warning("model %s is untrained: %s", loaded.name, loaded.note)
    predictor = Predictor(loaded.bundle, score_threshold=args.threshold)
    log.info("evaluating %s on %d records (%s mode)", loaded.name, len(records), args.mode)
    out = Path(args.out)
    metrics = evaluate(predictor, records, out, mode=args.mode, progress=progress_logger())

    print(f"model {loaded.name}, {metrics['records']} records, {metrics['queries']} queries, {args.mode} mode")
    print(format_table(metrics))
    if metrics["mask_quality_iou_spearman"] is not None:
        print(f"mask_quality vs IoU (Spearman, present targets with a mask): {metrics['mask_quality_iou_spearman']:.3f}")
    print(f"metrics in {out / 'metrics.json'}")
    if args.mimo:
        chosen = mimo_instructions(records, limit_per_perspective=args.mimo_limit)
        if not chosen:
            raise ValueError(f"{data}: no present targets to build MIMO instructions from")
        log.info("MIMO perspectives: %d instructions (full mode)", len(chosen))
        mimo = evaluate_mimo(predictor, chosen, out, progress=progress_logger())
        print(format_mimo_table(mimo))
        print(f"MIMO metrics in {out / 'mimo_metrics.json'}")
    if questions is not None:
        log.info("people's questions from %s (%s mode)", args.human_queries, args.human_mode)
        human = evaluate_human(predictor, records, questions, out, mode=args.human_mode,
                               per_record=args.human_per_record, progress=progress_logger())
        print(format_human_table(human, metrics))
        print(f"people's-question metrics in {out / 'human_metrics.json'}")
    if args.volumes:
        log.info("whole test volumes of %s (%s mode, %s slices read)", data.parent, args.volume_mode, args.volume_reading)
        volumes = evaluate_volumes(predictor, data.parent, out, questions, mode=args.volume_mode,
                                   language_slices=args.volume_reading, patients=args.volume_patients,
                                   progress=progress_logger())
        print(format_volume_table(volumes))
        print(f"volume metrics in {out / 'volume_metrics.json'}")
    return 0


def progress_logger(parts: int = 10):
    """``progress(done, total)`` that logs about every 1/``parts`` of the records."""
    def progress(done: int, total: int) -> None:
        step = max(1, math.ceil(total / parts))
        if done % step == 0 or done == total:
            log.info("records %d/%d (%d%%)", done, total, round(100 * done / total))

    return progress


def _cell(value, percent: bool) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def aligned(table: list[list[str]]) -> list[str]:
    """Rows of cells as text: the first column left-aligned, the others right-aligned, a rule
    under the header row."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
             for row in table]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def format_table(metrics: dict) -> str:
    """Overall, short and long rows, then one row per class and per modality (percentages)."""
    rows = [(name, metrics[name]) for name in ("overall", "short", "long")]
    rows += [(f"class {name}", split["overall"]) for name, split in metrics.get("by_class", {}).items()]
    rows += [(f"modality {name}", split["overall"]) for name, split in metrics.get("by_modality", {}).items()]
    table = [["", *(title for title, _, _ in COLUMNS)]]
    table += [[label, *(_cell(group.get(key), percent) for _, key, percent in COLUMNS)] for label, group in rows]
    lines = aligned(table)
    lines.append("(gIoU, cIoU, Dice, boxIoU, Acc@0.5 and absent-ok in %; absent-ok: share of absent targets "
                 "answered with nothing)")
    return "\n".join(lines)


VOLUME_COLUMNS = (
    ("3D Dice", "dice3d", True), ("slice Dice", "slice_dice", True), ("n", "count", False),
    ("false slices", "false_slice_share", True), ("nothing", "nothing_rate", True), ("n-absent", "absent_count", False),
    ("mL error", "volume_error", True), ("s/question", "seconds_per_question", False),
)  # fmt: skip


def format_volume_table(metrics: dict) -> str:
    """Whole volumes: per source and kind of question, then per structure (percentages)."""
    groups = metrics["groups"]
    order = ["overall", "generator"] + sorted(k for k in groups if k.startswith("people"))
    order += sorted(k for k in groups if k.startswith("class "))
    table = [["", *(title for title, _, _ in VOLUME_COLUMNS)]]
    table += [[name, *(_cell(groups[name].get(key), percent) for _, key, percent in VOLUME_COLUMNS)]
              for name in order if name in groups]
    lines = aligned(table)
    lines.append(f"({metrics['mode']} mode, language model on {metrics['language_slices']} slices; patients "
                 f"{', '.join(metrics['patients'])}; false slices: share of slices holding an entity that is not "
                 "asked for or not there; slice Dice: each slice's own answer, only when every slice is read)")
    return "\n".join(lines)


MIMO_COLUMNS = (
    ("mIoU", "miou", True), ("AP50", "ap50", True), ("gF1", "grounding_f1", True), ("BLEU-4", "bleu4", True),
    ("ROUGE-L", "rouge_l", True), ("METEOR", "meteor", True), ("n", "images", False),
)  # fmt: skip


def format_mimo_table(metrics: dict) -> str:
    """One row per MIMOSeg perspective (and all), then the prompt-naming rate (percentages)."""
    table = [["perspective", *(title for title, _, _ in MIMO_COLUMNS)]]
    for name, group in metrics["perspectives"].items():
        table.append([name, *(_cell(group.get(key), percent) for _, key, percent in MIMO_COLUMNS)])
    lines = aligned(table)
    naming = metrics["prompt_naming"]
    lines.append("box/point without the name -> right structure named: "
                 + ", ".join(f"{k} {_cell(v['rate'], True)}% (n={v['count']})" for k, v in naming.items()))
    return "\n".join(lines)


HUMAN_COLUMNS = (
    ("gIoU", "giou", True), ("Acc@0.5", "box_acc", True), ("named", "named_rate", True), ("n", "count", False),
    ("nothing", "absence_rate", True), ("n-nothing", "absent_count", False),
    ("all named", "all_named_rate", True), ("all found", "all_returned_rate", True), ("n-multi", "multi_count", False),
)  # fmt: skip


def format_human_table(human: dict, generator: dict) -> str:
    """The people's questions per kind, modality and structure, with the generator's
    phrasings of the same records on top for comparison (percentages)."""
    groups = human["groups"]
    rows = [("generator phrasings (" + generator["mode"] + ")", generator["overall"])]
    rows += [(f"generator, modality {m}", split["overall"]) for m, split in generator.get("by_modality", {}).items()]
    order = ["overall", "explicit", "implicit"]
    order += sorted(k for k in groups if k.startswith("modality ") or k.split(" ")[0] in ("CT", "MR"))
    order += ["absent", "not_in_catalogue", "nothing", "multi"]
    order += sorted(k for k in groups if k.startswith("class "))
    rows += [(f"people, {name}", groups[name]) for name in order if name in groups]
    table = [["", *(title for title, _, _ in HUMAN_COLUMNS)]]
    table += [[label, *(_cell(group.get(key), percent) for _, key, percent in HUMAN_COLUMNS)] for label, group in rows]
    lines = aligned(table)
    agreement, repeated = human["agreement"], human["repeated_words"]
    if agreement["count"]:
        lines.append(f"answers that name what they return: {_cell(agreement['rate'], True)}% (n={agreement['count']}); "
                     f"answers with a word repeated back to back: {_cell(repeated['rate'], True)}%")
    lines.append(f"(people's questions in {human['mode']} mode; nothing: share of absent or not-in-catalogue "
                 "questions answered with nothing; all found: every structure of a multi request named and "
                 "segmented at IoU >= 0.5)")
    return "\n".join(lines)
