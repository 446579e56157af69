"""``build_demo_dataset``: an offline MLMR-SD dataset from CT phantoms and augmented MNI152 brains.

Layout of ``out_dir``::

    manifest.json                      written last: its presence marks a complete dataset
    train.jsonl val.jsonl test.jsonl   MLMR-SD records (paths relative to out_dir)
    volumes/<patient>/image.nii.gz     the whole volume (CT: int16 HU; MR: int16 arbitrary units)
    volumes/<patient>/dicom/IM*.dcm    CT only: the same volume as a DICOM series
    volumes/<patient>/masks/<structure>.nii.gz   3D masks of the structures in the volume
    slices/<patient>/<plane>_<index>.png           8-bit slice as displayed
    slices/<patient>/<plane>_<index>_<structure>.png   its binary masks (0/255), present targets only

One record per (slice, target): every structure with at least ``min_area`` pixels on the
slice gets a reasoning query from :mod:`medisee.data.queries`; structures of the same
modality with no pixel on the slice give "absent" records (no mask, no box) at about
``absent_ratio`` per present record (fewer for MR, which has few absent candidates).
Structures with 1..min_area-1 pixels are neither targets nor negatives. Patients (CT
phantoms and brain "patients" separately) are split train/val/test by patient.
"""

from __future__ import annotations

import logging
import math
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from ...atomic import write_json
from ...imaging import MedicalImage, normalize_percentile, to_uint8, write_dicom_series, write_mask
from .. import mlmr, queries
from ..records import Record
from . import brain as brain_module
from .ct_phantom import CT_STRUCTURES, DEFAULT_SHAPE, DEFAULT_SPACING, generate_phantom

log = logging.getLogger("medisee.demo")

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
_OWNED = ("manifest.json", "train.jsonl", "val.jsonl", "test.jsonl", "volumes", "slices")
_CT_CODE, _MR_CODE = 1, 2
FORMAT_VERSION = 1
_CONVENTIONS = {
    "volumes": "(z, y, x) arrays, identity direction, LPS: column -> patient left, row -> posterior, "
               "slice -> superior (slice 0 is the most inferior)",
    "axial png": "as stored: anterior at the top, patient right on the image left (radiological)",
    "coronal png": "volume[:, index, :] flipped vertically: superior at the top, patient right on the left",
    "sagittal png": "volume[:, :, index] flipped vertically: superior at the top, anterior on the left",
    "bbox": "normalised [x0, y0, x1, y1] of the displayed mask, x1 and y1 exclusive",
    "slice": "index along the plane's array axis of the volume (axial z, coronal y, sagittal x)",
    "absent": "no pixel of the structure on the slice; 1..min_area-1 pixels gives no record at all",
    "ct png window": "extra.window: 'abdomen' (40/400) or 'lung' (-600/1500)",
    "mr png": "percentile 0.5-99.5 of the whole augmented volume",
}


@dataclass
class _Slice:
    """One displayed slice with its present structures, ready to become records."""

    patient: str
    split: str
    modality: str
    plane: str
    index: int
    image: Path
    masks: dict[str, np.ndarray]  # present structure -> displayed 2D mask
    absent_candidates: list[str]
    extra: dict = field(default_factory=dict)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def split_patients(ids: list[str], rng: random.Random, fractions=SPLIT_FRACTIONS) -> dict[str, str]:
    """Patient -> split. With three or more patients, val and test get at least one each."""
    order = list(ids)
    rng.shuffle(order)
    n = len(order)
    n_val = n_test = 0
    if n >= 3:
        n_val = max(1, round(fractions[1] * n))
        n_test = max(1, round(fractions[2] * n))
    elif n == 2:
        n_test = 1
    n_train = n - n_val - n_test
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    return dict(zip(order, splits))


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty: choose a new folder or pass overwrite=True (--overwrite)")
        for name in _OWNED:  # manifest first: a half-deleted dataset never looks complete
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")


def _write_volume(array: np.ndarray, spacing, origin, path: Path) -> None:
    image = MedicalImage(array=array, spacing=spacing, origin=origin, direction=brain_module._IDENTITY)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image.to_sitk(), str(path), useCompression=True)


def _spread(count: int, total: int, rng: np.random.Generator) -> list[int]:
    """``count`` slice indices out of ``total``, evenly spaced with a random phase."""
    if count >= total:
        return list(range(total))
    step = total / count
    phase = rng.uniform(0, step)
    return sorted({min(total - 1, int(phase + i * step)) for i in range(count)})


