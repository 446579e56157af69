"""A corrected label volume and the question that produced it -> MLMR-SD training records.

A radiologist asks a question about a study, corrects the predicted labels and submits
them. :func:`correction_records` turns that into what training reads: each slice with a
named label becomes an 8-bit PNG (windowed exactly as inference windows it, so the model
trains on the pixels it will be asked about) plus one 0/255 mask PNG per entity, and:

* the stored query, answered with the canonical grounded answer. With one entity on the
  slice that is ``templates.grounded_answer`` with an explanation naming its phrase; with
  several, one multi-target record (``extra["targets"]`` and ``extra["answer"]`` =
  ``templates.grouped_answer``, as :mod:`.mimo` writes them), because per-entity records
  with the same image and question would teach contradicting answers;
* one referring record per entity ("Please segment the liver in this image."), answered
  as :mod:`.mimo` answers a named label: ``templates.grouped_answer`` with its one phrase.

A few slices with no named label at all give "absent" referring records (the answer is
``templates.absent_answer``; with a single named entity, the stored query too), so the
model also learns to say "not here". Label values without a name are ignored with a
warning; value 0 is the background (a name given to it is dropped). Everything is
deterministic for a seed.

Layout of ``out_dir``: ``{axis}_{index:04d}.png`` and ``{axis}_{index:04d}_label{value}.png``.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..imaging import AXES, ImageReadError, MedicalImage, extract_slice, read_image, to_uint8
from ..imaging.windowing import parse_window, resolve_window
from .mlmr import mask_bbox
from .queries import absent_explanation
from .records import DataError, Record
from .templates import grouped_answer, plain_explanation, referring_query

log = logging.getLogger("medisee.data.corrections")

Window = str | tuple[float, float] | None


@dataclass
class Correction:
    """One corrected study: an image, its integer label volume (same shape, 0 = background),
    what each label value is called and the question that was asked."""

    image: str | Path  # NIfTI / NRRD file or DICOM folder, anything read_image reads
    label: str | Path  # integer label volume aligned with the image
    label_names: dict[int, str]  # label value -> entity phrase, e.g. {1: "liver", 2: "left kidney"}
    query: str = ""  # the question that produced the labels; may be empty
    axis: str = "axial"
    window: Window = None  # CT preset, (level, width) or "LEVEL,WIDTH"; None: as inference windows it

    def __post_init__(self) -> None:
        """Check and normalise the fields, so a bad correction fails before any file is read."""
        self.image, self.label = Path(self.image), Path(self.label)
        if self.axis not in AXES:
            raise DataError(f"unknown slice axis {self.axis!r}: choose one of {', '.join(AXES)}")
        try:
            self.window = parse_window(self.window)
            if self.window is not None:
                resolve_window(self.window)  # an unknown preset fails here, not after reading the study
        except ValueError as err:
            raise DataError(str(err)) from None
        if not isinstance(self.label_names, dict) or not self.label_names:
            raise DataError('label_names must map label values to phrases, e.g. {1: "liver"}')
        names = {}
        for value, phrase in self.label_names.items():
            digits = isinstance(value, str) and value.strip().isdigit()
            if isinstance(value, bool) or not (isinstance(value, numbers.Integral) or digits) or int(value) < 0:
                raise DataError(f"label value {value!r} in label_names must be a non-negative integer")
            number = int(value)
            if not isinstance(phrase, str) or not phrase.strip():
                raise DataError(f"label value {number} needs a non-empty phrase in label_names, got {phrase!r}")
            if number:  # 0 is the background, whatever a client calls it
                names[number] = re.sub(r"\s+", " ", phrase.strip())
        if not names:
            raise DataError("label_names names only the background (0): name at least one label value")
        self.label_names = names
        self.query = (self.query or "").strip()


def label_names_of(info: dict) -> dict[int, str]:
    """What a submitted label's values are called, from the label info a client sent, as
    {value: phrase} ({} when it names none). Three shapes are read:

    * ``label_names`` as MONAI Label names them, phrase -> value (``{"liver": 1}``; ours too);
    * ``label_names`` value -> phrase (``{"1": "liver"}``), as MediSee's module sent it before;
    * ``label_info``, the list MONAI Label's Slicer plugin sends (``[{"name": "liver", "idx": 1}]``):
      the plugin exports the segments it lists as label values 1..N in list order, so the
      position, not ``idx`` (which counts the segments it skipped), is the value.
    """
    names, listed = info.get("label_names"), info.get("label_info")
    if names is None and listed is None:
        return {}
    if names is not None:
        if not isinstance(names, dict) or not names:
            raise DataError('label_names must map phrases to label values, e.g. {"liver": 1}')
        if all(isinstance(v, int) and not isinstance(v, bool) for v in names.values()):
            pairs = [(v, k) for k, v in names.items()]
        elif all(isinstance(k, str) and k.strip().isdigit() and isinstance(v, str) for k, v in names.items()):
            pairs = [(int(k), v) for k, v in names.items()]
        else:
            raise DataError('label_names must map phrases to label values, e.g. {"liver": 1}')
    else:
        if not isinstance(listed, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in listed):
            raise DataError('label_info must list the segments saved, e.g. [{"name": "liver"}]')
        pairs = [(position + 1, entry["name"]) for position, entry in enumerate(listed)]
    values = [v for v, _ in pairs]
    if len(set(values)) != len(values):
        raise DataError(f"label_names gives one label value several names: {sorted(v for v in set(values) if values.count(v) > 1)}")
    for value, phrase in pairs:
        if value < 0 or not isinstance(phrase, str) or not phrase.strip():
            raise DataError(f"label value {value} needs a non-empty phrase and a value of 0 or more")
    return {value: phrase.strip() for value, phrase in pairs if value}


def study_name(path: str | Path) -> str:
    """A file-system-safe name for a study from its image path ("ct_007.nii.gz" -> "ct-007")."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "study"


