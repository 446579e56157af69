"""``medisee predict``: one question about an image or a series, answered into a folder.

Writes ``result.json`` (``medisee.answer.Answer``, the server's JSON plus the files written),
the masks (NIfTI aligned with the input for DICOM and volumes, PNG for 2D images) and
``overlay.png`` for a person to look at."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import numpy as np

from ..answer import OutputFiles, build_answer
from ..atomic import write_json
from ..imaging import AXES, CT_WINDOWS, MedicalImage, read_image, write_mask, write_overlay_png
from ..models import PRECISIONS, load_model
from ..predictor import MODES, Predictor, validate_query
from ..study import LANGUAGE_SLICES, StudyAnswer, StudyQuestion, ask_study

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
    parser.add_argument("--prompt-slice", type=int, default=None,
                        help="the slice --box/--point was drawn on: over several slices the structure it marks is "
                        "followed through the volume (default: the prompt applies to every slice asked for)")
    parser.add_argument("--slice", default=None,
                        help="for volumes: a slice index N, a range A-B, or 'all' (default: the middle slice)")
    parser.add_argument("--axis", default="axial", choices=AXES, help="slicing direction for volumes")
    parser.add_argument("--window", default=None,
                        help=f"CT window: a preset ({', '.join(CT_WINDOWS)}) or LEVEL,WIDTH")
    parser.add_argument("--mode", default="full", choices=MODES,
                        help="full: generate the explanation; fast: masks only (no text generation)")
    parser.add_argument("--language-slices", default="key", choices=LANGUAGE_SLICES,
                        help="several slices of a volume: the language model reads a few key slices and the "
                        "structures they find are followed through the volume (key), or it reads every slice (every)")
    parser.add_argument("--threshold", type=float, default=None, help="score below which no entity is reported (default: the model's own, chosen on validation "
                        "data; `medisee info` shows it)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per batch")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--precision", choices=list(PRECISIONS), default=None,
                        help="weights' precision (default: as stored); 8bit/4bit need a CUDA GPU and bitsandbytes "
                        "(`medisee info --model M --memory` shows what each needs)")
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


def run(args: argparse.Namespace) -> int:
    image = read_image(args.image)
    question = StudyQuestion(query=args.query, slices=args.slice, axis=args.axis if image.ndim == 3 else "axial",
                             box=args.box, point=args.point, window=args.window, mode=args.mode, prompt_slice=args.prompt_slice,
                             language_slices=args.language_slices)
    validate_query(question.query)  # before the model loads
    loaded = load_model(args.model, device=args.device, precision=args.precision)
    if not loaded.trained:
        log.warning("model %s is untrained: %s", loaded.name, loaded.note)
    predictor = Predictor(loaded.bundle, score_threshold=args.threshold, batch_size=args.batch_size)
    log.info("%s: query %r", args.image, args.query)
    study = ask_study(predictor, image, question,
                      progress=lambda done, total: log.info("slices %d/%d", done, total) if total > 1 else None)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    answer = build_answer(study, image, query=args.query, mode=args.mode, model=loaded.name, model_trained=loaded.trained,
                          image_path=str(args.image), files=write_outputs(out, image, study))
    write_json(out / "result.json", answer.to_dict())
    found = len(answer.entities)
    print(f"answer: {answer.answer or '(no text)'}")
    print(f"entities: {found}" + ("" if found else " (no target found)") + f"; results in {out}/result.json")
    for structure in study.volume_entities:
        print(f"  {structure.phrase}: slices {structure.first_slice}-{structure.last_slice}, {structure.volume_ml:.1f} mL")
    return 0


def write_outputs(out: Path, image: MedicalImage, study: StudyAnswer) -> OutputFiles:
    """Label file, one binary mask file per entity label, and the overlay PNG."""
    suffix = ".png" if image.ndim == 2 else ".nii.gz"
    labels_name = "labels" + suffix
    write_mask(study.labels, image, out / labels_name)
    masks = {}
    for label, phrase in study.label_names.items():
        name = f"mask-{label}-{_slug(phrase)}{suffix}"
        write_mask((study.labels == label).astype(np.uint8), image, out / name)
        masks[str(label)] = name
    # the overlay shows the slice with the most segmented pixels (the first one when none)
    areas = [sum(int(e.mask.sum()) for e in p.entities) for p in study.predictions]
    best = int(np.argmax(areas)) if any(areas) else 0
    shown = study.predictions[best]
    write_overlay_png(
        study.planes[best], [e.mask for e in shown.entities], [e.box for e in shown.entities],
        [f"{e.phrase} ({e.score:.2f})" for e in shown.entities], out / "overlay.png",
    )
    return OutputFiles(labels=labels_name, overlay="overlay.png", overlay_slice=study.slices[best], masks=masks)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "entity"

