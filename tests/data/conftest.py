"""Small synthetic images and masks for the data-reader tests (written to tmp_path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def ellipse(height: int, width: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


@pytest.fixture
def write_png(tmp_path):
    """write_png("images/a.png", array) -> absolute path; a bool array is saved as 0/255."""

    def write(relative: str, array: np.ndarray) -> Path:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = array.astype(np.uint8) * 255 if array.dtype == bool else array.astype(np.uint8)
        Image.fromarray(pixels).save(path)
        return path

    return write


@pytest.fixture
def scan(write_png):
    """A 64x48 (width x height) grey image with two targets: a liver-like ellipse on the
    viewer's left and a ring (whose centroid is outside it) on the right."""
    height, width = 48, 64
    liver = ellipse(height, width, 18, 20, 10, 8)
    ring = ellipse(height, width, 46, 26, 9, 9) & ~ellipse(height, width, 46, 26, 5, 5)
    image = (40 + 100 * liver + 150 * ring).astype(np.uint8)
    return {
        "image": write_png("images/scan.png", image),
        "liver": write_png("masks/liver.png", liver),
        "ring": write_png("masks/ring.png", ring),
        "liver_mask": liver,
        "ring_mask": ring,
    }