def load_correction(correction: Correction) -> tuple[MedicalImage, np.ndarray]:
    """The image and its label array, after checking they can be read and agree in shape."""
    try:
        image = read_image(correction.image)
    except ImageReadError as err:
        raise DataError(f"cannot read the corrected study's image: {err}") from err
    try:
        label = read_image(correction.label)
    except ImageReadError as err:
        raise DataError(f"cannot read the corrected label: {err}") from err
    if label.is_rgb or label.shape != image.shape:
        raise DataError(f"the label {correction.label} has shape {tuple(label.array.shape)} but the image "
                        f"{correction.image} has shape {image.shape}: they must be the same")
    array = label.array
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(np.mod(array, 1)):
            raise DataError(f"the label {correction.label} holds fractional values: labels must be integers")
    if array.size and array.min() < 0:
        raise DataError(f"the label {correction.label} holds negative values: labels must be 0 or positive")
    if image.ndim == 2 and correction.axis != "axial":
        raise DataError(f"{correction.image} is a 2D image: it has no {correction.axis} slices (use axis 'axial')")
    return image, array.astype(np.int64, copy=False)


def _save_png(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")
    return path


def _spread(indices: list[int], count: int) -> list[int]:
    """At most ``count`` of ``indices``, evenly spaced over them (first and last kept)."""
    if len(indices) <= count:
        return indices
    picks = np.linspace(0, len(indices) - 1, count).round().astype(int)
    return [indices[i] for i in sorted(set(picks.tolist()))]


def correction_records(
    correction: Correction,
    out_dir: str | Path,
    study: str | None = None,
    seed: int = 0,
    max_slices: int | None = 16,
    min_area: int = 10,
    absent_slices: int = 2,
) -> list[Record]:
    """Write the slices and masks of ``correction`` into ``out_dir`` and return their records
    (see the module docstring). ``max_slices`` labelled slices at most, evenly spaced;
    an entity needs ``min_area`` pixels on a slice to be a target there (smaller pieces are
    neither targets nor absent); ``absent_slices`` slices without any named label give
    absent records. ``extra`` carries study, slice, axis, label value(s) and record kind."""
    if max_slices is not None and max_slices < 1:
        raise ValueError(f"max_slices must be at least 1, got {max_slices}")
    if min_area < 1:
        raise ValueError(f"min_area must be at least 1 pixel, got {min_area}")
    image, labels = load_correction(correction)
    study = study or study_name(correction.image)
    axis = correction.axis
    present_values = {int(v) for v in np.unique(labels)} - {0}
    unnamed = sorted(present_values - set(correction.label_names))
    if unnamed:
        log.warning("%s: label value(s) %s have no name in label_names: ignored", correction.label, unnamed)
    values_of: dict[str, list[int]] = {}  # phrase -> its label values (two values may share a phrase)
    for value, phrase in sorted(correction.label_names.items()):
        values_of.setdefault(phrase, []).append(value)
    labelled = dataclasses.replace(image, array=labels)  # same geometry, so the same slicing
    count = image.num_slices(axis)
    areas: dict[int, dict[str, int]] = {}
    for index in range(count):
        plane = extract_slice(labelled, index, axis)
        areas[index] = {phrase: int(np.isin(plane, values).sum()) for phrase, values in values_of.items()}
    targets = [i for i in range(count) if any(a >= min_area for a in areas[i].values())]
    if not targets:
        raise DataError(f"{correction.label}: no slice holds a named label ({', '.join(values_of)}) "
                        f"of at least {min_area} pixels")
    chosen = _spread(targets, max_slices) if max_slices else targets
    empty = [i for i in range(count) if not any(areas[i].values())]
    rng = random.Random(f"{seed}:{study}:absent")
    absent = sorted(rng.sample(empty, min(absent_slices, len(empty))))

    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    display = dataclasses.replace(image, array=to_uint8(image, correction.window))
    base = {"study": study, "axis": axis, "modality": image.modality, "correction": str(correction.label)}
    records: list[Record] = []
    for index in sorted(chosen + absent):
        png = _save_png(extract_slice(display, index, axis), out / f"{axis}_{index:04d}.png")
        plane = extract_slice(labelled, index, axis)
        extra, source = {**base, "slice": index}, f"{study}:{axis}:{index}"
        if index in absent:
            records += _absent_records(png, list(values_of), correction.query, extra, source, seed)
            continue
        found = []
        for phrase, values in values_of.items():
            if areas[index][phrase] < min_area:
                continue
            mask = np.isin(plane, values)
            path = _save_png(mask.astype(np.uint8) * np.uint8(255), out / f"{axis}_{index:04d}_label{values[0]}.png")
            found.append((phrase, values, path, mask_bbox(mask)))
        rng = random.Random(f"{seed}:{study}:{index}")
        if correction.query:
            records.append(_query_record(png, found, correction.query, extra, source, rng))
        for phrase, values, path, bbox in found:
            long, short = referring_query(phrase, rng), referring_query(phrase, rng)
            records.append(Record(png, path, phrase, long, short, bbox, "", source=source,
                                  extra={**extra, "kind": "referring", "label_values": values,
                                         "answer": grouped_answer([phrase])}))
    log.info("%s: %d records from %d labelled and %d empty %s slices", study, len(records), len(chosen), len(absent), axis)
    return records


def _query_record(png: Path, found: list, query: str, extra: dict, source: str, rng: random.Random) -> Record:
    """The stored question on one slice: single-target answer, or one grouped answer for all."""
    phrase, values, path, bbox = found[0]
    if len(found) == 1:
        return Record(png, path, phrase, query, query, bbox, plain_explanation(phrase, rng), source=source,
                      extra={**extra, "kind": "query", "label_values": values})
    listed = [{"class_text": p, "mask": str(m), "bbox": list(b)} for p, _, m, b in found]
    return Record(png, path, phrase, query, query, bbox, "", source=source,
                  extra={**extra, "kind": "query", "label_values": values, "targets": listed,
                         "answer": grouped_answer([p for p, *_ in found])})


def _absent_records(png: Path, phrases: list[str], query: str, extra: dict, source: str, seed: int) -> list[Record]:
    """A slice without any named label: each phrase is absent (and so is the single-entity query's target)."""
    rng = random.Random(f"{seed}:{extra['study']}:{extra['slice']}:absent")
    records = []
    if query and len(phrases) == 1:
        records.append(Record(png, None, phrases[0], query, query, None, absent_explanation(phrases[0], rng), True, source,
                              extra={**extra, "kind": "query-absent"}))
    for phrase in phrases:
        long, short = referring_query(phrase, rng), referring_query(phrase, rng)
        records.append(Record(png, None, phrase, long, short, None, absent_explanation(phrase, rng), True, source,
                              extra={**extra, "kind": "referring-absent"}))
    return records
