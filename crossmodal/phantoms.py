"""Synthetic phantoms: paired cardiac cine + LGE, and abdominal CT / MR volumes.

They exist for fast tests and for a demo without data, so they copy what matters for the two
methods rather than every detail of real images:

* Cardiac: one analytic heart (LV blood pool, myocardium tapering to the apex, RV crescent; the wall's
  thickness drawn per patient) is defined in physical space and rasterised at each modality's own voxel
  centres, on grids that differ as the real ones do (cine 1.25 mm / 8 mm, LGE ~0.75 mm / 5 mm, one
  oblique short-axis orientation). The LGE sees the heart after a rigid plus smooth non-rigid
  displacement (another breath-hold). Cine has bright blood and dark myocardium; LGE nulls the
  myocardium to the grey and texture of its surroundings and adds bright scar, so the outer border is
  hard to find on LGE alone, which is the point of MMSDNet.
* Abdomen: body, spine, liver (patient right), spleen (patient left), kidneys, bowel gas, in HU for
  CT and in T2-like arbitrary units for MR, at the spacings of the shared BTCV and CHAOS copies.

Every image carries its geometry; masks lie on exactly their image's grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from crossmodal.geometry import Grid
from crossmodal.labels import ABDOMEN, MSCMRSEG

MYO, LV, RV = (label.value for label in MSCMRSEG.labels)
LIVER, RIGHT_KIDNEY, LEFT_KIDNEY, SPLEEN = (label.value for label in ABDOMEN.labels)


@dataclass(frozen=True)
class CardiacPair:
    """A cine and an LGE volume of one synthetic patient, with their masks (200/500/600)."""

    cine: sitk.Image
    cine_mask: sitk.Image
    lge: sitk.Image
    lge_mask: sitk.Image


@dataclass(frozen=True)
class HeartMotion:
    """How the heart moved between the cine and the LGE breath-holds."""

    translation_mm: np.ndarray  # along the stack's (u, v, w) axes
    rotation_degrees: float  # about the long axis
    bumps: np.ndarray  # (n, 5): centre u, v (mm), width (mm), displacement u, v (mm)


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    a = axis / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def _grid_points(grid: Grid) -> np.ndarray:
    """Physical points of every voxel centre, shape (k, j, i, 3)."""
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in grid.size[::-1]), indexing="ij")
    return grid.index_to_point(np.stack([i, j, k], axis=-1))


HEART_LENGTH_MM = 45.0  # apex at w = -45; the base plane is at w = +40
BASE_MM = 40.0


def _radius(local: np.ndarray, ru: float, rv: float) -> np.ndarray:
    """Elliptical radius (1 on the boundary) of a cross-section that tapers toward the apex."""
    u, v, w = local[..., 0], local[..., 1], local[..., 2]
    taper = np.sqrt(np.clip(1.0 - (np.minimum(w, 0.0) / HEART_LENGTH_MM) ** 2, 1e-6, 1.0))
    return np.hypot(u / ru, v / rv) / taper


@dataclass(frozen=True)
class HeartShape:
    """One patient's myocardial wall: its thickness along u and v, and how far the epicardium is off-centre.

    Walls of 7-12 mm, up to 5 mm thicker on one side than the other, as in adults; a fixed wall would let a network
    draw the epicardium at a constant distance from the bright blood pool and never need the cine.
    """

    wall_u_mm: float = 10.0
    wall_v_mm: float = 10.0
    offset_u_mm: float = 0.0

    @classmethod
    def random(cls, rng: np.random.Generator) -> HeartShape:
        return cls(*rng.uniform(7.0, 12.0, 2), rng.uniform(-2.5, 2.5))

    def epicardium(self, local: np.ndarray) -> np.ndarray:
        """Elliptical radius of the epicardium (1 on it)."""
        return _radius(local - np.array([self.offset_u_mm, 0.0, 0.0]), 24.0 + self.wall_u_mm, 21.0 + self.wall_v_mm)


def _heart_labels(local: np.ndarray, shape: HeartShape) -> np.ndarray:
    """Labels of the analytic heart at points in its own frame (u, v in-plane, w toward the base; mm)."""
    w = local[..., 2]
    along = (w > -HEART_LENGTH_MM) & (w < BASE_MM)
    epi = shape.epicardium(local)
    labels = np.zeros(w.shape, np.uint16)
    # RV: a crescent wrapped around the septal side (-u), shorter than the LV.
    shifted = local - np.array([-30.0, -4.0, 0.0])
    labels[(_radius(shifted, 32.0, 42.0) < 1.0) & (epi >= 1.0) & (w > -25.0) & (w < BASE_MM)] = RV
    labels[(epi < 1.0) & along] = MYO
    labels[(_radius(local, 24.0, 21.0) < 1.0) & along & (w > -HEART_LENGTH_MM + 8.0)] = LV
    return labels


def _displace(local: np.ndarray, motion: HeartMotion) -> np.ndarray:
    """Where a point of the LGE's heart sits in the cine's heart frame (the inverse motion)."""
    shifted = local - motion.translation_mm
    rotation = _rotation(np.array([0.0, 0.0, 1.0]), -motion.rotation_degrees)
    moved = shifted @ rotation.T
    for cu, cv, width, du, dv in motion.bumps:
        weight = np.exp(-((moved[..., 0] - cu) ** 2 + (moved[..., 1] - cv) ** 2) / (2 * width**2))
        moved[..., 0] -= du * weight
        moved[..., 1] -= dv * weight
    return moved


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=(0, sigma, sigma))
    return field / (field.std() + 1e-6)


def _bias(rng: np.random.Generator, shape: tuple[int, ...], strength: float) -> np.ndarray:
    """A smooth multiplicative in-plane bias field (coil sensitivity), mean about 1."""
    y, x = np.meshgrid(np.linspace(-1, 1, shape[1]), np.linspace(-1, 1, shape[2]), indexing="ij")
    a = rng.uniform(-1, 1, 5) * strength
    field = 1.0 + a[0] * x + a[1] * y + a[2] * x * y + a[3] * (x**2 - 0.33) + a[4] * (y**2 - 0.33)
    return np.broadcast_to(np.clip(field, 0.5, 1.5), shape)


def _rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    return np.hypot(image + rng.normal(0, sigma, image.shape), rng.normal(0, sigma, image.shape)).astype(np.float32)


def _scar(rng: np.random.Generator, local: np.ndarray, labels: np.ndarray, patches: int) -> np.ndarray:
    """Enhanced myocardium: angular sectors, transmural or subendocardial, over part of the long axis."""
    angle = np.arctan2(local[..., 1], local[..., 0])
    endo = _radius(local, 24.0, 21.0)  # 1 at the endocardium, 1.3-1.6 at the epicardium
    scar = np.zeros(labels.shape, bool)
    for _ in range(patches):
        centre, width = rng.uniform(-np.pi, np.pi), rng.uniform(0.5, 1.2)
        low = rng.uniform(-HEART_LENGTH_MM, BASE_MM - 30.0)
        reach = 2.0 if rng.random() < 0.5 else rng.uniform(1.15, 1.25)  # transmural or subendocardial
        in_sector = np.abs(np.angle(np.exp(1j * (angle - centre)))) < width / 2
        scar |= in_sector & (local[..., 2] > low) & (local[..., 2] < low + 30.0) & (endo < reach)
    return scar & (labels == MYO)


LGE_NOISE = 1.5
"""LGE's noise relative to the cine's: inversion-recovery images are noisier than bSSFP cine."""


def _cardiac_image(
    rng: np.random.Generator,
    grid: Grid,
    local: np.ndarray,
    labels: np.ndarray,
    shape: HeartShape,
    lge: bool,
    noise: float,
) -> np.ndarray:
    """Intensities in 0..~1 for one modality: tissue classes, texture, partial volume, bias, noise."""
    u, v = local[..., 0], local[..., 1]
    texture = _smooth_noise(rng, labels.shape, sigma=6.0)
    lungs = (np.hypot((np.abs(u) - 95.0) / 45.0, (v + 10.0) / 70.0) < 1.0) & (labels == 0)
    epicardial_fat = (labels == 0) & (shape.epicardium(local) < 1.12) & (texture > 0.3)  # patchy, as real fat
    if lge:  # enhanced scar as bright as the blood pool, more noise
        tissue = {"background": 0.12, "texture": 0.06, "lung": 0.02, "fat": 0.35, LV: 0.45, RV: 0.40}
    else:
        tissue = {"background": 0.38, "texture": 0.08, "lung": 0.05, "fat": 0.75, MYO: 0.22, LV: 0.92, RV: 0.88}
    surroundings = tissue["background"] + tissue["texture"] * texture
    image = np.where(lungs, tissue["lung"], surroundings)
    image = np.where(epicardial_fat, tissue["fat"], image)
    for value in (LV, RV):
        image = np.where(labels == value, tissue[value] + 0.02 * texture, image)
    # LGE nulls the myocardium to exactly the grey of the tissue around it, texture included, so only the
    # heart's shape (and the cine) tells where its outer border runs; cine myocardium is darker than both.
    image = np.where(labels == MYO, surroundings if lge else tissue[MYO] + 0.02 * texture, image)
    if lge:
        image = np.where(_scar(rng, local, labels, int(rng.integers(0, 4))), 0.5, image)
    pixel = grid.spacing[0]
    image = gaussian_filter(image.astype(np.float32), sigma=(0, 0.6 / pixel * 1.25, 0.6 / pixel * 1.25))
    image = image * _bias(rng, labels.shape, 0.15)
    return _rician(rng, np.clip(image, 0, None), noise * (LGE_NOISE if lge else 1.0))


def cardiac_pair(
    seed: int = 0,
    *,
    misalignment_mm: float = 7.0,
    rotation_degrees: float = 6.0,
    deformation_mm: float = 3.0,
    noise: float = 0.03,
) -> CardiacPair:
    """One synthetic patient's cine and LGE, misaligned as two breath-holds are.

    ``misalignment_mm`` is the in-plane heart shift between the two (random direction; up to 40 %
    of it again through-plane), ``rotation_degrees`` the largest rotation about the long axis,
    ``deformation_mm`` the largest smooth non-rigid displacement. All zero: the same heart in both.
    """
    rng = np.random.default_rng(seed)
    orientation = _rotation(np.array([0.6, -0.5, 0.4]) + rng.normal(0, 0.1, 3), 60.0 + rng.uniform(-10, 10))
    heart = np.array([20.0, -30.0, 40.0]) + rng.normal(0, 5.0, 3)  # LPS mm
    direction = tuple(orientation.ravel())

    def stack(size, spacing, offset_mm):
        half = (np.asarray(size) - 1) / 2 * np.asarray(spacing)
        origin = heart + orientation @ (np.asarray(offset_mm) - half)
        return Grid(size, tuple(origin), spacing, direction)

    cine_grid = stack((160, 160, int(rng.integers(10, 14))), (1.25, 1.25, 8.0), rng.normal(0, 6.0, 3) * [1, 1, 0.3])
    lge_pixel = float(rng.choice([0.729, 0.75, 0.762]))
    lge_size = int(round(200.0 / lge_pixel / 8)) * 8
    lge_grid = stack((lge_size, lge_size, int(rng.integers(14, 17))), (lge_pixel, lge_pixel, 5.0), rng.normal(0, 6.0, 3) * [1, 1, 0.3])

    angle = rng.uniform(0, 2 * np.pi)
    magnitude = misalignment_mm * rng.uniform(0.7, 1.0)
    translation = np.array([np.cos(angle) * magnitude, np.sin(angle) * magnitude, rng.uniform(-0.4, 0.4) * misalignment_mm])
    bumps = np.column_stack(
        [rng.uniform(-35, 35, (3, 2)), rng.uniform(15, 30, 3), rng.uniform(-1, 1, (3, 2)) * deformation_mm]
    )
    motion = HeartMotion(translation, rng.uniform(-1, 1) * rotation_degrees, bumps)
    shape = HeartShape.random(np.random.default_rng([seed, 1]))  # its own stream: the rest of the phantom stays as it was

    def render(grid: Grid, lge: bool) -> tuple[sitk.Image, sitk.Image]:
        local = (_grid_points(grid) - heart) @ orientation  # heart frame = stack axes
        anatomy = _displace(local, motion) if lge else local
        labels = _heart_labels(anatomy, shape)
        image = _cardiac_image(rng, grid, anatomy, labels, shape, lge, noise)
        if lge:
            image_array = np.round(image * 1000).astype(np.int16)
        else:
            image_array = (image * 500).astype(np.float32)
        return grid.image(image_array), grid.image(labels)

    cine, cine_mask = render(cine_grid, lge=False)
    lge, lge_mask = render(lge_grid, lge=True)
    return CardiacPair(cine, cine_mask, lge, lge_mask)


# --- abdomen -------------------------------------------------------------------------------------

_ABDOMEN_GRIDS = {
    "CT": ((192, 160, 36), (1.75, 1.75, 5.0)),
    "MR": ((256, 224, 28), (1.25, 1.25, 7.7)),
}
# One contrast phase throughout, portal-venous as BTCV's: liver ~105 HU, spleen ~115, renal parenchyma ~170.
_CT_HU = {"air": -1000.0, "fat": -100.0, "soft": 45.0, "bone": 700.0, "gas": -850.0,
          LIVER: 105.0, SPLEEN: 115.0, RIGHT_KIDNEY: 170.0, LEFT_KIDNEY: 170.0}  # fmt: skip
_MR_T2 = {"air": 0.0, "fat": 0.62, "soft": 0.30, "bone": 0.08, "gas": 0.02,
          LIVER: 0.22, SPLEEN: 0.52, RIGHT_KIDNEY: 0.58, LEFT_KIDNEY: 0.58}  # fmt: skip


def _ellipsoid(points: np.ndarray, centre, radii) -> np.ndarray:
    return (((points - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(-1) < 1.0


def abdominal_volume(modality: str = "CT", seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """A synthetic abdominal CT (HU, int16) or T2 MR (arbitrary units, float32) and its organ labels.

    Axial slices in LPS: +x is the patient's left, +y posterior, +z superior; the liver lies on the
    patient's right (negative x), the spleen on the left. Organ sizes and positions vary with ``seed``.
    """
    if modality not in _ABDOMEN_GRIDS:
        raise ValueError(f"modality must be 'CT' or 'MR', not {modality!r}")
    rng = np.random.default_rng(seed)
    size, spacing = _ABDOMEN_GRIDS[modality]
    half = (np.asarray(size) - 1) / 2 * np.asarray(spacing)
    grid = Grid(size, tuple(-half + rng.normal(0, 3, 3)), spacing, tuple(np.eye(3).ravel()))
    p = _grid_points(grid)

    def jitter(centre, radii):
        return np.asarray(centre) + rng.normal(0, 5, 3), np.asarray(radii) * rng.uniform(0.88, 1.12)

    body_radii = np.array([150.0, 110.0]) * rng.uniform(0.92, 1.06)
    body = ((p[..., 0] / body_radii[0]) ** 2 + ((p[..., 1] - 5) / body_radii[1]) ** 2) < 1
    inner = ((p[..., 0] / (body_radii[0] - 18)) ** 2 + ((p[..., 1] - 5) / (body_radii[1] - 15)) ** 2) < 1
    spine = np.hypot(p[..., 0], p[..., 1] - 75) < 17
    labels = np.zeros(p.shape[:3], np.uint8)
    organs = [
        (LIVER, *jitter((-55, 5, 35), (78, 70, 75))),
        (SPLEEN, *jitter((80, 50, 45), (28, 45, 55))),
        (RIGHT_KIDNEY, *jitter((-65, 65, -15), (28, 24, 50))),
        (LEFT_KIDNEY, *jitter((65, 65, 0), (28, 24, 50))),
    ]
    for value, centre, radii in organs:
        labels[_ellipsoid(p, centre, radii) & inner & ~spine] = value

    table = _CT_HU if modality == "CT" else _MR_T2
    image = np.full(labels.shape, table["air"], np.float32)
    image[body] = table["fat"]
    image[inner] = table["soft"]
    texture = _smooth_noise(rng, labels.shape, sigma=3.0)
    soft_variation = 12.0 if modality == "CT" else 0.04
    image[inner] += soft_variation * texture[inner]
    for _ in range(10):  # bowel gas (CT) or fluid-filled loops (T2) in the free abdomen
        centre = rng.uniform([-80, -80, -80], [80, 20, 80])
        loop = _ellipsoid(p, centre, rng.uniform(8, 18, 3)) & inner & (labels == 0) & ~spine
        image[loop] = table["gas"] if modality == "CT" else 0.85
    image[spine & inner] = table["bone"]
    for value in (LIVER, SPLEEN, RIGHT_KIDNEY, LEFT_KIDNEY):
        image[labels == value] = table[value] + soft_variation * 0.3 * texture[labels == value]
    image = gaussian_filter(image, sigma=(0.3, 0.6, 0.6))
    if modality == "CT":
        image = np.round(image + rng.normal(0, 12.0, image.shape)).astype(np.int16)
    else:
        image = (_rician(rng, image * _bias(rng, image.shape, 0.25), 0.02) * 1000).astype(np.float32)
    return grid.image(image), grid.image(labels)


# --- phantom datasets on disk (tests, demos) --------------------------------------------------------


def write_mscmrseg_phantoms(folder: Path, labelled: int, unlabelled: int = 0, first: int = 1, **phantom) -> Path:
    """An MS-CMRSeg-layout folder of synthetic patients ``first``, ...: ``labelled`` with LGE masks, then ``unlabelled`` without."""
    from crossmodal.image_io import write_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for patient in range(first, first + labelled + unlabelled):
        pair = cardiac_pair(seed=patient, **phantom)
        write_image(pair.cine, folder / f"patient{patient}_C0.nii.gz")
        write_image(pair.cine_mask, folder / f"patient{patient}_C0_manual.nii.gz")
        write_image(pair.lge, folder / f"patient{patient}_DE.nii.gz")
        if patient < first + labelled:
            write_image(pair.lge_mask, folder / f"patient{patient}_DE_manual.nii.gz")
    return folder


def write_nnunet_phantoms(folder: Path, modality: str, subjects: int) -> Path:
    """An nnU-Net v2 raw dataset of synthetic abdominal ``modality`` ("CT" or "MR") volumes."""
    from crossmodal.image_io import write_image

    folder = Path(folder)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    for i in range(subjects):
        image, labels = abdominal_volume(modality, seed=100 + i)
        write_image(image, folder / "imagesTr" / f"{modality}_{i:03d}_0000.nii.gz")
        write_image(labels, folder / "labelsTr" / f"{modality}_{i:03d}.nii.gz")
    meta = {"channel_names": {"0": modality}, "labels": {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4},
            "numTraining": subjects, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder
