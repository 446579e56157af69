"""Shared synthetic data for the imaging tests (all generated, nothing downloaded)."""

import numpy as np
import pytest

from medisee.imaging import MedicalImage

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# Sagittal acquisition in LPS: rows run anterior->posterior, columns superior->inferior,
# slices right->left (the slice normal is row x column).
SAGITTAL = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


@pytest.fixture
def ct_volume() -> np.ndarray:
    """A (z, y, x) = (5, 6, 7) int16 HU volume; all sizes differ so axis mix-ups show."""
    return np.random.default_rng(0).integers(-1024, 2000, size=(5, 6, 7)).astype(np.int16)


@pytest.fixture(params=["identity", "sagittal"])
def volume_image(request, ct_volume) -> MedicalImage:
    direction = IDENTITY if request.param == "identity" else SAGITTAL
    return MedicalImage(ct_volume, (0.7, 0.8, 2.5), (10.5, -20.25, 30.125), direction, modality="CT")


@pytest.fixture
def sagittal_direction() -> tuple[float, ...]:
    return SAGITTAL
