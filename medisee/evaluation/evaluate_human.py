"""Evaluation with questions people wrote (issue 18): the test records asked in words our
generator never produced.

The question file (``human-queries.json``) is an exam, never training data: only this
module reads it, through ``medisee evaluate --human-queries``. Its layout::

    {"structures": {name: {"explicit": [...], "implicit": [...]}},   # per catalogue structure
     "multi": [{"structures": [a, b], "query": ...}],                # several structures at once
     "not_in_catalogue": [{"structure": ..., "query": ...}]}         # right answer: nothing

Each test slice is asked, per target record of a structure the file covers, a few of that
structure's explicit and implicit questions (drawn in turn, so every question is asked);
present targets feed gIoU / box Acc@0.5, absent ones the "answered with nothing" rate.
Every slice that shows all the structures of a multi request is asked it (all returned:
an entity named for each, its mask at IoU >= 0.5 with the truth); a few slices per modality
are asked every not-in-catalogue question (nothing must come back). Full mode also
measures whether the answer names the entities it returns and how often an answer repeats
a word back to back.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medisee.atomic import write_text
from medisee.conversation import repeats_a_word
from medisee.data.knowledge import find_structure, structure_named_in
from medisee.data.loader import load_image, load_mask, slice_key
from medisee.data.records import DataError, Record
from medisee.metrics import AbsenceAccumulator, DetectionAccumulator, SegmentationAccumulator
from medisee.predictor import Entity, Prediction, PredictionInputError

from .evaluate import best_entity, gt_box_pixels

log = logging.getLogger("medisee.evaluate")

KINDS = ("explicit", "implicit")
OUTSIDE_SLICES_PER_MODALITY = 3  # slices asked every not-in-catalogue question
MULTI_HIT_IOU = 0.5  # a named entity "returns" a structure when its mask has this IoU with the truth
_TAG = re.compile(r"</?p>|\[[A-Z][A-Z0-9_]*\]")

Progress = Callable[[int, int], None]


class HumanQueriesError(ValueError):
    """The question file is missing, unreadable or not in the expected layout."""


@dataclass(frozen=True)
class HumanQueries:
    structures: dict[str, dict[str, tuple[str, ...]]]
    multi: tuple[tuple[tuple[str, ...], str], ...]
    outside: tuple[tuple[str, str], ...]


def read_human_queries(path: Path) -> HumanQueries:
    """The question file, checked: every structure known to the catalogue, every query text."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise HumanQueriesError(f"{path}: no such question file") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HumanQueriesError(f"{path}: not a readable JSON question file: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("structures"), dict):
        raise HumanQueriesError(f"{path}: expected an object with a \"structures\" object")

    def texts(value, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(q, str) and q.strip() for q in value):
            raise HumanQueriesError(f"{path}: {where} must be a list of non-empty questions")
        return tuple(value)

    structures = {}
    for name, kinds in data["structures"].items():
        if find_structure(name) is None:
            raise HumanQueriesError(f"{path}: structure {name!r} is not in the catalogue")
        if not isinstance(kinds, dict):
            raise HumanQueriesError(f"{path}: structures.{name} must be an object")
        structures[find_structure(name).name] = {kind: texts(kinds.get(kind, []), f"structures.{name}.{kind}")
                                                 for kind in KINDS}
    multi = []
    for i, entry in enumerate(data.get("multi", [])):
        names = entry.get("structures") if isinstance(entry, dict) else None
        if not isinstance(names, list) or len(names) < 2 or any(find_structure(str(n)) is None for n in names):
            raise HumanQueriesError(f"{path}: multi[{i}] needs two or more catalogue structures")
        multi.append((tuple(find_structure(n).name for n in names), texts([entry.get("query")], f"multi[{i}].query")[0]))
    outside = []
    for i, entry in enumerate(data.get("not_in_catalogue", [])):
        if not isinstance(entry, dict):
            raise HumanQueriesError(f"{path}: not_in_catalogue[{i}] must be an object")
        outside.append((str(entry.get("structure", "")), texts([entry.get("query")], f"not_in_catalogue[{i}].query")[0]))
    return HumanQueries(structures, tuple(multi), tuple(outside))


# -- answer quality ---------------------------------------------------------------------------
def answer_agrees(prediction: Prediction) -> bool:
    """The answer names what it returns: with entities, each entity's structure is named in
    the answer and the first structure the answer names is one of them; with none, the
    answer does not claim a finding (it opens with "No")."""
    text = _TAG.sub(" ", prediction.answer)
    if not prediction.entities:
        return not text.strip().lower().startswith("sure")
    returned = {_structure_of(e) for e in prediction.entities}
    first = structure_named_in(text)
    named_all = all(name is not None and re.search(rf"\b{re.escape(name)}\b", text, re.IGNORECASE)
                    for name in returned)
    return bool(named_all and first is not None and first.name in returned)


