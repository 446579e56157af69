"""One question about a whole study (a volume or a 2D image), answered slice by slice.

Shared by ``medisee predict`` and the MONAI Label infer task, so both read slice
specifications, visual prompts and windows the same way and return the same result:
one label array aligned with the image, the label names, per-slice boxes per entity, the
answer text and timings.

Prompt coordinates are pixels of the slice plane as :func:`medisee.imaging.extract_slice`
returns it (``x`` = column, ``y`` = row). A prompt given with ``prompt_slice`` applies to
that slice only (the slice it was drawn on); without it, to every slice asked for.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .imaging import AXES, MedicalImage, extract_slice, to_uint8, windowing
from .predictor import MODES, Prediction, PredictionInputError, Predictor, validate_query
from .results import assemble

Progress = Callable[[int, int], None]


@dataclass
class StudyQuestion:
    query: str
    slices: str | int | None = None  # None: the middle slice; N; "A-B"; "all"
    axis: str = "axial"
    box: Sequence[float] | None = None
    point: Sequence[float] | None = None
    prompt_slice: int | None = None  # the slice the box/point were drawn on
    window: str | tuple[float, float] | None = None
    mode: str = "full"


@dataclass
class StudyAnswer:
    answer: str
    axis: str
    slices: list[int]
    labels: np.ndarray  # the image's spatial shape, 0 = background
    label_names: dict[int, str]
    entities: list[dict]  # one per entity and slice: phrase, label, slice, box, score, ...
    predictions: list[Prediction]
    planes: list[np.ndarray]  # the windowed slices that were asked about
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready: answer, label names, and per entity its best score and per-slice boxes."""
        per_label: dict[int, dict] = {}
        for item in self.entities:
            entry = per_label.setdefault(item["label"], {"label": item["label"], "phrase": item["phrase"],
                                                         "score": 0.0, "slices": {}})
            entry["score"] = max(entry["score"], item["score"])
            entry["slices"][str(item["slice"])] = {k: item[k] for k in ("box", "score", "mask_quality", "pixels")}
        return {
            "answer": self.answer,
            "answers": [{"slice": p.slice_index, "answer": p.answer} for p in self.predictions],
            "axis": self.axis,
            "slices": self.slices,
            "label_names": {str(k): v for k, v in self.label_names.items()},
            "entities": list(per_label.values()),
            "timing": {k: round(v, 3) for k, v in self.timings.items()},
        }


def ask_study(predictor: Predictor, image: MedicalImage, question: StudyQuestion, progress: Progress | None = None) -> StudyAnswer:
    """Validate the question against the image, run the asked slices in batches, assemble."""
    started = time.perf_counter()
    query = validate_query(question.query)
    if question.mode not in MODES:
        raise PredictionInputError(f"unknown mode {question.mode!r}; choose one of: {', '.join(MODES)}")
    axis = resolve_axis(image, question.axis)
    count = image.num_slices(axis)
    indices = parse_slices(question.slices, count)
    prompted = _prompted_slices(question, indices, count)

    display = dataclasses.replace(image, array=to_uint8(image, parse_window(question.window)))
    planes = [extract_slice(display, i, axis) for i in indices]
    prepared = time.perf_counter()

    predictions: list[Prediction | None] = [None] * len(indices)
    groups = [(i, p) for i, p in enumerate(indices) if p in prompted], [(i, p) for i, p in enumerate(indices) if p not in prompted]
    done = 0
    for group, with_prompts in zip(groups, (True, False)):
        if not group:
            continue
        base = done

        def report(finished: int, _total: int, base: int = base) -> None:
            if progress is not None:
                progress(base + finished, len(indices))

        results = predictor.predict_slices(
            [planes[i] for i, _ in group], query,
            box=question.box if with_prompts else None, point=question.point if with_prompts else None,
            mode=question.mode, progress=report,
        )
        for (position, index), prediction in zip(group, results):
            prediction.slice_index = index
            predictions[position] = prediction
        done += len(group)
    finished = [p for p in predictions if p is not None]
    inferred = time.perf_counter()

    result = assemble(finished, image, axis)
    ended = time.perf_counter()
    return StudyAnswer(
        answer=first_answer(finished), axis=axis, slices=indices, labels=result.labels,
        label_names=result.label_names, entities=result.entities, predictions=finished, planes=planes,
        timings={"prepare_s": prepared - started, "infer_s": inferred - prepared, "assemble_s": ended - inferred,
                 "total_s": ended - started, "slices_per_s": len(indices) / max(inferred - prepared, 1e-9)},
    )


def resolve_axis(image: MedicalImage, axis: str) -> str:
    if axis not in AXES:
        raise PredictionInputError(f"unknown axis {axis!r}: choose one of {', '.join(AXES)}")
    if image.ndim == 2 and axis != "axial":
        raise PredictionInputError(f"this is a 2D image: it has no {axis} slices (use axis 'axial')")
    return axis


def parse_slices(spec: str | int | None, count: int) -> list[int]:
    """``None`` -> the middle slice; ``N``; ``A-B`` (inclusive); ``all``."""
    if spec is None or spec == "":
        return [count // 2]
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise PredictionInputError(f"slice must be N, A-B or all, got {spec!r}")
    text = str(spec).strip().lower()
    if text == "all":
        return list(range(count))
    match = re.fullmatch(r"(-?\d+)(?:-(\d+))?", text)
    if not match:
        raise PredictionInputError(f"slice must be N, A-B or all, got {spec!r}")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else first
    if first > last:
        raise PredictionInputError(f"slice range {text} is reversed")
    if first < 0 or last >= count:
        bad = first if first < 0 else last
        raise PredictionInputError(f"slice {bad} out of range: the image has {count} slices (0..{count - 1})")
    return list(range(first, last + 1))


def parse_window(spec: str | Sequence[float] | None) -> str | tuple[float, float] | None:
    """A preset name, ``"LEVEL,WIDTH"`` or a (level, width) pair (``imaging.parse_window``); a bad one is the question's error."""
    try:
        return windowing.parse_window(spec)
    except ValueError as err:
        raise PredictionInputError(str(err)) from None


def _prompted_slices(question: StudyQuestion, indices: list[int], count: int) -> set[int]:
    if question.box is None and question.point is None:
        return set()
    if question.prompt_slice is None:
        return set(indices)
    if isinstance(question.prompt_slice, bool) or not isinstance(question.prompt_slice, int):
        raise PredictionInputError(f"the prompt's slice must be a slice index, got {question.prompt_slice!r}")
    if question.prompt_slice not in indices:
        where = f"slices {indices[0]}..{indices[-1]}" if len(indices) > 1 else f"slice {indices[0]}"
        if not 0 <= question.prompt_slice < count:
            where += f"; the image has {count} slices"
        raise PredictionInputError(f"the box/point was drawn on slice {question.prompt_slice}, but the request covers {where}")
    return {question.prompt_slice}


def first_answer(predictions: list[Prediction]) -> str:
    """The answer of the first slice with a grounded entity, else the first answer (slices share the question)."""
    for prediction in predictions:
        if prediction.entities and prediction.answer:
            return prediction.answer
    return next((p.answer for p in predictions if p.answer), "")