def _position(mask: np.ndarray) -> str:
    """Coarse place of the mask's centroid in the displayed image ("upper left", "centre", ...)."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    cx, cy = (xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h
    return queries.coarse_position((cx, cy, cx, cy))


def _ct_patient(out: Path, pid: str, split: str, rng: np.random.Generator, slices_per_patient: int,
                min_area: int, lung_window_probability: float, write_dicom: bool) -> list[_Slice]:
    phantom = generate_phantom(rng, pid, DEFAULT_SHAPE, DEFAULT_SPACING)
    image = phantom.to_medical_image()
    vdir = out / "volumes" / pid
    _write_volume(phantom.volume_hu, phantom.spacing, phantom.origin, vdir / "image.nii.gz")
    mask_files = {}
    for name, mask in phantom.masks.items():
        if mask.any():
            mask_files[name] = write_mask(mask, image, vdir / "masks" / f"{_slug(name)}.nii.gz")
    if write_dicom:
        write_dicom_series(phantom.volume_hu, vdir / "dicom", phantom.spacing, phantom.origin, modality="CT",
                           patient_id=pid, patient_name=f"Phantom^{pid}", study_description="MediSee demo CT phantom",
                           series_description=f"synthetic CT, {phantom.info['phase']}")
    windows = {"abdomen": to_uint8(image, "abdomen")}
    slices = []
    for k in _spread(slices_per_patient, phantom.shape[0], rng):
        areas = {name: int(mask[k].sum()) for name, mask in phantom.masks.items()}
        present = [name for name in CT_STRUCTURES if areas[name] >= min_area]
        if not present:
            continue
        window = "abdomen"
        if ("left lung" in present or "right lung" in present) and rng.random() < lung_window_probability:
            window = "lung"
            if window not in windows:
                windows[window] = to_uint8(image, "lung")
        png = out / "slices" / pid / f"axial_{k:03d}.png"
        _save_png(windows[window][k], png)
        slices.append(_Slice(
            pid, split, "CT", "axial", k, png, {name: phantom.masks[name][k] for name in present},
            [name for name in CT_STRUCTURES if areas[name] == 0],
            extra={"window": window, "phase": phantom.info["phase"], "volume": f"volumes/{pid}/image.nii.gz",
                   "dicom": f"volumes/{pid}/dicom" if write_dicom else None,
                   "mask_volumes": {n: f"volumes/{pid}/masks/{p.name}" for n, p in mask_files.items()}},
        ))
    return slices


def _brain_patient(out: Path, pid: str, split: str, rng: np.random.Generator, counts: dict[str, int],
                   min_area: int) -> list[_Slice]:
    volume = brain_module.generate_brain(rng, pid)
    image = volume.to_medical_image()
    vdir = out / "volumes" / pid
    _write_volume(np.clip(np.rint(volume.image), 0, 32767).astype(np.int16), volume.spacing, volume.origin,
                  vdir / "image.nii.gz")
    mask_files = {name: write_mask(mask, image, vdir / "masks" / f"{_slug(name)}.nii.gz")
                  for name, mask in volume.masks.items() if mask.any()}
    display = normalize_percentile(volume.image)  # one mapping for the whole volume
    slices = []
    for plane, index in brain_module.select_slices(volume.masks, rng, counts, min_area=min_area):
        masks2d = {name: brain_module.display_slice(mask, plane, index) for name, mask in volume.masks.items()}
        areas = {name: int(mask.sum()) for name, mask in masks2d.items()}
        present = [name for name in brain_module.BRAIN_STRUCTURES if areas[name] >= min_area]
        if not present:
            continue
        png = out / "slices" / pid / f"{plane}_{index:03d}.png"
        _save_png(brain_module.display_slice(display, plane, index), png)
        slices.append(_Slice(
            pid, split, "MR", plane, index, png, {name: masks2d[name] for name in present},
            [name for name in brain_module.BRAIN_STRUCTURES if areas[name] == 0],
            extra={"window": None, "intensity": "percentile 0.5-99.5 over the volume",
                   "volume": f"volumes/{pid}/image.nii.gz", "flip_rows": plane != "axial",
                   "mask_volumes": {n: f"volumes/{pid}/masks/{p.name}" for n, p in mask_files.items()}},
        ))
    return slices


class _AbsentQuota:
    """Keeps absent records near ``ratio`` per present record, as far as candidates allow."""

    def __init__(self, ratio: float):
        self.ratio, self.owed = ratio, 0.0

    def take(self, present: int, candidates: list[str], rng: random.Random) -> list[str]:
        self.owed += self.ratio * present
        k = min(len(candidates), int(math.floor(self.owed + 0.5)))
        self.owed -= k
        return rng.sample(candidates, k)


def _records(item: _Slice, out: Path, seed: int, quota: _AbsentQuota) -> list[Record]:
    present = list(item.masks)
    base = {
        "patient": item.patient, "split": item.split, "modality": item.modality, "plane": item.plane,
        "slice": item.index, "present": present, **item.extra,
    }
    mask_volumes = base.pop("mask_volumes")
    records = []
    stem = item.image.with_suffix("")
    for name, mask in item.masks.items():
        rng = random.Random(f"{seed}:{item.patient}:{item.plane}:{item.index}:{name}")
        mask_path = Path(f"{stem}_{_slug(name)}.png")
        _save_png(mask.astype(np.uint8) * np.uint8(255), mask_path)
        position = _position(mask)
        context = queries.TargetContext(name, item.modality, item.plane, [p for p in present if p != name], position)
        answer = queries.generate_queries(context, item.split, rng, count=1)[0]
        extra = {**base, "position": position, "area": int(mask.sum()), "mask_volume": mask_volumes.get(name),
                 "orientation": answer.orientation, "template_id": answer.template_id}
        records.append(Record(item.image, mask_path, name, answer.long, answer.short, mlmr.mask_bbox(mask),
                              answer.explanation, False, "", extra))
    pick = random.Random(f"{seed}:{item.patient}:{item.plane}:{item.index}:absent")
    for name in quota.take(len(present), item.absent_candidates, pick):
        rng = random.Random(f"{seed}:{item.patient}:{item.plane}:{item.index}:{name}:absent")
        context = queries.TargetContext(name, item.modality, item.plane, present, None)
        answer = queries.generate_queries(context, item.split, rng, count=1)[0]
        explanation = queries.absent_explanation(name, rng)
        extra = {**base, "position": None, "area": 0, "mask_volume": mask_volumes.get(name),
                 "orientation": answer.orientation, "template_id": answer.template_id}
        records.append(Record(item.image, None, name, answer.long, answer.short, None, explanation, True, "", extra))
    return records


def _counts(records: list[Record], slices: list[_Slice], assignment: dict[str, str]) -> dict:
    counts: dict = {}
    for split in SPLITS:
        chosen = [r for r in records if r.extra["split"] == split]
        classes: dict[str, dict[str, int]] = {}
        for record in chosen:
            entry = classes.setdefault(record.class_text, {"present": 0, "absent": 0})
            entry["absent" if record.absent else "present"] += 1
        absent = sum(r.absent for r in chosen)
        counts[split] = {
            "patients": sorted(p for p, s in assignment.items() if s == split),
            "slices": sum(s.split == split for s in slices),
            "records": len(chosen),
            "present": len(chosen) - absent,
            "absent": absent,
            "by_modality": {m: sum(r.extra["modality"] == m for r in chosen) for m in ("CT", "MR")},
            "classes": dict(sorted(classes.items())),
        }
    return counts


def build_demo_dataset(
    out_dir: str | Path,
    seed: int = 0,
    patients: int = 20,
    slices_per_patient: int = 20,
    brain_patients: int = 10,
    brain_slices: dict[str, int] | None = None,
    absent_ratio: float = 0.25,
    min_area: int = 25,
    lung_window_probability: float = 0.25,
    write_dicom: bool = True,
    overwrite: bool = False,
) -> dict:
    """Generate the demo dataset into ``out_dir`` (see the module docstring) and return its manifest
    plus ``seconds`` and ``jsonl`` (split -> path). Deterministic for a seed (DICOM UIDs aside).

    ``patients`` CT phantoms with ``slices_per_patient`` axial slices each (of 40); ``brain_patients``
    augmented MNI152 brains with ``brain_slices`` slices per plane (default axial 6, coronal 4,
    sagittal 4). Refuses a non-empty ``out_dir`` unless ``overwrite`` (which removes only what a
    previous build wrote there)."""
    counts_per_plane = _checked(patients, slices_per_patient, brain_patients, brain_slices, absent_ratio)
    started = time.perf_counter()
    out = Path(out_dir)
    _prepare(out, overwrite)
    out = out.resolve()

    ct_ids = [f"ct{i:03d}" for i in range(patients)]
    mr_ids = [f"mr{i:03d}" for i in range(brain_patients)]
    assignment = {**split_patients(ct_ids, random.Random(f"{seed}:split:CT")),
                  **split_patients(mr_ids, random.Random(f"{seed}:split:MR"))}
    slices: list[_Slice] = []
    for i, pid in enumerate(ct_ids):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _CT_CODE, i]))
        slices += _ct_patient(out, pid, assignment[pid], rng, slices_per_patient, min_area,
                              lung_window_probability, write_dicom)
        log.info("CT phantom %d/%d (%s, %s)", i + 1, patients, pid, assignment[pid])
    for i, pid in enumerate(mr_ids):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _MR_CODE, i]))
        slices += _brain_patient(out, pid, assignment[pid], rng, counts_per_plane, min_area)
        log.info("brain MRI %d/%d (%s, %s)", i + 1, brain_patients, pid, assignment[pid])

    records: list[Record] = []
    quotas = {"CT": _AbsentQuota(absent_ratio), "MR": _AbsentQuota(absent_ratio)}
    for item in slices:
        records += _records(item, out, seed, quotas[item.modality])
    jsonl = {}
    for split in SPLITS:
        jsonl[split] = out / f"{split}.jsonl"
        mlmr.write_mlmr_jsonl([r for r in records if r.extra["split"] == split], jsonl[split])

    parameters = {
        "patients": patients, "slices_per_patient": slices_per_patient, "brain_patients": brain_patients,
        "brain_slices": counts_per_plane, "absent_ratio": absent_ratio, "min_area": min_area,
        "lung_window_probability": lung_window_probability, "write_dicom": write_dicom,
    }
    manifest = _manifest(seed, parameters, records, slices, assignment)
    write_json(out / "manifest.json", manifest)
    seconds = time.perf_counter() - started
    totals = manifest["totals"]
    log.info("wrote %d records (%d absent) from %d slices in %.1f s", totals["records"], totals["absent"], len(slices), seconds)
    return {**manifest, "out": str(out), "jsonl": {k: str(v) for k, v in jsonl.items()}, "seconds": round(seconds, 2)}


def _checked(patients: int, slices_per_patient: int, brain_patients: int, brain_slices: dict[str, int] | None,
             absent_ratio: float) -> dict[str, int]:
    """The brain slices per plane, once every argument is checked (before anything is written)."""
    if patients < 0 or brain_patients < 0 or patients + brain_patients == 0:
        raise ValueError("need at least one CT or brain patient")
    if slices_per_patient < 1:
        raise ValueError(f"slices_per_patient must be at least 1, got {slices_per_patient}")
    if not 0 <= absent_ratio <= 10:
        raise ValueError(f"absent_ratio must be between 0 and 10, got {absent_ratio}")
    counts_per_plane = dict(brain_slices or {"axial": 6, "coronal": 4, "sagittal": 4})
    unknown = set(counts_per_plane) - set(brain_module.PLANES)
    if unknown:
        raise ValueError(f"unknown brain slice planes {sorted(unknown)}: use {', '.join(brain_module.PLANES)}")
    if brain_patients:
        brain_module.template_paths()  # fail early, before writing anything, if nilearn is missing
    return counts_per_plane


def _manifest(seed: int, parameters: dict, records: list[Record], slices: list[_Slice], assignment: dict[str, str]) -> dict:
    total = len(records)
    absent = sum(r.absent for r in records)
    return {
        "generator": "medisee.data.demo.build_demo_dataset",
        "format": "MLMR-SD jsonl",
        "version": FORMAT_VERSION,
        "seed": seed,
        "parameters": {
            **parameters,
            "ct_shape_zyx": list(DEFAULT_SHAPE), "ct_spacing_xyz": list(DEFAULT_SPACING),
            "brain_shape_zyx": list(brain_module.DEFAULT_SHAPE), "brain_spacing": brain_module.DEFAULT_SPACING,
            "split_fractions": dict(zip(SPLITS, SPLIT_FRACTIONS)),
        },
        "structures": {"CT": list(CT_STRUCTURES), "MR": list(brain_module.BRAIN_STRUCTURES)},
        "totals": {"records": total, "present": total - absent, "absent": absent,
                   "absent_rate": round(absent / total, 4) if total else 0.0, "slices": len(slices)},
        "splits": _counts(records, slices, assignment),
        "conventions": dict(_CONVENTIONS),
    }
