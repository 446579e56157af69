"""``/infer/medisee``: a plain-language question about a study, answered with a label
volume aligned with it and JSON (``medisee.answer.Answer``: answer, label names as MONAI Label
names them, per-slice boxes, scores, geometry, timing).

Request parameters (MONAI Label's ``params`` JSON):
  query (required); slice: N, "A-B" or "all" (default: the middle slice); axis: axial,
  coronal or sagittal; box [x0, y0, x1, y1] and/or point [x, y] in pixels of the slice
  plane (x = column, y = row) with prompt_slice, the slice they were drawn on (without it
  they apply to every slice asked for); window: a CT preset or [level, width];
  mode: full (text + masks) or fast (masks only).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from medisee.answer import build_answer
from medisee.data.knowledge import load_knowledge
from medisee.imaging import CT_WINDOWS, MedicalImage, read_image, write_mask
from medisee.study import StudyAnswer, StudyQuestion, ask_study

from ..errors import NOT_FOUND, PAYLOAD_TOO_LARGE, UNPROCESSABLE, ClientError, client_errors
from ..served_model import ServedModel

log = logging.getLogger("medisee.server.infer")


class MediSeeInfer(InferTask):
    """``config`` is what MONAI Label's Slicer plugin shows as the model's options (in its developer
    mode) and sends with every request: the query is typed there."""

    def __init__(self, served: ServedModel, type: str = InferType.SEGMENTATION, description: str = "", config: dict | None = None) -> None:
        self.served = served
        super().__init__(
            type=type,
            labels=sorted(load_knowledge()),
            dimension=3,
            description=description or "MediSee: ask a question in plain language; get an answer, a mask and a box per entity it names",
            config=config if config is not None else {"query": "", "slice": "", "axis": "axial", "mode": served.settings.mode,
                                                      "window": ""},
        )

    def is_valid(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        return super().info() | {"medisee": {
            "weights": self.served.current(), "device": self.served.settings.torch_device,
            "precision": self.served.settings.precision, "max_query_chars": self.served.settings.max_query_chars,
            "params": ["query", "slice", "axis", "box", "point", "prompt_slice", "window", "mode", "language_slices"],
            "windows": {name: list(preset) for name, preset in CT_WINDOWS.items()},
        }}

    def __call__(self, request: dict) -> tuple[str, dict]:
        started = time.perf_counter()
        question = self.question(request)
        path = request.get("image")
        if not path or not Path(path).exists():
            raise ClientError(NOT_FOUND, f"unknown image {request.get('image_id') or path!r}")
        with client_errors(f"image {request.get('image_id') or Path(path).name!r}", hide=str(path)):
            image = read_image(path)
        question = self.placed(question, request, image)
        read_s = time.perf_counter() - started
        log.info("query %r on %s %s, slices %s along %s", question.query, image.source_format, image.shape,
                 question.slices if question.slices not in (None, "") else "middle", question.axis)
        with self.served.lock:
            waited_s = time.perf_counter() - started - read_s
            predictor = self.served.predictor()
            with client_errors():
                study = ask_study(predictor, image, question, progress=_log_progress)
            model_name = self.served.name
        scratch = self.served.settings.scratch_dir
        scratch.mkdir(parents=True, exist_ok=True)
        output = tempfile.NamedTemporaryFile(prefix="labels-", suffix=".nii.gz", dir=scratch, delete=False).name
        study = self.labelled(study, question)
        write_mask(study.labels, image, output)  # MONAI Label removes it once the answer is sent
        answer = build_answer(study, image, query=question.query, mode=question.mode, model=model_name,
                              timing={"read_s": read_s, "queue_s": waited_s, "request_s": time.perf_counter() - started})
        log.info("answered %d slice(s) in %.2f s: %d entit%s; %s", len(study.slices), answer.timing["request_s"],
                 len(answer.entities), "y" if len(answer.entities) == 1 else "ies", study.answer[:80])
        return output, answer.to_dict()

    def question(self, request: dict) -> StudyQuestion:
        """The request's parameters, checked before the image is read."""
        return parse_question(request, self.served.settings.max_query_chars, self.served.settings.mode)

    def placed(self, question: StudyQuestion, request: dict, image: MedicalImage) -> StudyQuestion:
        """The question once the image is known (prompts given in its voxels): as it is here."""
        return question

    def labelled(self, study: StudyAnswer, question: StudyQuestion) -> StudyAnswer:
        """The labels to send: one value per entity here."""
        return study


def parse_question(request: dict, max_query_chars: int, default_mode: str) -> StudyQuestion:
    """The request's parameters as a :class:`StudyQuestion`; type and size problems -> 4xx."""
    query = request.get("query")
    if query is None:
        raise ClientError(UNPROCESSABLE, "the request has no 'query': send params {\"query\": \"your question\"}")
    if not isinstance(query, str):
        raise ClientError(UNPROCESSABLE, f"the query must be text (a question about the image), got {query!r}")
    if not query.strip():
        raise ClientError(UNPROCESSABLE, "the query is empty: type a question about the image")
    if len(query.strip()) > max_query_chars:
        raise ClientError(PAYLOAD_TOO_LARGE, f"the query is {len(query.strip())} characters long; the limit is {max_query_chars}")
    prompt_slice = request.get("prompt_slice")
    if prompt_slice is not None and (isinstance(prompt_slice, bool) or not isinstance(prompt_slice, int)):
        raise ClientError(UNPROCESSABLE, f"prompt_slice must be a slice index, got {prompt_slice!r}")
    window = request.get("window") or None
    if window is not None and not isinstance(window, (str, list)):
        raise ClientError(UNPROCESSABLE, f"window must be a preset name or [level, width], got {window!r}")
    axis = request.get("axis") or "axial"
    mode = request.get("mode") or default_mode
    language_slices = request.get("language_slices") or "key"
    if not isinstance(axis, str) or not isinstance(mode, str) or not isinstance(language_slices, str):
        raise ClientError(UNPROCESSABLE, "axis, mode and language_slices must be strings")
    return StudyQuestion(
        query=query, slices=_slices(request.get("slice")), axis=axis, window=window, mode=mode, prompt_slice=prompt_slice,
        language_slices=language_slices,
        box=_numbers(request.get("box"), 4, "box", "[x0, y0, x1, y1]"),
        point=_numbers(request.get("point"), 2, "point", "[x, y]"),
    )


def _slices(value: Any) -> str | int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ClientError(UNPROCESSABLE, f"slice must be N, \"A-B\" or \"all\", got {value!r}")
    return value


def _numbers(value: Any, count: int, name: str, shape: str) -> tuple[float, ...] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = value.split(",")
    try:
        numbers = tuple(float(v) for v in value) if isinstance(value, Sequence) else ()
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != count or any(n != n for n in numbers):
        raise ClientError(UNPROCESSABLE, f"{name} must be {shape} ({count} numbers), got {value!r}")
    return numbers


def _log_progress(done: int, total: int) -> None:
    if total > 1:
        log.info("slices %d/%d", done, total)
