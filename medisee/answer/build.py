"""The one producer of :class:`~medisee.answer.schema.Answer`: a study's answer plus what the
caller knows (the model's name, extra timings, the CLI's files) -> the JSON both the server and
the CLI return."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..imaging import MedicalImage
from ..study import StudyAnswer
from .schema import SCHEMA_VERSION, Answer, Entity, OutputFiles, SliceAnswer, SliceFinding, Structure


def build_answer(study: StudyAnswer, image: MedicalImage, *, query: str, mode: str, model: str,
                 timing: Mapping[str, float] | None = None, model_trained: bool | None = None,
                 image_path: str | None = None, files: OutputFiles | None = None) -> Answer:
    """``timing`` adds to the study's own timings (the server's read and queue times)."""
    return Answer(
        schema_version=SCHEMA_VERSION, query=query.strip(), mode=mode, model=model, answer=study.answer,
        answers=[SliceAnswer(p.slice_index, p.answer) for p in study.predictions],
        axis=study.axis, slices=list(study.slices),
        label_names={phrase: value for value, phrase in sorted(study.label_names.items())},
        entities=entities_of(study.entities),
        image_shape=[int(n) for n in image.shape], spacing=list(image.spacing), origin=list(image.origin),
        direction=list(image.direction),
        timing={k: round(float(v), 3) for k, v in {**study.timings, **(timing or {})}.items()},
        model_trained=model_trained, image=image_path, files=files,
        structures=[Structure(**dataclasses.asdict(v)) for v in study.volume_entities] or None,
    )


def entities_of(findings: list[dict]) -> list[Entity]:
    """Per-slice findings (``results.assemble``'s list) -> one entity per label, its best score and its slices."""
    entities: dict[int, Entity] = {}
    for item in findings:
        entity = entities.setdefault(item["label"], Entity(item["label"], item["phrase"], 0.0, {}))
        entity.score = max(entity.score, item["score"])
        entity.slices[str(item["slice"])] = SliceFinding(list(item["box"]), item["score"], item["mask_quality"],
                                                         item["pixels"])
    return list(entities.values())
