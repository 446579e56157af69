"""``medisee predict``: one question about an image or a series, answered into a folder.

Writes ``result.json`` (answer, entities with phrase, box, score, slice and mask file),
the masks (NIfTI aligned with the input for DICOM and volumes, PNG for 2D images) and
``overlay.png`` for a person to look at."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import time
from pathlib import Path

import numpy as np

from ..atomic import write_json
from ..imaging import AXES, MedicalImage, extract_slice, read_image, to_uint8, write_mask, write_overlay_png
from ..predictor import MODES, Prediction, Predictor, PredictionInputError
from ..results import LabelledResult, assemble

log = logging.getLogger("medisee.predict")


def register(commands) -> None:
    parser = commands.add_parser(
        "predict", help="answer a question about an image with text, masks and boxes",
        description="Answer a plain-language question about a medical image. Input: a DICOM series "
        "folder, a DICOM file, NIfTI, NRRD, PNG or JPEG. Output folder: result.json, mask files and "
        "overlay.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default="default", help="'default' (bundled) or a MediSee checkpoint folder")
    parser.add_argument("--image", required=True, help="image file or DICOM series folder")
    parser.add_argument("--query", required=True, help="the question, e.g. 'which organ filters the blood?'")
    parser.add_argument("--box", type=_numbers(4, "X0,Y0,X1,Y1"), help="box prompt in pixels of the slice: X0,Y0,X1,Y1")
    parser.add_argument("--point", type=_numbers(2, "X,Y"), help="point prompt in pixels of the slice: X,Y")
    parser.add_argument("--slice", default=None,
                        help="for volumes: a slice index N, a range A-B, or 'all' (default: the middle slice)")
    parser.add_argument("--axis", default="axial", choices=AXES, help="slicing direction for volumes")
    parser.add_argument("--window", default=None,
                        help="CT window: a preset (abdomen, lung, bone, brain, liver, ...) or LEVEL,WIDTH")
    parser.add_argument("--mode", default="full", choices=MODES,
                        help="full: generate the explanation; fast: masks only (no text generation)")
    parser.add_argument("--threshold", type=float, default=None, help="score below which no entity is reported")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per batch")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.set_defaults(run=run)


def _numbers(count: int, shape: str):
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {shape} ({count} comma-separated numbers), got {text!r}")
        return values

    return parse


def parse_slices(spec: str | None, count: int) -> list[int]:
    """``None`` -> the middle slice; ``N``; ``A-B`` (inclusive); ``all``."""
    if spec is None:
        return [count // 2]
    spec = spec.strip().lower()
    if spec == "all":
        return list(range(count))
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", spec)
    if not match:
        raise ValueError(f"--slice must be N, A-B or all, got {spec!r}")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else first
    if first > last:
        raise ValueError(f"--slice range {spec} is reversed")
    if last >= count:
        raise IndexError(f"slice {last} out of range: the volume has {count} slices (0..{count - 1})")
    return list(range(first, last + 1))


def parse_window(spec: str | None):
    if spec is None or "," not in spec:
        return spec
    try:
        level, width = (float(v) for v in spec.split(","))
    except ValueError:
        raise ValueError(f"--window must be a preset name or LEVEL,WIDTH, got {spec!r}") from None
    return level, width


def run(args: argparse.Namespace) -> int:
    from ..models import load_model

    if not args.query.strip():
        raise PredictionInputError("the query is empty: type a question about the image")
    image = read_image(args.image)
    display = dataclasses.replace(image, array=to_uint8(image, parse_window(args.window)))
    axis = args.axis if image.ndim == 3 else "axial"
    count = image.num_slices(axis)
    indices = parse_slices(args.slice, count)
    slices = [extract_slice(display, i, axis) for i in indices]

    loaded = load_model(args.model, device=args.device)
    if not loaded.trained:
        log.warning("model %s is untrained: %s", loaded.name, loaded.note)
    predictor = Predictor(loaded.bundle, score_threshold=args.threshold, batch_size=args.batch_size)
    log.info("%s: %d slice(s) along %s, query %r", args.image, len(indices), axis, args.query)
    started = time.perf_counter()
    predictions = predictor.predict_slices(
        slices, args.query, box=args.box, point=args.point, mode=args.mode,
        progress=lambda done, total: log.info("slices %d/%d", done, total) if total > 1 else None,
    )
    for index, prediction in zip(indices, predictions):
        prediction.slice_index = index
    elapsed = time.perf_counter() - started

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = assemble(predictions, image, axis)
    files = write_outputs(out, image, display, axis, indices, slices, predictions, result)
    summary = {
        "model": loaded.name,
        "model_trained": loaded.trained,
        "image": str(args.image),
        "image_shape": list(image.shape),
        "query": args.query.strip(),
        "mode": args.mode,
        "axis": axis,
        "slices": indices,
        "answer": _answer(predictions),
        "answers": [{"slice": p.slice_index, "answer": p.answer} for p in predictions],
        "entities": [e | {"mask_file": files["entity_masks"][e["label"]]} for e in result.entities],
        "label_names": {str(k): v for k, v in result.label_names.items()},
        "labels_file": files["labels"],
        "overlay": files["overlay"],
        "seconds": round(elapsed, 3),
    }
    write_json(out / "result.json", summary)
    found = len(result.entities)
    print(f"answer: {summary['answer'] or '(no text)'}")
    print(f"entities: {found}" + ("" if found else " (no target found)") + f"; results in {out}/result.json")
    return 0


def _answer(predictions: list[Prediction]) -> str:
    """The answer of the first slice that has one (slices share the question)."""
    for prediction in predictions:
        if prediction.entities and prediction.answer:
            return prediction.answer
    return next((p.answer for p in predictions if p.answer), "")


def write_outputs(out: Path, image: MedicalImage, display: MedicalImage, axis: str, indices: list[int],
                  slices: list[np.ndarray], predictions: list[Prediction], result: LabelledResult) -> dict:
    """Label file, one binary mask file per entity label, and the overlay PNG."""
    suffix = ".png" if image.ndim == 2 else ".nii.gz"
    labels_name = "labels" + suffix
    write_mask(result.labels, image, out / labels_name)
    entity_masks = {}
    for label, phrase in result.label_names.items():
        name = f"mask-{label}-{_slug(phrase)}{suffix}"
        write_mask((result.labels == label).astype(np.uint8), image, out / name)
        entity_masks[label] = name
    # the overlay shows the slice with the most segmented pixels (the first one when none)
    areas = [sum(int(e.mask.sum()) for e in p.entities) for p in predictions]
    best = int(np.argmax(areas)) if any(areas) else 0
    shown = predictions[best]
    write_overlay_png(
        slices[best], [e.mask for e in shown.entities], [e.box for e in shown.entities],
        [f"{e.phrase} ({e.score:.2f})" for e in shown.entities], out / "overlay.png",
    )
    return {"labels": labels_name, "entity_masks": entity_masks, "overlay": "overlay.png", "overlay_slice": indices[best]}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "entity"

