"""``medisee evaluate --volumes``: whole test volumes asked about each structure, scored in 3D.

Why a separate evaluation: a radiologist asks about a series, so what matters is the volume
answer (``medisee.study`` with several slices): one connected mask per structure, no stray
slices, nothing for a structure the volume does not hold. Each test patient's volume
(``volumes/<patient>/image.nii.gz`` and ``masks/<structure>.nii.gz`` of ``medisee
demo-data``) is asked, along its acquisition axis, about every structure it holds, in our
generator's phrasing (the patient's own test records' short query) and, with a question
file, in people's words (explicit and implicit, drawn in turn), about people's
several-structure requests that fit the modality, and about structures it does not hold
(the other modality's, and people's structures outside the catalogue).

Per question: 3D Dice of each asked structure (the volume entities named for it against
its mask); the slices holding a false entity (one named for a structure whose mask does not
reach that slice, or for none of the volume's structures) and, apart, the slices holding a
structure that is there but was not asked for (a misunderstood question); whether an absent structure got nothing; the volume
in mL against the mask's. With ``language_slices="every"`` also the mean per-slice 2D Dice
of the slices' own answers before the volume vote: today's slice-by-slice answer.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_json
from ..data.mlmr import read_mlmr_jsonl
from ..imaging import MedicalImage, read_image, slice_axis
from ..metrics import mask_dice
from ..predictor import Predictor
from ..study import StudyAnswer, StudyQuestion, ask_study
from ..volume import structure_key
from .evaluate_human import HumanQueries

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class VolumeQuestion:
    patient: str
    query: str
    asked: tuple[str, ...]  # the structures it asks for (empty: outside the catalogue)
    source: str  # "generator" | "people"
    kind: str  # "explicit" | "implicit" | "multi" | "absent" | "not_in_catalogue"


@dataclass
class _Volume:
    image: MedicalImage
    masks: dict[str, np.ndarray]  # structure -> bool array (image.shape)


def read_volume(folder: Path) -> _Volume:
    image = read_image(folder / "image.nii.gz")
    masks = {path.name.removesuffix(".nii.gz").replace("-", " "): read_image(path).array > 0
             for path in sorted((folder / "masks").glob("*.nii.gz"))}
    return _Volume(image, masks)


def generator_queries(data_dir: Path) -> dict[tuple[str, str], str]:
    """(patient, structure) -> the short query of the patient's first test record about it."""
    short: dict[tuple[str, str], str] = {}
    for record in read_mlmr_jsonl(data_dir / "test.jsonl", validate=False):
        if not record.absent:
            short.setdefault((str(record.extra.get("patient")), record.class_text), record.short)
    return short


def volume_questions(generator: dict[tuple[str, str], str], patient: str, held: list[str], other: list[str],
                     human: HumanQueries | None, turn: int) -> list[VolumeQuestion]:
    """The questions one test patient's volume is asked: ``generator`` (``generator_queries``)
    gives our phrasings, ``held`` are its structures, ``other`` the other modality's (absent
    here); ``turn`` picks people's phrasings in turn."""
    short = {name: generator[(patient, name)] for name in held if (patient, name) in generator}
    questions = [VolumeQuestion(patient, short[name], (name,), "generator", "implicit") for name in held if name in short]
    if human is None:
        return questions
    for name in held:
        for kind in ("explicit", "implicit"):
            texts = human.structures.get(name, {}).get(kind, ())
            if texts:
                questions.append(VolumeQuestion(patient, texts[turn % len(texts)], (name,), "people", kind))
    questions += [VolumeQuestion(patient, query, names, "people", "multi")
                  for names, query in human.multi if all(n in held for n in names)]
    for name in other:
        texts = human.structures.get(name, {}).get("explicit", ())
        if texts:
            questions.append(VolumeQuestion(patient, texts[turn % len(texts)], (name,), "people", "absent"))
    questions += [VolumeQuestion(patient, query, (), "people", "not_in_catalogue")
                  for _, query in human.outside[turn % 2 :: 4]]
    return questions


def score_answer(question: VolumeQuestion, volume: _Volume, answer: StudyAnswer, per_slice: bool = False) -> dict:
    """The per-question measurements (see the module docstring); ``per_slice``: also the
    slices' own answers' mean 2D Dice (meaningful when every slice had its own answer)."""
    axis_index = slice_axis(volume.image, answer.axis)
    asked = set(question.asked)
    false_slices = unasked_slices = 0
    for prediction in answer.predictions:
        index = prediction.slice_index or 0
        names = {structure_key(entity.phrase) for entity in prediction.entities}
        there = {name for name in names
                 if name in volume.masks and np.take(volume.masks[name], index, axis=axis_index).any()}
        false_slices += bool(names - there)
        unasked_slices += bool(there - asked)
    result = {"patient": question.patient, "query": question.query, "asked": list(question.asked),
              "source": question.source, "kind": question.kind, "answer": answer.answer,
              "found": [v.phrase for v in answer.volume_entities], "slices": len(answer.predictions),
              "false_slices": false_slices, "unasked_slices": unasked_slices,
              "seconds": round(answer.timings["total_s"], 3), "structures": {}}
    voxel_ml = float(np.prod(volume.image.spacing)) / 1000.0
    for name in question.asked:
        truth = volume.masks.get(name)
        labels = [v.label for v in answer.volume_entities if v.phrase == name]
        predicted = np.isin(answer.labels, labels) if labels else np.zeros(answer.labels.shape, bool)
        if truth is None or not truth.any():
            continue
        entry = {"dice": mask_dice(predicted, truth), "ml": round(predicted.sum() * voxel_ml, 3),
                 "true_ml": round(truth.sum() * voxel_ml, 3)}
        if per_slice:
            entry["slice_dice"] = _slice_dice(answer, truth, name, axis_index)
        result["structures"][name] = entry
    result["nothing"] = not answer.volume_entities
    return result


