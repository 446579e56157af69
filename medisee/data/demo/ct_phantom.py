"""Synthetic abdominal/thoracic CT phantoms in Hounsfield units, with masks of ten structures.

Each seed gives a different "patient": body habitus, organ sizes and positions, contrast
phase, noise, shading and, now and then, a missing organ (nephrectomy, splenectomy). The
anatomy is built in millimetres, so a different grid only changes the field of view.

Conventions (those of :class:`medisee.imaging.MedicalImage` with identity direction, DICOM
LPS): arrays are ``(z, y, x)``; column index increases toward the patient's left (image
left = patient right, the radiological display), row index toward posterior (anterior at
the top) and slice index toward superior: slice 0 is the most inferior (feet) slice, the
last one the most superior. The default 40 slices of 5 mm cover 200 mm from the lower
kidneys to the upper thorax; with ``origin`` the physical LPS position of voxel
``(0, 0, 0)``, ``write_dicom_series(volume, dir, spacing, origin)`` and NIfTI written from
:meth:`Phantom.to_medical_image` read back with the same geometry.

Layering (each structure only where it belongs): a dome-shaped diaphragm separates the
lungs and heart (above) from liver, spleen, stomach and kidneys (below); aorta and vertebra
run through every slice (the aorta ends at its bifurcation, which may fall in the lowest
slices). Organ masks never overlap: they are resolved in :data:`PRIORITY` order with a one
voxel gap, and all lie inside the body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...imaging import MedicalImage
from ..catalogue import drawn_by

# the catalogue structures this generator draws (medisee/data/catalogue.json), in catalogue order
CT_STRUCTURES = drawn_by("ct_phantom")
# Higher priority first: a structure never takes voxels (or the one-voxel gap) of an earlier one.
PRIORITY = (
    "vertebra", "aorta", "heart", "left kidney", "right kidney",
    "left lung", "right lung", "spleen", "stomach", "liver",
)  # fmt: skip
PHASES = ("non-contrast", "arterial", "portal venous")
_PHASE_PROBABILITIES = (0.4, 0.2, 0.4)
# Nominal tissue densities (HU) per contrast phase; each patient jitters them a little.
NOMINAL_HU: dict[str, dict[str, float]] = {
    "non-contrast": {
        "liver": 60, "spleen": 50, "kidney cortex": 30, "kidney medulla": 28, "aorta": 40, "blood": 40,
        "myocardium": 45, "stomach wall": 30, "lung": -850, "cortical bone": 850, "cancellous bone": 250,
    },
    "arterial": {
        "liver": 75, "spleen": 110, "kidney cortex": 170, "kidney medulla": 80, "aorta": 250, "blood": 230,
        "myocardium": 90, "stomach wall": 60, "lung": -850, "cortical bone": 850, "cancellous bone": 250,
    },
    "portal venous": {
        "liver": 110, "spleen": 115, "kidney cortex": 160, "kidney medulla": 150, "aorta": 160, "blood": 150,
        "myocardium": 80, "stomach wall": 55, "lung": -850, "cortical bone": 850, "cancellous bone": 250,
    },
}  # fmt: skip
_AIR, _FAT, _MUSCLE, _DISC, _FLUID, _GAS = -1000.0, -100.0, 50.0, 80.0, 10.0, -900.0
DEFAULT_SHAPE = (40, 160, 160)  # (z, y, x)
DEFAULT_SPACING = (2.5, 2.5, 5.0)  # (x, y, z) mm


@dataclass(eq=False)
class Phantom:
    """A CT volume in HU with one boolean mask per structure (``CT_STRUCTURES``, all keys present;
    a structure outside the volume or surgically removed has an all-False mask)."""

    volume_hu: np.ndarray  # int16 (z, y, x)
    masks: dict[str, np.ndarray]  # name -> bool (z, y, x)
    spacing: tuple[float, float, float]  # (x, y, z) mm
    patient_id: str
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)  # LPS mm of voxel (0, 0, 0)
    body: np.ndarray | None = None  # bool (z, y, x): inside the skin
    info: dict = field(default_factory=dict)  # phase, noise_sigma, missing, hu, ...

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.volume_hu.shape)

    def present(self, index: int, min_area: int = 1) -> list[str]:
        """Structures with at least ``min_area`` pixels on axial slice ``index``."""
        return [name for name, mask in self.masks.items() if int(mask[index].sum()) >= min_area]

    def to_medical_image(self):
        return MedicalImage(
            array=self.volume_hu, spacing=self.spacing, origin=self.origin,
            direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), modality="CT",
            source=self.patient_id, source_format="phantom",
        )


# --------------------------------------------------------------------------- helpers


class _Grid:
    """Voxel-centre coordinates in mm: X (+ patient left), Y (+ posterior), T (+ superior, 0 = slice 0)."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]):
        nz, ny, nx = shape
        sx, sy, sz = spacing
        self.shape = shape
        self.spacing = spacing
        self.X = (np.arange(nx) - (nx - 1) / 2) * sx
        self.Y = (np.arange(ny) - (ny - 1) / 2) * sy
        self.T = np.arange(nz) * float(sz)
        self.x = self.X[None, None, :]
        self.y = self.Y[None, :, None]
        self.t = self.T[:, None, None]

    def box(self, center, extent):
        """Index slices of the box ``center +- extent`` and its broadcastable coordinates."""

        def span(axis: np.ndarray, c: float, e: float) -> slice:
            return slice(int(np.searchsorted(axis, c - e, "left")), int(np.searchsorted(axis, c + e, "right")))

        (cx, cy, ct), (ex, ey, et) = center, extent
        sz, sy, sx = span(self.T, ct, et), span(self.Y, cy, ey), span(self.X, cx, ex)
        return (sz, sy, sx), self.X[sx][None, None, :], self.Y[sy][None, :, None], self.T[sz][:, None, None]

    def zeros(self, dtype=bool) -> np.ndarray:
        return np.zeros(self.shape, dtype=dtype)