def _structure_of(entity: Entity) -> str | None:
    """The catalogue structure an entity is named for ("right lung #2" -> right lung)."""
    found = find_structure(re.sub(r"\s*#\d+$", "", entity.phrase))
    return found.name if found else None


# -- aggregation ------------------------------------------------------------------------------
@dataclass
class _Group:
    segmentation: SegmentationAccumulator = field(default_factory=SegmentationAccumulator)
    detection: DetectionAccumulator = field(default_factory=DetectionAccumulator)
    nothing: AbsenceAccumulator = field(default_factory=AbsenceAccumulator)
    named: list[bool] = field(default_factory=list)
    all_named: list[bool] = field(default_factory=list)
    all_returned: list[bool] = field(default_factory=list)

    def summary(self) -> dict:
        return {**self.segmentation.summary(), **self.detection.summary(), **self.nothing.summary(),
                "named_rate": _rate(self.named), "named_count": len(self.named),
                "all_named_rate": _rate(self.all_named), "all_returned_rate": _rate(self.all_returned),
                "multi_count": len(self.all_returned)}


def _rate(values: list[bool]) -> float | None:
    return sum(values) / len(values) if values else None


class _Groups(dict):
    def __missing__(self, key: str) -> _Group:
        self[key] = _Group()
        return self[key]


