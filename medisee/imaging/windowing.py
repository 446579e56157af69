"""Intensity mapping to uint8, the input range vision models and PNG viewers expect."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .image import MedicalImage

# (level, width) in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (40.0, 400.0),
    "soft-tissue": (50.0, 350.0),
    "liver": (60.0, 160.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "mediastinum": (50.0, 350.0),
}
DEFAULT_CT_WINDOW = "abdomen"


def _scale(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] linearly to [0, 255], clipping outside; float32 keeps big volumes affordable."""
    scaled = (np.asarray(array, dtype=np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)


def window_ct(array: np.ndarray, level: float, width: float) -> np.ndarray:
    """Linear CT window: ``level - width/2`` maps to 0 and ``level + width/2`` to 255."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return _scale(array, level - width / 2, level + width / 2)


def normalize_percentile(array: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Stretch the [lower, upper] percentile range to [0, 255], for MR and unknown modalities.

    Percentiles are taken over the whole array, so all slices of a volume share
    one mapping. If the percentiles coincide (a mostly constant image) the full
    min..max range is used instead; a constant image gives zeros.
    """
    if array.size == 0:
        return np.zeros(array.shape, dtype=np.uint8)
    low, high = np.percentile(array, [lower, upper])
    if high <= low:
        low, high = float(np.min(array)), float(np.max(array))
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return _scale(array, low, high)


def parse_window(spec: str | Sequence[float] | None) -> str | tuple[float, float] | None:
    """A window as people give it: a preset name (any case), ``"LEVEL,WIDTH"`` or a (level,
    width) pair; None stays None. ValueError says what is wrong."""
    if spec is None:
        return spec
    if isinstance(spec, str) and "," not in spec:
        if spec.strip().lower() not in CT_WINDOWS:
            raise ValueError(f"unknown window {spec!r}; presets: {', '.join(CT_WINDOWS)} (or LEVEL,WIDTH)")
        return spec.strip().lower()
    try:
        values = [float(v) for v in (spec.split(",") if isinstance(spec, str) else spec)]
    except (TypeError, ValueError):
        values = []
    if len(values) != 2 or not all(np.isfinite(values)) or values[1] <= 0:
        raise ValueError(f"window must be a preset name or LEVEL,WIDTH (finite numbers, WIDTH > 0), got {spec!r}")
    return values[0], values[1]


def resolve_window(window: str | tuple[float, float]) -> tuple[float, float]:
    """``(level, width)`` for a preset name or an explicit pair."""
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            raise ValueError(
                f"unknown CT window {window!r}: expected one of {', '.join(CT_WINDOWS)} "
                "or a (level, width) pair"
            )
        return CT_WINDOWS[window]
    level, width = window
    return float(level), float(width)


def to_uint8(image: MedicalImage, window: str | tuple[float, float] | None = None) -> np.ndarray:
    """The image's pixels as uint8, same shape, choosing the mapping by content.

    RGB uint8 is returned unchanged; an explicit ``window`` (preset name or
    ``(level, width)``) is applied as a CT window; CT defaults to the
    "abdomen" window; other 8-bit grayscale is returned unchanged; anything
    else is percentile-normalised over the whole image. NIfTI and NRRD carry no
    modality, so an image whose values look like Hounsfield units (air near
    -1000) is treated as CT: the model was trained on windowed CT.
    """
    array = image.array
    if image.is_rgb and array.dtype == np.uint8:
        return array
    if window is not None:
        return window_ct(array, *resolve_window(window))
    if (image.modality or "").upper() == "CT" or (image.modality is None and looks_like_hounsfield(array)):
        return window_ct(array, *CT_WINDOWS[DEFAULT_CT_WINDOW])
    if array.dtype == np.uint8:
        return array
    return normalize_percentile(array)


def looks_like_hounsfield(array: np.ndarray) -> bool:
    """Values reaching air (-1000 HU, or a scanner's -2048/-3024 padding) and no higher than
    dense bone or metal: a CT in Hounsfield units. MR and 8-bit images never go that far below zero."""
    if array.size == 0 or array.dtype == np.uint8 or not np.issubdtype(array.dtype, np.number):
        return False
    low, high = float(np.min(array)), float(np.max(array))
    return -3100.0 <= low <= -900.0 and 0.0 < high <= 5000.0
