"""Brain MRI demo "patients": the real MNI152 (ICBM 2009a symmetric) T1 template, augmented.

The template and its grey/white matter probability maps ship as files inside the nilearn
wheel (``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``);
they are found without importing nilearn and read with SimpleITK. Masks are derived once
(:func:`template_masks`):

* grey matter / white matter: probability > 0.5 and the larger of the two;
* brain: (gm + wm) > 0.2, closed and hole-filled (so it holds the ventricles and deep CSF),
  within the skull-stripped template;
* lateral ventricles: dark T1 voxels inside the brain that are neither grey nor white matter,
  in the central region above the third ventricle; the largest connected component on each
  side of the midline.

``grey matter``, ``white matter`` and ``lateral ventricles`` are disjoint and all lie inside
``brain``. Each seed (:func:`generate_brain`) applies a small random rotation, anisotropic
scaling and translation (image and label map resampled together), a smooth multiplicative
bias field, a gamma change, a global intensity scale and Rician noise.

Output arrays follow the CT phantom's conventions: ``(z, y, x)`` with identity direction in
LPS (column -> patient left, row -> posterior, slice -> superior). :func:`display_slice`
turns a slice into the picture a person expects: axial as stored (anterior up, patient right
on the image left), coronal and sagittal flipped vertically so superior is up (coronal:
patient right on the image left; sagittal: anterior on the image left).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ...imaging import MedicalImage
from ..catalogue import drawn_by

BRAIN_STRUCTURES = drawn_by("mni152_brain")  # the catalogue structures drawn here, in catalogue order
PLANES = ("axial", "coronal", "sagittal")
_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
# label map values (disjoint); "brain" is every non-zero label
_LABELS = {"grey matter": 1, "white matter": 2, "lateral ventricles": 3, "other brain": 4}
DEFAULT_SHAPE = (116, 136, 112)  # (z, y, x)
DEFAULT_SPACING = 1.5  # mm, isotropic
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


class TemplateNotFoundError(FileNotFoundError):
    """The nilearn wheel (which ships the MNI152 template files) is not installed."""


@dataclass(eq=False)
class BrainVolume:
    """An augmented T1 volume (float32, arbitrary units) with masks of ``BRAIN_STRUCTURES``."""

    image: np.ndarray  # float32 (z, y, x)
    masks: dict[str, np.ndarray]  # name -> bool (z, y, x)
    spacing: tuple[float, float, float]  # (x, y, z) mm
    origin: tuple[float, float, float]  # LPS mm of voxel (0, 0, 0)
    patient_id: str
    info: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)

    def to_medical_image(self):
        return MedicalImage(array=self.image, spacing=self.spacing, origin=self.origin, direction=_IDENTITY,
                            modality="MR", source=self.patient_id, source_format="mni152")


def template_paths() -> dict[str, Path]:
    """Paths of the T1, grey matter and white matter files inside the installed nilearn wheel."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise TemplateNotFoundError("the MNI152 brain template comes with nilearn: pip install nilearn==0.14.1")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    paths = {key: folder / name for key, name in _FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise TemplateNotFoundError(f"MNI152 template files missing from the nilearn install: {', '.join(missing)}")
    return paths


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def _index_coordinates(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS coordinates (mm) of voxel centres along each array axis; the template is axis-aligned."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if not np.allclose(np.abs(direction), np.eye(3)):
        raise ValueError("expected an axis-aligned template")
    size, spacing, origin = image.GetSize(), image.GetSpacing(), image.GetOrigin()
    x, y, z = (origin[i] + direction[i, i] * spacing[i] * np.arange(size[i]) for i in range(3))
    return z[:, None, None], y[None, :, None], x[None, None, :]


@lru_cache(maxsize=1)
def template_masks() -> tuple[sitk.Image, sitk.Image]:
    """The template T1 (float32, 0..255) and its label map (uint8, see ``_LABELS``), cached."""
    paths = template_paths()
    t1 = sitk.ReadImage(str(paths["t1"]), sitk.sitkFloat32)
    T = _array(t1)
    gm_p = _array(sitk.ReadImage(str(paths["gm"]), sitk.sitkFloat32)) / 255.0
    wm_p = _array(sitk.ReadImage(str(paths["wm"]), sitk.sitkFloat32)) / 255.0

    tissue = ((gm_p + wm_p) > 0.2).astype(np.uint8)
    closed = sitk.BinaryMorphologicalClosing(_like(tissue, t1), [3, 3, 3], sitk.sitkBall)
    filled = _array(sitk.BinaryFillhole(closed, fullyConnected=False)).astype(bool)
    # slice-wise hole filling as well: the ventricles reach the outside through the fourth ventricle
    for k in range(filled.shape[0]):
        plane = sitk.GetImageFromArray(filled[k].astype(np.uint8))
        filled[k] = _array(sitk.BinaryFillhole(plane)).astype(bool)
    brain = filled & (T > 0)

    gm = (gm_p > 0.5) & (gm_p >= wm_p) & brain
    wm = (wm_p > 0.5) & (wm_p > gm_p) & brain

    # lateral ventricles: dark, neither grey nor white matter, central, above the third ventricle
    z, y, x = _index_coordinates(t1)  # LPS: +x patient left, +y posterior, +z superior
    dark = T < 0.6 * float(np.median(T[gm_p > 0.8]))
    central = (np.abs(x) < 40) & (y > -35) & (y < 50) & (z > 0) & (z < 40)
    candidates = brain & dark & ~gm & ~wm & central
    ventricles = np.zeros_like(brain)
    for side in (x > 1.0, x < -1.0):
        part = _like((candidates & side).astype(np.uint8), t1)
        components = sitk.RelabelComponent(sitk.ConnectedComponent(part), sortByObjectSize=True)
        ventricles |= _array(components) == 1
    # smooth the outline a little, but stay out of grey and white matter
    ventricles = _array(sitk.BinaryMorphologicalClosing(_like(ventricles.astype(np.uint8), t1), [1, 1, 1])).astype(bool)
    ventricles &= brain & ~gm & ~wm

    labels = np.zeros(T.shape, dtype=np.uint8)
    labels[brain] = _LABELS["other brain"]
    labels[gm] = _LABELS["grey matter"]
    labels[wm] = _LABELS["white matter"]
    labels[ventricles] = _LABELS["lateral ventricles"]
    return t1, _like(labels, t1)


def _masks_from_labels(labels: np.ndarray) -> dict[str, np.ndarray]:
    """One mask per ``BRAIN_STRUCTURES`` name: "brain" is every label, the others their own value."""
    return {name: labels > 0 if name == "brain" else labels == _LABELS[name] for name in BRAIN_STRUCTURES}


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def generate_brain(
    seed: int | np.random.Generator = 0,
    patient_id: str | None = None,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: float = DEFAULT_SPACING,
    augment: bool = True,
) -> BrainVolume:
    """One augmented brain "patient" on an identity-direction grid centred on the brain.

    ``augment=False`` gives the template itself, resampled onto the grid."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if patient_id is None:
        patient_id = f"brain-{seed}" if not isinstance(seed, np.random.Generator) else "brain"
    t1, labels = template_masks()
    nz, ny, nx = (int(v) for v in shape)
    spacing3 = (float(spacing),) * 3

    # the brain's bounding-box centre in LPS, where the output grid is centred
    brain_idx = np.argwhere(_array(labels) > 0)
    centre_index = [float(v) for v in (brain_idx.min(0) + brain_idx.max(0))[::-1] / 2.0]
    centre = np.asarray(t1.TransformContinuousIndexToPhysicalPoint(centre_index))
    origin = centre - (np.array([nx, ny, nz]) - 1) / 2.0 * spacing
    reference = sitk.Image(nx, ny, nz, sitk.sitkFloat32)
    reference.SetSpacing(spacing3)
    reference.SetOrigin(tuple(float(v) for v in origin))
    reference.SetDirection(_IDENTITY)

    transform = sitk.AffineTransform(3)
    transform.SetCenter(tuple(float(v) for v in centre))
    params = {}
    if augment:
        angles = np.radians(rng.normal(0.0, [3.0, 3.0, 5.0]).clip(-9, 9))  # about x (pitch), y (roll), z (yaw)
        scales = rng.uniform(0.92, 1.08, 3)
        shift = rng.uniform(-6.0, 6.0, 3)
        transform.SetMatrix(tuple(float(v) for v in (_rotation(*angles) @ np.diag(scales)).ravel()))
        transform.SetTranslation(tuple(float(v) for v in shift))
        params = {"rotation_deg": [round(float(v), 2) for v in np.degrees(angles)],
                  "scale": [round(float(v), 3) for v in scales], "translation_mm": [round(float(v), 2) for v in shift]}

    image = _array(sitk.Resample(t1, reference, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    label_map = _array(sitk.Resample(labels, reference, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    image = np.clip(image, 0, None) / 255.0

    if augment:
        zz, yy, xx = (np.linspace(-1, 1, n, dtype=np.float32) for n in (nz, ny, nx))
        coords = (zz[:, None, None], yy[None, :, None], xx[None, None, :])
        bias = np.zeros((1, 1, 1), dtype=np.float32)
        strength = rng.uniform(0.05, 0.2)
        for _ in range(4):
            d = rng.normal(size=3)
            d /= np.linalg.norm(d)
            k = rng.uniform(0.5, 1.8)
            bias = bias + np.cos(k * sum(di * c for di, c in zip(d, coords)) + rng.uniform(0, 2 * math.pi)) * (strength / 2)
        gamma = float(rng.uniform(0.8, 1.25))
        gain = float(rng.uniform(600, 1400))
        sigma = float(rng.uniform(0.01, 0.04))
        image = image**gamma * np.exp(bias) * gain
        n1 = rng.standard_normal(image.shape, dtype=np.float32)
        n2 = rng.standard_normal(image.shape, dtype=np.float32)
        image = np.sqrt((image + sigma * gain * n1) ** 2 + (sigma * gain * n2) ** 2)  # Rician noise
        params.update(bias_strength=round(float(strength), 3), gamma=round(gamma, 3), gain=round(gain, 1),
                      noise=round(sigma, 4))
    else:
        image = image * 1000.0
    return BrainVolume(image.astype(np.float32), _masks_from_labels(label_map), spacing3,
                       tuple(float(v) for v in origin), patient_id, params)


# array axis of each plane for identity-direction volumes: axial -> z, coronal -> y, sagittal -> x
PLANE_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}


def display_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """Slice ``index`` of an identity-direction ``(z, y, x)`` volume as displayed (see module doc).

    Equals ``medisee.imaging.extract_slice(image, index, plane)``, flipped vertically for
    coronal and sagittal planes."""
    plane_array = np.take(volume, index, axis=PLANE_AXIS[plane])
    return plane_array[::-1] if plane != "axial" else plane_array


def select_slices(masks: dict[str, np.ndarray], rng: np.random.Generator,
                  counts: dict[str, int] | None = None, min_fraction: float = 0.3,
                  focus: str | None = "lateral ventricles", min_area: int = 25) -> list[tuple[str, int]]:
    """Slices to show, per plane ``counts[plane]`` of them (default axial 6, coronal 4, sagittal 4).

    Half are spread (with jitter) over the slices where ``focus`` has at least ``min_area``
    pixels, the rest over all slices where the brain covers at least ``min_fraction`` of its
    largest cross-section, so some lack the ventricles (high and low axial, lateral sagittal,
    frontal and occipital coronal slices). Duplicates are dropped."""
    counts = counts or {"axial": 6, "coronal": 4, "sagittal": 4}
    chosen: list[tuple[str, int]] = []
    for plane, n in counts.items():
        if n <= 0:
            continue
        axis = PLANE_AXIS[plane]
        other = tuple(a for a in range(3) if a != axis)
        area = masks["brain"].sum(axis=other)
        usable = area >= min_fraction * area.max()
        ranges = []
        if focus is not None and n >= 2:
            focused = usable & (masks[focus].sum(axis=other) >= min_area)
            if focused.any():
                ranges.append((np.flatnonzero(focused), n // 2))
        ranges.append((np.flatnonzero(usable), n - sum(k for _, k in ranges)))
        picks: set[int] = set()
        for candidates, k in ranges:
            if candidates.size == 0 or k <= 0:
                continue
            lo, hi = int(candidates.min()), int(candidates.max())
            step = (hi - lo) / k
            picks |= {int(np.clip(round(lo + step * (i + 0.5) + rng.uniform(-0.3, 0.3) * step), lo, hi))
                      for i in range(k)}
        chosen += [(plane, index) for index in sorted(picks)]
    return chosen