def _smooth_noise(rng: np.random.Generator, coords, terms: int, freq: tuple[float, float]) -> np.ndarray:
    """A smooth random field (sum of random plane waves), roughly in [-1, 1]."""
    out = 0.0
    dims = len(coords)
    for _ in range(terms):
        direction = rng.normal(size=dims)
        direction /= np.linalg.norm(direction) + 1e-12
        k = rng.uniform(*freq)
        phase = rng.uniform(0, 2 * math.pi)
        amp = rng.uniform(0.5, 1.0) * math.sqrt(2.0 / terms)
        arg = sum(k * d * c for d, c in zip(direction, coords))
        out = out + amp * np.cos(arg + phase)
    return out


def _blob(grid: _Grid, rng: np.random.Generator, center, radii, angle: float = 0.0,
          shear=(0.0, 0.0), roughness: float = 0.10, margin: float = 1.3):
    """Normalised radius of a deformed, rotated (in-plane, radians) and sheared ellipsoid on its box.

    ``shear`` moves the centre by ``(dx/dt, dy/dt)`` mm per mm along z. Returns ``(slices, rho)``
    with ``rho <= 1`` inside; local ``u, v, w`` are also returned for sub-structures."""
    cx, cy, ct = center
    rx, ry, rz = radii
    reach = max(rx, ry) * margin
    reach_t = rz * margin
    shift = reach_t * max(abs(shear[0]), abs(shear[1]))
    sl, x, y, t = grid.box(center, (reach + shift, reach + shift, reach_t))
    dt = t - ct
    dx = x - cx - shear[0] * dt
    dy = y - cy - shear[1] * dt
    c, s = math.cos(angle), math.sin(angle)
    u = (c * dx + s * dy) / rx
    v = (-s * dx + c * dy) / ry
    w = dt / rz
    rho = np.sqrt(u * u + v * v + w * w)
    if roughness:
        rho = rho * (1.0 + roughness * _smooth_noise(rng, (u, v, w), 5, (1.2, 2.8)))
    return sl, rho


def _coarse_noise(grid: _Grid, rng: np.random.Generator, period: float, terms: int) -> np.ndarray:
    """A smooth field over the whole grid (waves of about ``period`` mm), computed at half in-plane
    resolution (it is smooth anyway)."""
    f = np.float32(2 * math.pi / period)
    X, Y, T = (a.astype(np.float32) * f for a in (grid.X[::2], grid.Y[::2], grid.T))
    field = _smooth_noise(rng, (X[None, None, :], Y[None, :, None], T[:, None, None]), terms, (0.6, 1.6))
    # back to full resolution by linear interpolation along y, then x
    ny, nx = grid.shape[1:]
    field = _upsample2(np.asarray(field, dtype=np.float32), 1, ny)
    return _upsample2(field, 2, nx)


def _upsample2(a: np.ndarray, axis: int, n: int) -> np.ndarray:
    """Double ``a`` along ``axis`` by linear interpolation, cut to ``n`` samples."""
    nxt = np.concatenate([np.take(a, range(1, a.shape[axis]), axis), np.take(a, [-1], axis)], axis=axis)
    mid = 0.5 * (a + nxt)
    out = np.stack([a, mid], axis=axis + 1).reshape(*a.shape[:axis], 2 * a.shape[axis], *a.shape[axis + 1:])
    return np.take(out, range(n), axis)