def _slice_dice(answer: StudyAnswer, truth: np.ndarray, name: str, axis_index: int) -> float:
    """Mean 2D Dice over the slices the mask reaches, of each slice's own answer."""
    values = []
    for prediction in answer.slice_answers:
        plane = np.take(truth, prediction.slice_index or 0, axis=axis_index)
        if not plane.any():
            continue
        masks = [e.mask for e in prediction.entities if structure_key(e.phrase) == name]
        values.append(mask_dice(np.any(masks, axis=0) if masks else np.zeros_like(plane), plane))
    return float(np.mean(values)) if values else float("nan")


def summarise(rows: list[dict]) -> dict:
    """Per group (``overall``, ``generator``, ``people``, ``people explicit``, ... and
    ``class NAME``): mean 3D Dice (and per-slice Dice when measured), the share of
    false-entity slices, absent -> nothing, volume error, seconds per question."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        for key in ("overall", row["source"], f"{row['source']} {row['kind']}"):
            groups[key].append(row)
    out = {name: _group(members) for name, members in groups.items()}
    by_class: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        for name, entry in row["structures"].items():
            by_class[name].append(entry)
    for name, entries in by_class.items():
        out[f"class {name}"] = _mean_entries(entries)
    return out


def _group(rows: list[dict]) -> dict:
    entries = [e for row in rows for e in row["structures"].values()]
    absent = [row["nothing"] for row in rows if row["kind"] in ("absent", "not_in_catalogue")]
    return {**_mean_entries(entries), "questions": len(rows),
            "false_slice_share": sum(r["false_slices"] for r in rows) / max(1, sum(r["slices"] for r in rows)),
            "unasked_slice_share": sum(r["unasked_slices"] for r in rows) / max(1, sum(r["slices"] for r in rows)),
            "nothing_rate": float(np.mean(absent)) if absent else None, "absent_count": len(absent),
            "seconds_per_question": float(np.mean([r["seconds"] for r in rows])) if rows else None}


def _mean_entries(entries: list[dict]) -> dict:
    mean = lambda key: float(np.nanmean([e[key] for e in entries])) if entries and key in entries[0] else None  # noqa: E731
    errors = [abs(e["ml"] - e["true_ml"]) / e["true_ml"] for e in entries]
    return {"dice3d": mean("dice"), "slice_dice": mean("slice_dice"), "count": len(entries),
            "volume_error": float(np.mean(errors)) if errors else None}


def evaluate_volumes(predictor: Predictor, data_dir: Path, out_dir: Path, human: HumanQueries | None = None,
                     mode: str = "full", language_slices: str = "key", patients: int | None = None,
                     progress: Progress | None = None) -> dict:
    """Ask every test patient's volume (the first ``patients`` of each modality), write
    ``volume_metrics.json`` and ``volume_per_question.jsonl`` into ``out_dir``, return the metrics."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    manifest = json.loads((data_dir / "manifest.json").read_text())
    catalogue: dict[str, list[str]] = manifest["structures"]
    chosen = _test_patients(manifest, catalogue, data_dir, patients)
    generator = generator_queries(data_dir)
    rows: list[dict] = []
    started = time.perf_counter()
    for turn, (patient, modality) in enumerate(chosen):
        volume = read_volume(data_dir / "volumes" / patient)
        held = [name for name in catalogue[modality] if volume.masks.get(name, np.zeros(1)).any()]
        other = [name for m, names in catalogue.items() if m != modality for name in names]
        for question in volume_questions(generator, patient, held, other, human, turn):
            answer = ask_study(predictor, volume.image, StudyQuestion(
                query=question.query, slices="all", mode=mode, language_slices=language_slices))
            rows.append(score_answer(question, volume, answer, per_slice=language_slices == "every"))
        if progress is not None:
            progress(turn + 1, len(chosen))
    metrics = {"mode": mode, "language_slices": language_slices, "patients": [p for p, _ in chosen],
               "seconds": round(time.perf_counter() - started, 1), "groups": summarise(rows)}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "volume_metrics.json", metrics)
    (out_dir / "volume_per_question.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return metrics


def _test_patients(manifest: dict, catalogue: dict[str, list[str]], data_dir: Path,
                   limit: int | None) -> list[tuple[str, str]]:
    """(patient, modality) of the test split, the first ``limit`` of each modality."""
    chosen, per_modality = [], defaultdict(int)
    for patient in manifest["splits"]["test"]["patients"]:
        names = {p.name.removesuffix(".nii.gz").replace("-", " ")
                 for p in (data_dir / "volumes" / patient / "masks").glob("*.nii.gz")}
        modality = max(catalogue, key=lambda m: len(names & set(catalogue[m])))
        if limit is None or per_modality[modality] < limit:
            per_modality[modality] += 1
            chosen.append((patient, modality))
    return chosen
