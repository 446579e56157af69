"""Writing masks and overlays, atomically (temp file + ``os.replace``).

DICOM series writing lives in ``dicom_writer`` and is re-exported here.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw, ImageFont

from .dicom_writer import write_dicom_series
from .image import MedicalImage

__all__ = ["PALETTE", "write_dicom_series", "write_mask", "write_overlay_png"]

_SITK_MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd")
# Distinct saturated colours (from Trubetskoy's list), cycled when there are more masks.
PALETTE = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25),
    (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
)  # fmt: skip
_MASK_ALPHA = 0.45


def _suffix(path: Path) -> str:
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix.lower()


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers pick the format).

    It replaces ``path`` only if the block succeeds, so readers never see a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{_suffix(path)}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _labels(mask: np.ndarray) -> np.ndarray:
    """``mask`` as uint8 labels, or uint16 when there are labels above 255."""
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    if mask.dtype.kind not in "iuf" or (mask.size and (mask.min() < 0 or np.any(np.mod(mask, 1)))):
        raise ValueError(f"mask must hold non-negative integer labels, got dtype {mask.dtype}")
    top = int(mask.max()) if mask.size else 0
    if top > np.iinfo(np.uint16).max:
        raise ValueError(f"mask label {top} is too large: at most 65535 labels can be written")
    return mask.astype(np.uint8 if top <= 255 else np.uint16)


def write_mask(mask: np.ndarray, reference: MedicalImage, path: str | Path) -> Path:
    """Write a binary or label mask aligned with ``reference``.

    ``.nii.gz``/``.nii``/``.nrrd`` carry the reference's spacing, origin and
    direction; ``.png`` (2D or single-slice references only) stores binary
    masks as 0/255 and label masks as their values (16-bit above 255).
    """
    path, mask = Path(path), np.asarray(mask)
    if mask.shape != reference.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the reference image shape {reference.shape}")
    labels = _labels(mask)
    suffix = _suffix(path)
    if suffix in _SITK_MASK_SUFFIXES:
        img = sitk.GetImageFromArray(labels)
        img.SetSpacing(reference.spacing)
        img.SetOrigin(reference.origin)
        img.SetDirection(reference.direction)
        with _atomic(path) as tmp:
            sitk.WriteImage(img, str(tmp), useCompression=True)
    elif suffix == ".png":
        if labels.ndim == 3 and labels.shape[0] != 1:
            raise ValueError(f"{path}: PNG holds one slice, but the reference has {labels.shape[0]}: use .nii.gz")
        plane = labels.reshape(labels.shape[-2:])
        if plane.max(initial=0) <= 1:
            plane = plane * np.uint8(255)
        with _atomic(path) as tmp:
            Image.fromarray(plane).save(tmp, format="PNG")
    else:
        raise ValueError(f"{path}: unsupported mask format {suffix!r}: use .nii.gz, .nii, .nrrd or .png")
    return path


def write_overlay_png(
    gray_uint8: np.ndarray,
    masks: Sequence[np.ndarray],
    boxes: Sequence[tuple[float, float, float, float] | None],
    labels: Sequence[str],
    path: str | Path,
) -> Path:
    """Write an RGB picture of a slice with coloured masks, boxes and labels, for people to check.

    ``gray_uint8`` is ``(y, x)`` or ``(y, x, 3)`` uint8; mask ``i``, box ``i``
    (xyxy pixels, x = column) and label ``i`` share colour ``PALETTE[i]``. A
    label sits above its box, or its mask's extent when there is no box.
    """
    base = np.asarray(gray_uint8)
    if base.dtype != np.uint8 or not (base.ndim == 2 or (base.ndim == 3 and base.shape[2] == 3)):
        raise ValueError(f"expected a (y, x) or (y, x, 3) uint8 image, got {base.dtype} {base.shape}")
    if not len(masks) == len(boxes) == len(labels):
        raise ValueError(
            f"got {len(masks)} masks, {len(boxes)} boxes and {len(labels)} labels: need one of each per object"
        )
    rgb = (np.repeat(base[..., None], 3, axis=2) if base.ndim == 2 else base).astype(np.float32)
    for i, mask in enumerate(masks):
        inside = np.asarray(mask).astype(bool)
        if inside.shape != base.shape[:2]:
            raise ValueError(f"mask {i} has shape {inside.shape}, expected {base.shape[:2]}")
        rgb[inside] = (1 - _MASK_ALPHA) * rgb[inside] + _MASK_ALPHA * np.array(PALETTE[i % len(PALETTE)])
    image = Image.fromarray(np.rint(rgb).astype(np.uint8))
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    for i, (mask, box, label) in enumerate(zip(masks, boxes, labels)):
        colour = PALETTE[i % len(PALETTE)]
        if box is not None:
            x0, x1 = sorted((box[0], box[2]))
            y0, y1 = sorted((box[1], box[3]))
            draw.rectangle((x0, y0, x1, y1), outline=colour, width=2)
        elif np.any(mask):
            rows, cols = np.nonzero(mask)
            x0, y0 = cols.min(), rows.min()
        else:
            continue
        if label:
            _, _, width, height = draw.textbbox((0, 0), label, font=font)
            x = min(max(float(x0), 0.0), max(image.width - width - 2, 0))
            y = float(y0) - height - 3 if y0 >= height + 3 else float(y0) + 2
            draw.rectangle((x, y, x + width + 2, y + height + 2), fill=colour)
            draw.text((x + 1, y), label, fill=(0, 0, 0), font=font)
    with _atomic(Path(path)) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