def _place(grid: _Grid, sl, local: np.ndarray) -> np.ndarray:
    full = grid.zeros()
    full[sl] = local
    return full


def _dilate(mask: np.ndarray, n: int = 1) -> np.ndarray:
    """In-plane (y, x) 4-neighbour dilation, ``n`` times."""
    out = mask
    for _ in range(n):
        grown = out.copy()
        grown[..., 1:, :] |= out[..., :-1, :]
        grown[..., :-1, :] |= out[..., 1:, :]
        grown[..., :, 1:] |= out[..., :, :-1]
        grown[..., :, :-1] |= out[..., :, 1:]
        out = grown
    return out


def _erode(mask: np.ndarray, n: int = 1) -> np.ndarray:
    return ~_dilate(~mask, n)


def _blur_xy(volume: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 in-plane smoothing (partial volume), edges replicated."""
    out = volume.copy()
    for axis in (1, 2):
        padded = np.concatenate([np.take(out, [0], axis), out, np.take(out, [-1], axis)], axis=axis)
        n = out.shape[axis]
        out = 0.25 * np.take(padded, range(0, n), axis) + 0.5 * out + 0.25 * np.take(padded, range(2, n + 2), axis)
    return out


# --------------------------------------------------------------------------- generator


@dataclass
class _Patient:
    """One patient's random make-up, drawn before anything else."""

    s: float  # body habitus
    so: float  # organ size
    dz: float  # craniocaudal shift of the anatomy in the field of view
    ox: float  # patient position in the field of view
    oy: float
    fat: float  # subcutaneous fat (mm)
    wall: float  # abdominal / chest wall muscle (mm)
    phase: str
    noise_sigma: float
    missing: list[str]  # surgically removed organs
    hu: dict[str, float]  # this patient's tissue densities


@dataclass
class _Trunk:
    """The frame every organ is placed in: diaphragm, body layers and the spine's position."""

    BY: float  # body half-axes in the abdomen (mm)
    CX: float  # the cavity's half-axes (mm)
    CY: float
    h_r: float  # right and left diaphragm dome heights (mm)
    h_l: float
    Dc: float  # the diaphragm at the midline, where the heart rests
    thor: np.ndarray  # (z, 1, 1): 0 in the abdomen, 1 in the thorax
    below: np.ndarray  # abdominal side of the diaphragm
    above: np.ndarray  # thoracic side
    bx: np.ndarray  # body half-axes per slice
    by: np.ndarray
    body: np.ndarray  # inside the skin
    inner_fat: np.ndarray  # inside the subcutaneous fat
    cavity_ellipse: np.ndarray  # inside the muscle wall
    cavity: np.ndarray  # the cavity without the paraspinal muscles
    paraspinal: np.ndarray
    psoas: np.ndarray
    Yv: np.ndarray  # (z, 1, 1) vertebral body centre
    rxv: float  # vertebral body half-axes
    ryv: float
    canal_y: np.ndarray  # spinal canal centre


@dataclass
class _Midline:
    """The spine and the great vessels (vertebra and aorta are labelled, the rest shape the organs)."""

    vertebra: np.ndarray
    disc: np.ndarray
    canal: np.ndarray
    aorta: np.ndarray
    iliac: np.ndarray
    ivc: np.ndarray
    esophagus: np.ndarray
    t_bif: float  # aortic bifurcation (mm)


@dataclass
class _Organs:
    """The labelled organs before overlaps are resolved, with the parts inside them."""

    raw: dict[str, np.ndarray]  # heart, kidneys, lungs, spleen, stomach, liver
    chambers: np.ndarray  # blood inside the heart
    medulla: np.ndarray  # inner kidney
    hilum: np.ndarray  # renal sinus fat


def generate_phantom(
    seed: int | np.random.Generator = 0,
    patient_id: str | None = None,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
) -> Phantom:
    """One synthetic CT patient; the same seed always gives the same phantom (each step below
    draws from ``rng`` in turn, so their order is part of what a seed means)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if patient_id is None:
        patient_id = f"phantom-{seed}" if not isinstance(seed, np.random.Generator) else "phantom"
    grid = _Grid(tuple(int(v) for v in shape), tuple(float(v) for v in spacing))
    patient = _draw_patient(rng)
    trunk = _trunk(grid, rng, patient)
    midline = _midline(grid, rng, patient, trunk)
    organs = _organs(grid, rng, patient, trunk)
    masks, taken = _resolve(grid, trunk, midline, organs)
    vol, texture = _background(grid, rng, patient, trunk, organs, masks, taken)
    content = _organ_intensities(grid, rng, patient, midline, organs, masks, vol, texture)
    volume = _finish(grid, rng, vol, patient.noise_sigma)
    origin = (float(grid.X[0]), float(grid.Y[0]), 0.0)
    info = {
        "phase": patient.phase, "noise_sigma": round(patient.noise_sigma, 2), "missing": patient.missing,
        "hu": {k: round(v, 1) for k, v in patient.hu.items()}, "body_scale": round(float(patient.s), 3),
        "organ_scale": round(float(patient.so), 3), "diaphragm_mm": round(trunk.Dc, 1), "stomach_content": content,
        "aortic_bifurcation_mm": round(float(midline.t_bif), 1),
    }
    return Phantom(volume, masks, grid.spacing, patient_id, origin, trunk.body, info)


def _draw_patient(rng: np.random.Generator) -> _Patient:
    s = rng.uniform(0.86, 1.06)
    so = s * rng.uniform(0.93, 1.07)
    dz = rng.normal(0.0, 8.0)
    ox, oy = rng.normal(0.0, 4.0, 2)
    fat = rng.uniform(6.0, 28.0)
    wall = rng.uniform(7.0, 11.0)
    phase = str(rng.choice(PHASES, p=_PHASE_PROBABILITIES))
    noise_sigma = float(rng.uniform(10.0, 25.0))
    missing: list[str] = []
    if rng.random() < 0.10:
        missing.append(str(rng.choice(["left kidney", "right kidney"])))
    if rng.random() < 0.05:
        missing.append("spleen")
    hu = {k: float(v + rng.normal(0, 15 if k in ("aorta", "blood") and phase != "non-contrast" else 5))
          for k, v in NOMINAL_HU[phase].items()}
    hu["cortical bone"] = float(rng.uniform(700, 1000))
    hu["cancellous bone"] = float(rng.uniform(180, 300))
    return _Patient(s, so, dz, ox, oy, fat, wall, phase, noise_sigma, missing, hu)


def _trunk(grid: _Grid, rng: np.random.Generator, p: _Patient) -> _Trunk:
    x, y, t = grid.x, grid.y, grid.t
    s, so, ox, oy, fat, wall = p.s, p.so, p.ox, p.oy, p.fat, p.wall

    # ---- diaphragm: two domes (right higher), lower posteriorly and laterally
    BX, BY = 152.0 * s, 108.0 * s
    CX, CY = BX - fat - wall, BY - fat - wall
    h_r = 160.0 + p.dz + rng.normal(0, 4)
    h_l = h_r - rng.uniform(4, 14)
    xy_x, xy_y = grid.X[None, :], grid.Y[:, None]

    def dome(h: float, xc: float) -> np.ndarray:
        post = np.clip(xy_y - oy, 0, None) / CY
        ant = np.clip(oy - xy_y, 0, None) / CY
        return h - 32 * ((xy_x - xc) / (0.5 * CX)) ** 2 - 45 * post**2 - 15 * ant**2

    D = np.maximum(dome(h_r, ox - 0.45 * CX), dome(h_l, ox + 0.45 * CX))
    D = np.maximum(D, max(h_r, h_l) - 58)[None]  # (1, y, x)
    Dc = float(max(h_r - 32 * 0.81, h_l - 32 * 0.81))
    thor = 1.0 / (1.0 + np.exp(-(t - Dc) / 12.0))

    # ---- body outline and layers
    theta = np.arctan2(y - oy, x - ox)
    deform = 0.0
    for k in (2, 3, 4):
        deform = deform + rng.uniform(0.01, 0.035) * np.cos(k * theta + rng.uniform(0, 2 * math.pi)
                                                             + rng.normal(0, 0.004) * t)
    bx = BX * (1 + 0.03 * thor)
    by = BY * (1 + 0.08 * thor)

    def radial(a, b_ant, b_post) -> np.ndarray:
        b = np.where(y > oy, b_post, b_ant)
        return np.sqrt(((x - ox) / a) ** 2 + ((y - oy) / b) ** 2) / (1 + deform)

    body = radial(bx, by, 0.9 * by) <= 1
    inner_fat = radial(bx - fat, by - fat, 0.9 * by - 0.7 * fat) <= 1
    cavity_ellipse = radial(bx - fat - wall, by - fat - wall, 0.9 * by - 0.7 * fat - wall) <= 1

    # ---- spine geometry (moves posteriorly in the thorax)
    Yv = oy + BY * (0.06 + 0.10 * thor)
    rxv, ryv = 21.0 * so, 16.0 * so
    canal_y = Yv + ryv + 9.0 * so
    paraspinal = inner_fat & (
        ((np.abs(x - ox) - 23 * so) / (21 * so)) ** 2 + ((y - canal_y - 16 * so) / (22 * so)) ** 2 <= 1
    )
    psoas_r = np.clip(8 + 0.12 * (Dc - 40 - t), 0, 22) * so
    psoas = ((np.abs(x - ox) - (24 * so + 0.8 * psoas_r)) ** 2 + (y - Yv - 2) ** 2 < psoas_r**2) & (psoas_r > 0)
    cavity = cavity_ellipse & ~paraspinal & body
    return _Trunk(BY, CX, CY, h_r, h_l, Dc, thor, t < D - 3, t > D + 2, bx, by, body, inner_fat, cavity_ellipse,
                  cavity, paraspinal, psoas, Yv, rxv, ryv, canal_y)


def _midline(grid: _Grid, rng: np.random.Generator, p: _Patient, trunk: _Trunk) -> _Midline:
    """Vertebra, disc and canal; aorta, iliac arteries, inferior vena cava and oesophagus."""
    x, y, t = grid.x, grid.y, grid.t
    so, ox, thor, Yv, ryv, canal_y = p.so, p.ox, trunk.thor, trunk.Yv, trunk.ryv, trunk.canal_y

    # vertebra: body (cortical ring, cancellous core) except at discs, plus the posterior arch
    period = rng.uniform(30, 35) * so
    disc_level = ((t - rng.uniform(0, period)) % period) < 7.0
    vbody = (((x - ox) / trunk.rxv) ** 2 + ((y - Yv) / ryv) ** 2) <= 1
    canal_r2 = (x - ox) ** 2 + ((y - canal_y) / 0.9) ** 2
    canal = canal_r2 <= (8.5 * so) ** 2
    arch = (canal_r2 <= (14.5 * so) ** 2) & ~canal & (y >= canal_y - 7 * so)
    spinous = (np.abs(x - ox) <= 3 * so) & (y >= canal_y + 10 * so) & (y <= canal_y + 32 * so)
    transverse = (np.abs(np.abs(x - ox) - 22 * so) <= 9 * so) & (np.abs(y - canal_y + 3 * so) <= 3 * so)
    vertebra = ((vbody & ~disc_level) | arch | spinous | transverse) & trunk.inner_fat
    disc = vbody & disc_level

    # vessels: aorta (ends at the bifurcation), iliac arteries below it, inferior vena cava
    t_bif = rng.uniform(-25, 20) + p.dz
    ra = rng.uniform(0.9, 1.15) * (11.0 + 2.5 * thor) * so
    xa = ox + so * (12 + 19 * thor)
    ya = (1 - thor) * (Yv - ryv - ra - 3) + thor * (Yv - 16 * so)
    aorta = ((x - xa) ** 2 + (y - ya) ** 2 <= ra**2) & (t >= t_bif)
    spread = np.clip(t_bif - t, 0, None) * 0.45
    iliac = (((np.abs(x - xa) - 10 - spread) ** 2 + (y - ya) ** 2) <= (6.5 * so) ** 2) & (t < t_bif)
    ivc = ((((x - (ox - 21 * so)) / (13 * so)) ** 2 + ((y - (Yv - ryv - 13 * so)) / (9 * so)) ** 2) <= 1) & (t < trunk.h_r - 6)
    esophagus = (((x - (ox + 5 * so)) ** 2 + (y - (Yv - ryv - 10 * so)) ** 2) <= (7 * so) ** 2) & (t > trunk.Dc - 12)
    return _Midline(vertebra, disc, canal, aorta, iliac, ivc, esophagus, t_bif)


def _organs(grid: _Grid, rng: np.random.Generator, p: _Patient, trunk: _Trunk) -> _Organs:
    """Heart, kidneys, lungs, spleen, stomach and liver, drawn in this order."""
    x, y, t = grid.x, grid.y, grid.t
    so, ox, oy, CX, CY, Dc = p.so, p.ox, p.oy, trunk.CX, trunk.CY, trunk.Dc
    below, above, cavity, h_l = trunk.below, trunk.above, trunk.cavity, trunk.h_l
    heart_sl, heart_rho = _blob(grid, rng, (ox + 24 * so, oy - 0.40 * CY, Dc + 52 * so), (62 * so, 47 * so, 56 * so),
                                angle=-0.5, roughness=0.06)
    heart = _place(grid, heart_sl, heart_rho <= 1) & above & cavity
    chambers = _place(grid, heart_sl, heart_rho <= 0.7) & heart
    kidneys, medulla, hilum = _kidneys(grid, rng, p, trunk)

    # lungs: thoracic cavity above the diaphragm, either side of the mediastinum
    m_half = 12 * p.s + 5 * _smooth_noise(rng, (y / 40.0, t / 60.0), 3, (0.8, 1.6))
    thoracic = cavity & above & (y > oy - CY * 1.2)
    lungs = {
        "left lung": thoracic & (x - ox > m_half),
        "right lung": thoracic & (x - ox < -m_half),
    }

    sp_c = (ox + 0.72 * CX, oy + 0.42 * CY, h_l - 42 * so)
    sp_sl, sp_rho = _blob(grid, rng, sp_c, (20 * so, 48 * so, 45 * so), angle=math.radians(45), roughness=0.08)
    hc = (sp_c[0] - 0.95 * 20 * so * 0.707, sp_c[1] - 0.95 * 20 * so * 0.707, sp_c[2])
    hsl, hrho = _blob(grid, rng, hc, (14 * so, 30 * so, 30 * so), angle=math.radians(45), roughness=0.0)
    spleen = _place(grid, sp_sl, sp_rho <= 1) & ~_place(grid, hsl, hrho <= 1) & below & cavity
    if "spleen" in p.missing:
        spleen[:] = False

    st_sl, st_rho = _blob(grid, rng, (ox + 0.38 * CX, oy - 0.1 * CY, h_l - 40 * so), (0.33 * CX, 30 * so, 40 * so),
                          angle=math.radians(25), roughness=0.10)
    an_sl, an_rho = _blob(grid, rng, (ox + 0.05 * CX, oy - 0.55 * CY, h_l - 78 * so), (30 * so, 18 * so, 20 * so),
                          angle=math.radians(-10), roughness=0.10)
    stomach = (_place(grid, st_sl, st_rho <= 1) | _place(grid, an_sl, an_rho <= 1)) & below & cavity

    rl_sl, rl_rho = _blob(grid, rng, (ox - 0.42 * CX, oy - 0.02 * CY, trunk.h_r - 55 * so), (0.62 * CX, 0.9 * CY, 70 * so),
                          roughness=0.08)
    ll_sl, ll_rho = _blob(grid, rng, (ox + 0.1 * CX, oy - 0.55 * CY, trunk.h_r - 30 * so), (0.45 * CX, 0.35 * CY, 35 * so),
                          angle=math.radians(-8), roughness=0.08)
    liver = (_place(grid, rl_sl, rl_rho <= 1) | _place(grid, ll_sl, ll_rho <= 1)) & below & cavity
    raw = {"heart": heart, **kidneys, **lungs, "spleen": spleen, "stomach": stomach, "liver": liver}
    return _Organs(raw, chambers, medulla, hilum)


def _kidneys(grid: _Grid, rng: np.random.Generator, p: _Patient,
             trunk: _Trunk) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Both kidneys (sinus cut out, beside the psoas), their medulla and their hilum."""
    so, ox, oy = p.so, p.ox, p.oy
    kidneys, medulla, hilum = {}, grid.zeros(), grid.zeros()
    for name, side, tc, a in (("left kidney", 1, 62.0, math.radians(30)), ("right kidney", -1, 50.0, math.radians(150))):
        grow = 1.1 if any(m.endswith("kidney") and m != name for m in p.missing) else 1.0  # compensatory hypertrophy
        r = np.array([20.0, 30.0, 55.0]) * so * grow * rng.uniform(0.92, 1.08)
        center = (ox + side * 62 * so + rng.normal(0, 3), oy + trunk.BY * 0.06 + 10 * so + rng.normal(0, 3),
                  tc + p.dz + rng.normal(0, 5))
        shear = (-0.2 * side, 0.1)
        sl, rho = _blob(grid, rng, center, r, angle=a, shear=shear, roughness=0.07)
        cu = (math.cos(a), math.sin(a))
        hc = (center[0] - 0.95 * r[0] * cu[0], center[1] - 0.95 * r[0] * cu[1], center[2])
        hsl, hrho = _blob(grid, rng, hc, (10 * so, 13 * so, 22 * so), angle=a, shear=shear, roughness=0.0)
        sinus = _place(grid, hsl, hrho <= 1)
        mask = _place(grid, sl, rho <= 1) & ~sinus & trunk.below & trunk.cavity & ~trunk.psoas
        if name in p.missing:
            mask[:] = False
        kidneys[name] = mask
        medulla |= _place(grid, sl, rho <= 0.62) & mask
        hilum |= sinus & _dilate(mask, 2)
    return kidneys, medulla, hilum


def _resolve(grid: _Grid, trunk: _Trunk, midline: _Midline,
             organs: _Organs) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Overlaps resolved in :data:`PRIORITY` order, with a one-voxel gap, all inside the body;
    the masks (in ``CT_STRUCTURES`` order) and every voxel they take."""
    raw = {"vertebra": midline.vertebra, "aorta": midline.aorta, **organs.raw}
    unlabelled_solid = midline.ivc | midline.esophagus | trunk.psoas | midline.iliac | midline.disc | midline.canal
    taken = grid.zeros()
    masks: dict[str, np.ndarray] = {}
    for name in PRIORITY:
        mask = raw[name] & trunk.body
        if name not in ("vertebra",):
            mask &= ~_dilate(taken, 1) & ~(_dilate(unlabelled_solid, 1) if name != "aorta" else midline.disc)
        masks[name] = mask
        taken |= mask
    return {name: masks[name] for name in CT_STRUCTURES}, taken


def _background(grid: _Grid, rng: np.random.Generator, p: _Patient, trunk: _Trunk, organs: _Organs,
                masks: dict[str, np.ndarray], taken: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Air, fat, muscle, bowel, mediastinum, perirenal fat and ribs; the volume and its texture field."""
    vol = np.full(grid.shape, _AIR, dtype=np.float32)
    vol[trunk.body] = _FAT + rng.normal(0, 8)
    vol[trunk.inner_fat] = _MUSCLE
    texture = _coarse_noise(grid, rng, 70.0, 12)
    loops = _coarse_noise(grid, rng, 40.0, 16)
    gas_field = _coarse_noise(grid, rng, 60.0, 8)
    bowel_thr = np.where(grid.t < trunk.Dc - 30, 0.0, 0.6)
    bowel = loops > bowel_thr
    lumen = loops > bowel_thr + 0.35
    back = np.where(bowel, 30.0 + 6 * texture, -90.0 + 10 * texture).astype(np.float32)
    back = np.where(lumen, np.where(gas_field > 0.45, _GAS, _FLUID + 10 * texture), back)
    mediastinum = np.where(texture > 0.55, 35.0, -80.0 + 10 * texture)
    back = np.where(trunk.above, mediastinum, back)
    vol = np.where(trunk.cavity, back, vol)
    vol[trunk.paraspinal | trunk.psoas] = _MUSCLE
    vol[_dilate(masks["left kidney"] | masks["right kidney"], 3) & trunk.cavity & ~taken] = _FAT + 5  # perirenal fat
    vol[organs.hilum & ~taken] = _FAT + 10
    _ribs(grid, rng, vol, trunk.inner_fat & ~trunk.cavity_ellipse, p.ox, p.oy, trunk.bx, trunk.by, p.fat, p.wall,
          trunk.Dc, p.hu)
    return vol, texture


def _organ_intensities(grid: _Grid, rng: np.random.Generator, p: _Patient, midline: _Midline, organs: _Organs,
                       masks: dict[str, np.ndarray], vol: np.ndarray, texture: np.ndarray) -> str:
    """Each structure's density into ``vol`` (vessels, lungs, heart, organs, stomach, bone); the stomach's content."""
    hu, phase = p.hu, p.phase
    blood = hu["blood"] if phase != "non-contrast" else hu["aorta"]
    vol[midline.ivc] = hu["blood"] if phase == "portal venous" else 0.5 * (hu["blood"] + 40)
    vol[midline.iliac] = hu["aorta"]
    vol[midline.esophagus] = 40.0
    vol[midline.canal] = 15.0
    vol[midline.disc] = _DISC
    lung = masks["left lung"] | masks["right lung"]
    vol[lung] = hu["lung"] + 15 * texture[lung]
    _lung_vessels(grid, rng, vol, lung, blood)
    vol[masks["heart"]] = hu["myocardium"]
    vol[organs.chambers & masks["heart"]] = blood
    vol[masks["aorta"]] = hu["aorta"]
    vol[masks["liver"]] = hu["liver"] + 4 * texture[masks["liver"]]
    vol[masks["spleen"]] = hu["spleen"] + 4 * texture[masks["spleen"]]
    kid = masks["left kidney"] | masks["right kidney"]
    vol[kid] = hu["kidney cortex"]
    vol[kid & organs.medulla] = hu["kidney medulla"]
    content = _stomach(rng, vol, masks["stomach"], grid, hu)
    cortical = midline.vertebra & ~_erode(midline.vertebra, 1)
    vol[masks["vertebra"]] = hu["cancellous bone"]
    vol[masks["vertebra"] & cortical] = hu["cortical bone"]
    return content


def _finish(grid: _Grid, rng: np.random.Generator, vol: np.ndarray, noise_sigma: float) -> np.ndarray:
    """Partial volume, smooth shading and correlated noise; int16 HU."""
    vol = _blur_xy(vol)
    vol += (8.0 * _smooth_noise(rng, (grid.x / 150.0, grid.y / 150.0, grid.t / 150.0), 4, (0.5, 1.2))).astype(np.float32)
    noise = _blur_xy(rng.standard_normal(grid.shape, dtype=np.float32))
    vol += noise * np.float32(noise_sigma / 0.375)  # the [1,2,1]/4 blur keeps 0.375 of the std
    return np.clip(np.rint(vol), -1024, 3071).astype(np.int16)


def _ribs(grid: _Grid, rng, vol, layer, ox, oy, bx, by, fat, wall, Dc, hu) -> None:
    """Rib cross-sections in the chest/abdominal wall (unlabelled), more of them higher up."""
    n = 9
    base = np.sort(rng.uniform(-math.pi, math.pi, n))
    r = 5.0
    for k, tk in enumerate(grid.T):
        if tk < Dc - 65:
            continue
        scale_x = float(np.ravel(bx)[min(k, np.size(bx) - 1)]) - fat - wall / 2
        scale_y = float(np.ravel(by)[min(k, np.size(by) - 1)])
        for j, a in enumerate(base):
            ang = a + 0.012 * (tk - Dc) * (1 if j % 2 else -1)
            ang = (ang + math.pi) % (2 * math.pi) - math.pi
            sin = math.sin(ang)
            if abs(ang + math.pi / 2) < 0.45 or abs(ang - math.pi / 2) < 0.5:
                continue  # no ribs at the sternum or the spine
            if tk < Dc - 25 and sin < -0.3:
                continue  # the lowest slices keep only lateral and posterior ribs
            b = scale_y * (0.9 if sin > 0 else 1.0) - fat * (0.7 if sin > 0 else 1.0) - wall / 2
            cx, cy = ox + scale_x * math.cos(ang), oy + b * sin
            sl, xx, yy, _ = grid.box((cx, cy, tk), (r + 3, r + 3, 0.1))
            d2 = (xx - cx) ** 2 + (yy - cy) ** 2
            region = vol[k : k + 1, sl[1], sl[2]]
            inside = (d2 <= r * r) & layer[k : k + 1, sl[1], sl[2]]
            core = d2 <= (r - 2) ** 2
            region[inside] = hu["cortical bone"] * 0.7
            region[inside & core] = hu["cancellous bone"]


def _lung_vessels(grid: _Grid, rng, vol, lung, blood) -> None:
    """Small vessels inside the lungs (kept inside the lung masks, as segmentations do)."""
    idx = np.flatnonzero(lung)
    if idx.size == 0:
        return
    for flat in rng.choice(idx, size=min(90, idx.size), replace=False):
        k, i, j = np.unravel_index(flat, lung.shape)
        r = rng.uniform(1.5, 4.0)
        sl, xx, yy, tt = grid.box((grid.X[j], grid.Y[i], grid.T[k]), (r, r, r))
        ball = ((xx - grid.X[j]) ** 2 + (yy - grid.Y[i]) ** 2 + (tt - grid.T[k]) ** 2) <= r * r
        region = vol[sl]
        region[ball & lung[sl]] = blood


def _stomach(rng, vol, stomach, grid, hu) -> str:
    """Wall plus content: fluid, air above a fluid level (air is anterior in a supine patient) or collapsed."""
    vol[stomach] = hu["stomach wall"]
    lumen = _erode(stomach, 2) & stomach
    content = str(rng.choice(["fluid", "air-fluid", "air", "collapsed"], p=[0.3, 0.35, 0.15, 0.2]))
    if content == "collapsed" or not lumen.any():
        return content
    vol[lumen] = _FLUID + rng.uniform(0, 15)
    if content in ("air-fluid", "air"):
        rows = np.nonzero(lumen)[1]
        level = np.quantile(rows, rng.uniform(0.3, 0.7)) if content == "air-fluid" else rows.max() + 1
        yy = np.broadcast_to(np.arange(grid.shape[1])[None, :, None], grid.shape)
        vol[lumen & (yy < level)] = _GAS
    return content
