"""SA-Med2D-style training maps: ``{image_path: {mask_path: class_name, ...}, ...}``.

Each mask becomes one :class:`Record` with plain referring queries (the class is named,
no reasoning) and a short explanation naming the class. The box comes from the mask, so
every mask is read even with ``validate=False`` (which only skips the image checks).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from . import templates
from .mlmr import data_path, load_target, mask_bbox
from .queries import display_name
from .records import DataError, Record

_SHAPE = "an object mapping image paths to {mask path: class name} objects"


def read_samed2d_map(path: str | Path, seed: int = 0, validate: bool = True) -> list[Record]:
    """One record per mask, in file order; the queries are drawn from an rng seeded by ``seed``."""
    path = Path(path)
    folder = path.absolute().parent
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected {_SHAPE}")
    rng = random.Random(seed)
    records = []
    for image_key, masks in data.items():
        where = f"{path}: {image_key}"
        if not isinstance(masks, dict) or not masks:
            raise DataError(f"{where}: expected a non-empty object mapping mask paths to class names")
        image = data_path(folder, image_key)
        if validate and not image.is_file():
            raise DataError(f"{where}: image file not found: {image}")
        for mask_key, class_name in masks.items():
            if not isinstance(class_name, str) or not class_name.strip():
                raise DataError(f"{where}: {mask_key}: class name must be a non-empty string")
            mask = data_path(folder, mask_key)
            array = load_target(image, mask, f"{where}: {mask_key}", check_image=validate)
            name = display_name(class_name)
            short, long = (template.format(class_name=name) for template in rng.sample(templates.REFERRING_TEMPLATES, 2))
            records.append(Record(
                image=image,
                mask=mask,
                class_text=class_name,
                long=long,
                short=short,
                bbox=mask_bbox(array),
                explanation=templates.plain_explanation(name, rng),
                source=f"{where}: {mask_key}",
                extra={"source_type": "samed2d"},
            ))
    return records
