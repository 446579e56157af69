"""One question about a whole study (a volume or a 2D image).

Shared by ``medisee predict`` and the MONAI Label infer task, so both read slice
specifications, visual prompts and windows the same way and return the same result:
one label array aligned with the image, the label names, per-slice boxes per entity, the
answer text and timings (``medisee.answer.build_answer`` turns it into their JSON). A
question about several slices of a volume gets a volume answer (``medisee.volume``): one
entity per structure, connected in 3D, with its measurements; the language model reads key
slices only unless ``language_slices`` is ``"every"`` (``medisee.key_slices``).

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
from .key_slices import ask_key_slices
from .predictor import MODES, Prediction, PredictionInputError, Predictor, validate_query
from .results import assemble
from .volume import VolumeEntity, keep_structures, structure_key, volume_entities, vote

LANGUAGE_SLICES = ("key", "every")

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
    language_slices: str = "key"  # several slices of a volume: the language model on key slices or on every slice


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
    volume_entities: list[VolumeEntity] = field(default_factory=list)  # several slices of a volume: one per structure
    slice_answers: list[Prediction] = field(default_factory=list)  # each slice's own answer, before the volume vote


def ask_study(predictor: Predictor, image: MedicalImage, question: StudyQuestion, progress: Progress | None = None) -> StudyAnswer:
    """Validate the question against the image, answer the asked slices, assemble."""
    started = time.perf_counter()
    query = validate_query(question.query)
    if question.mode not in MODES:
        raise PredictionInputError(f"unknown mode {question.mode!r}; choose one of: {', '.join(MODES)}")
    if question.language_slices not in LANGUAGE_SLICES:
        raise PredictionInputError(f"unknown language_slices {question.language_slices!r}; choose one of: {', '.join(LANGUAGE_SLICES)}")
    axis = resolve_axis(image, question.axis)
    count = image.num_slices(axis)
    indices = parse_slices(question.slices, count)
    prompted = _prompted_slices(question, indices, count)

    display = dataclasses.replace(image, array=to_uint8(image, parse_window(question.window)))
    planes = [extract_slice(display, i, axis) for i in indices]
    prepared = time.perf_counter()
    volume = image.is_volume and len(indices) > 1
    if volume and question.language_slices == "key" and len(prompted) <= 1:
        at = indices.index(next(iter(prompted))) if prompted else None
        finished = ask_key_slices(predictor, planes, query, question.mode, question.box, question.point, at, progress)
    else:
        finished = _ask_each_slice(predictor, planes, indices, prompted, question, query, progress)
    for index, prediction in zip(indices, finished):
        prediction.slice_index = index
    inferred = time.perf_counter()

    answer, slice_answers = first_answer(finished), finished
    if volume:
        kept = vote(finished, predictor.asked(query))
        finished = keep_structures(finished, kept, image, axis)
        answer = volume_answer(finished, kept) or answer
    result = assemble(finished, image, axis)
    structures = volume_entities(result.labels, result.label_names, finished, image, axis) if volume else []
    ended = time.perf_counter()
    return StudyAnswer(
        answer=answer, axis=axis, slices=indices, labels=result.labels,
        label_names=result.label_names, entities=result.entities, predictions=finished, planes=planes,
        timings={"prepare_s": prepared - started, "infer_s": inferred - prepared, "assemble_s": ended - inferred,
                 "total_s": ended - started, "slices_per_s": len(indices) / max(inferred - prepared, 1e-9)},
        volume_entities=structures, slice_answers=slice_answers,
    )


def _ask_each_slice(predictor: Predictor, planes: list[np.ndarray], indices: list[int], prompted: set[int],
                    question: StudyQuestion, query: str, progress: Progress | None) -> list[Prediction]:
    """Every slice through the whole model, the prompted ones (with the box/point) first."""
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
        for (position, _index), prediction in zip(group, results):
            predictions[position] = prediction
        done += len(group)
    return [p for p in predictions if p is not None]


def volume_answer(predictions: list[Prediction], kept: list[str]) -> str:
    """The volume's text: the answer of the slice that names the most kept structures, with
    the highest score (a slice answer naming a structure the volume dropped is not it)."""
    def merit(prediction: Prediction) -> tuple[int, float]:
        names = {structure_key(e.phrase) for e in prediction.entities}
        return len(names & set(kept)), sum(e.score for e in prediction.entities)

    spoken = [p for p in predictions if p.answer and p.entities]
    return max(spoken, key=merit).answer if spoken else ""


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
