"""Label volumes as files: the NIfTI the server answers with, and the one a user submits.

SimpleITK is imported lazily: 3D Slicer ships it, and nothing else here needs it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import ServerFailed
from .geometry import Geometry


def read_label_bytes(data: bytes, suffix: str = ".nii.gz") -> tuple[np.ndarray, Geometry]:
    """The label array (numpy (k, j, i) order) and its geometry from a label file's bytes."""
    import SimpleITK as sitk  # Slicer ships it; imported when an answer arrives, not when the module loads

    handle, path = tempfile.mkstemp(prefix="medisee-answer-", suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        image = sitk.ReadImage(path)
    except RuntimeError as err:
        raise ServerFailed(f"its label volume cannot be read ({str(err).strip().splitlines()[-1]})") from None
    finally:
        os.unlink(path)
    array = sitk.GetArrayFromImage(image)
    if array.ndim == 2:
        array = array[np.newaxis]
    geometry = Geometry(tuple(array.shape), *_padded(image.GetSpacing(), image.GetOrigin(), image.GetDirection()))
    return array, geometry


def write_label(labels: np.ndarray, geometry: Geometry, path: str | Path) -> Path:
    """Write ``labels`` (numpy order, the geometry's shape) as a compressed NIfTI aligned with ``geometry``."""
    import SimpleITK as sitk  # Slicer ships it; imported when an answer arrives, not when the module loads

    labels = np.asarray(labels)
    if labels.shape != tuple(geometry.shape):
        raise ValueError(f"label shape {labels.shape} differs from the volume's {tuple(geometry.shape)}")
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    image = sitk.GetImageFromArray(labels.astype(dtype))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    sitk.WriteImage(image, str(path), useCompression=True)
    return Path(path)


def _padded(spacing: tuple, origin: tuple, direction: tuple) -> tuple[tuple, tuple, tuple]:
    """2D label geometry as a one-slice 3D geometry."""
    if len(spacing) == 3:
        return tuple(spacing), tuple(origin), tuple(direction)
    d = direction
    return (*spacing, 1.0), (*origin, 0.0), (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