# -- the evaluation -----------------------------------------------------------------------------
def evaluate_human(predictor, records: list[Record], questions: HumanQueries, out_dir: Path, mode: str = "full",
                   per_record: int = 2, progress: Progress | None = None) -> dict:
    """Ask the test ``records`` with the people's ``questions``; write ``human_metrics.json``
    and ``human_per_sample.jsonl`` into ``out_dir`` and return the metrics::

        {"mode", "queries", "seconds", "groups": {name: G}, "agreement": {...}, "repeated_words": {...}}

    Group names: ``overall`` (single structures present), ``explicit``, ``implicit``,
    ``modality CT|MR``, ``CT explicit`` ..., ``class NAME``, ``absent`` (structure not on
    the slice), ``not_in_catalogue``, ``nothing`` (both together), ``multi``. ``per_record``
    questions of each kind are asked per target record, drawn in turn from the structure's
    list."""
    if per_record < 1:
        raise ValueError(f"per_record must be at least 1, got {per_record}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _HumanRun(predictor, questions, mode, per_record)
    by_slice: dict[tuple, list[Record]] = {}
    for record in records:
        by_slice.setdefault(slice_key(record), []).append(record)
    outside_slices = _outside_slices(by_slice)
    started = time.perf_counter()
    for done, (key, slice_records) in enumerate(by_slice.items(), start=1):
        first = slice_records[0]
        image = load_image(first)
        truths = run.single_structures(image, slice_records)
        run.multi(image, first, truths)
        if key in outside_slices:
            run.not_in_catalogue(image, first)
        if progress is not None:
            progress(done, len(by_slice))

    metrics = {
        "mode": mode,
        "queries": len(run.samples),
        "seconds": round(time.perf_counter() - started, 1),
        "groups": {name: run.groups[name].summary() for name in sorted(run.groups)},
        "agreement": {"rate": _rate(run.agree), "count": len(run.agree)},
        "repeated_words": {"rate": _rate(run.repeated), "count": len(run.repeated)},
        "files": {"per_sample": "human_per_sample.jsonl"},
    }
    write_text(out_dir / "human_per_sample.jsonl", "".join(json.dumps(s) + "\n" for s in run.samples))
    write_text(out_dir / "human_metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


class _HumanRun:
    """One evaluation's state: the groups, the per-query samples, and which question of each
    structure and kind comes next."""

    def __init__(self, predictor, questions: HumanQueries, mode: str, per_record: int) -> None:
        self.predictor, self.questions, self.mode, self.per_record = predictor, questions, mode, per_record
        self.groups = _Groups()
        self.samples: list[dict] = []
        self.agree: list[bool] = []
        self.repeated: list[bool] = []
        self.turn = {(name, kind): 0 for name in questions.structures for kind in KINDS}

    def ask(self, image: np.ndarray, query: str, record: Record) -> Prediction:
        try:
            prediction = self.predictor.predict(image, query, mode=self.mode)
        except PredictionInputError as err:
            raise DataError(f"{record.source}: {err}") from err
        if self.mode == "full":
            self.agree.append(answer_agrees(prediction))
            self.repeated.append(repeats_a_word(prediction.answer))
        return prediction

    def single_structures(self, image: np.ndarray, slice_records: list[Record]) -> dict[str, np.ndarray]:
        """Ask each target record of the slice its structure's questions; the true masks by structure."""
        modality = str(slice_records[0].extra.get("modality") or "")
        truths: dict[str, np.ndarray] = {}
        for record in slice_records:
            structure = find_structure(record.class_text)
            if record.extra.get("targets") or structure is None or structure.name not in self.questions.structures:
                continue
            name = structure.name
            gt_mask = None if record.absent else load_mask(record)
            if gt_mask is not None:
                truths[name] = gt_mask
            for kind in KINDS:
                pool = self.questions.structures[name][kind]
                for _ in range(min(self.per_record, len(pool))):
                    query = pool[self.turn[(name, kind)] % len(pool)]
                    self.turn[(name, kind)] += 1
                    self._single(image, record, name, kind, query, modality, gt_mask)
        return truths

    def _single(self, image: np.ndarray, record: Record, name: str, kind: str, query: str, modality: str,
                gt_mask: np.ndarray | None) -> None:
        prediction = self.ask(image, query, record)
        best = best_entity(prediction.entities)
        sample = _sample(record, name, kind, query, prediction)
        groups = self.groups
        if record.absent:
            for group in (groups["absent"], groups["nothing"], groups[f"absent {kind}"]):
                group.nothing.add(best is None)
        else:
            targets = [groups[g] for g in ("overall", kind, f"modality {modality}", f"{modality} {kind}", f"class {name}")]
            iou = _score_present(targets, best, gt_mask, gt_box_pixels(record, gt_mask))
            named = any(_structure_of(e) == name for e in prediction.entities)
            for group in targets:
                group.named.append(named)
            sample.update(iou=iou, named=named)
        self.samples.append(sample)

    def multi(self, image: np.ndarray, first: Record, truths: dict[str, np.ndarray]) -> None:
        """Every multi request whose structures are all on the slice."""
        for names, query in self.questions.multi:
            if all(n in truths for n in names):
                prediction = self.ask(image, query, first)
                named = [any(_structure_of(e) == n for e in prediction.entities) for n in names]
                hits = [_returned(prediction.entities, n, truths[n]) for n in names]
                self.groups["multi"].all_named.append(all(named))
                self.groups["multi"].all_returned.append(all(hits))
                self.samples.append({"source": first.source, "kind": "multi", "structures": list(names), "query": query,
                                     "answer": prediction.answer, "entities": [e.phrase for e in prediction.entities],
                                     "named": named, "returned": hits})

    def not_in_catalogue(self, image: np.ndarray, first: Record) -> None:
        """Every question about a structure outside the catalogue: nothing must come back."""
        for structure, query in self.questions.outside:
            prediction = self.ask(image, query, first)
            for group in (self.groups["not_in_catalogue"], self.groups["nothing"]):
                group.nothing.add(not prediction.entities)
            self.samples.append({"source": first.source, "kind": "not_in_catalogue", "class": structure, "query": query,
                                 "answer": prediction.answer, "entities": [e.phrase for e in prediction.entities]})


def _outside_slices(by_slice: dict[tuple, list[Record]]) -> set[tuple]:
    """A few slices per modality, spread over the list, for the not-in-catalogue questions."""
    by_modality: dict[str, list[tuple]] = {}
    for key, slice_records in by_slice.items():
        by_modality.setdefault(str(slice_records[0].extra.get("modality") or ""), []).append(key)
    chosen = set()
    for keys in by_modality.values():
        step = max(1, len(keys) // OUTSIDE_SLICES_PER_MODALITY)
        chosen.update(keys[::step][:OUTSIDE_SLICES_PER_MODALITY])
    return chosen


def _score_present(targets: list[_Group], best: Entity | None, gt_mask: np.ndarray, gt_box) -> float:
    pred_mask = np.zeros_like(gt_mask) if best is None else np.asarray(best.mask, dtype=bool)
    iou = 0.0
    for group in targets:
        iou, _ = group.segmentation.add(pred_mask, gt_mask)
        if gt_box is not None:
            group.detection.add(None if best is None else best.box, gt_box)
    return iou


def _returned(entities: list[Entity], name: str, truth: np.ndarray) -> bool:
    """An entity named for ``name`` whose mask overlaps the true one."""
    for entity in entities:
        if _structure_of(entity) == name:
            mask = np.asarray(entity.mask, dtype=bool)
            union = np.logical_or(mask, truth).sum()
            if union and np.logical_and(mask, truth).sum() / union >= MULTI_HIT_IOU:
                return True
    return False


def _sample(record: Record, name: str, kind: str, query: str, prediction: Prediction) -> dict:
    return {"source": record.source, "class": name, "kind": kind, "absent": bool(record.absent), "query": query,
            "answer": prediction.answer, "entities": [e.phrase for e in prediction.entities],
            "scores": [round(float(e.score), 4) for e in prediction.entities]}
