"""Abdominal CT / MR for the dual-stream FCN: the modality, preprocessing onto a 2 mm body crop, and labels back.

As the paper: resample to 2 mm isotropic, crop to the body (label-free, so that inference can do
the same), CT clipped below -1000 HU then z-scored, MR z-scored (statistics inside the body).
Class probabilities go back onto the input's own grid class by class, so memory stays bounded on
large volumes. Nothing here needs PyTorch: the Slicer panel checks and guesses with it before
PyTorch is installed (the network's part is :mod:`crossmodal.abdominal_inference`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from crossmodal.errors import InputError
from crossmodal.geometry import Grid, resample
from crossmodal.intensity import CT_AIR_HU, zscore

MODALITIES = ("MR", "CT")
SPACING_MM = 2.0
BODY_MARGIN_MM = 10.0
MIN_THICKNESS_MM = 10 * SPACING_MM
"""A volume thinner than this (10 voxels of the network's grid) along any axis is a slice or a thin slab, not a
volume the 3-D FCN can segment."""
BODY_THRESHOLDS = {"otsu": sitk.OtsuThresholdImageFilter, "li": sitk.LiThresholdImageFilter}
"""How the body is told from the air around it, for the crop and the normalisation statistics. Otsu splits the
two largest intensity classes: on a T2 MR whose fluid is far brighter than its soft tissue (CHAOS T2 036) it
splits fluid from everything else, and the crop loses the organs. Li's minimum cross-entropy threshold kept every
organ of all 19 shared CT and MR volumes. A model keeps the one it was trained with (its card's ``body_threshold``;
Otsu for bundles that predate the choice)."""
DEFAULT_BODY_THRESHOLD = "otsu"
"""The body threshold of a recipe, card or stored run that names none: every one made before it was a choice used Otsu."""


def require_body_threshold(method: str, source: str) -> None:
    """Refuse a ``body_threshold`` (from a recipe, a card or a caller) that :data:`BODY_THRESHOLDS` lacks."""
    if method not in BODY_THRESHOLDS:
        raise InputError(source, f"body_threshold {method!r} is not one of {', '.join(BODY_THRESHOLDS)}")


@dataclass
class PreparedVolume:
    """A volume on its 2 mm body-crop grid, normalised, with its labels when given."""

    modality: str
    image: np.ndarray
    """(z, y, x) float32."""
    grid: Grid
    source: Grid
    """The input's own grid (where predictions go back to)."""
    labels: np.ndarray | None = None


def looks_like(array: np.ndarray) -> str:
    """The modality an intensity range suggests: CT has negative values (air, fat), MR magnitudes do not."""
    return "CT" if float(np.min(array)) < -50 else "MR"


DICOM_MODALITY_TAG = "0008|0060"


def guess_modality(image: sitk.Image) -> tuple[str, str]:
    """(modality, how it was decided): the DICOM Modality tag when the image carries it, else the intensity range."""
    if image.HasMetaDataKey(DICOM_MODALITY_TAG):
        tag = image.GetMetaData(DICOM_MODALITY_TAG).strip().upper()
        if tag in ("CT", "MR"):
            return tag, "DICOM tag"
    return looks_like(sitk.GetArrayViewFromImage(image)), "intensities"


def body_box(image: np.ndarray, margin: int, method: str = DEFAULT_BODY_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Index bounds (low, high) (z, y, x) of the body: foreground by ``method`` (:data:`BODY_THRESHOLDS`), largest
    component, plus ``margin`` voxels."""
    smoothed = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(image), 1.0))
    foreground = sitk.GetImageFromArray((smoothed > intensity_threshold(smoothed, method)).astype(np.uint8))
    components = sitk.RelabelComponent(sitk.ConnectedComponent(foreground), sortByObjectSize=True)
    body = sitk.GetArrayViewFromImage(components) == 1
    if not body.any():
        return np.zeros(3, int), np.array(image.shape)
    where = np.nonzero(body)
    low = np.maximum(np.array([w.min() for w in where]) - margin, 0)
    high = np.minimum(np.array([w.max() for w in where]) + margin + 1, image.shape)
    return low, high


def without_blank_borders(image: sitk.Image) -> sitk.Image:
    """``image`` less the slabs at its borders that hold one value everywhere: they were never acquired (11 of the 15
    shared CHAOS T2 volumes end in an all-zero slice). Left in, the body crop keeps them, and the network sees the
    tissue stop at a hard edge that no body has; one model labelled that edge liver (a band across the top of
    CHAOS T2 034). Slabs inside the volume, and a volume that is blank everywhere, are left as they are."""
    array = sitk.GetArrayViewFromImage(image)
    kept = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        varies = np.flatnonzero(array.max(axis=others) > array.min(axis=others))
        kept.append(slice(int(varies[0]), int(varies[-1]) + 1) if varies.size else slice(0, array.shape[axis]))
    if all(k.stop - k.start == n for k, n in zip(kept, array.shape)):
        return image
    return image[kept[2], kept[1], kept[0]]


def require_volume(size: Sequence[int], spacing: Sequence[float], source: str) -> None:
    """Refuse a 2-D slice or a thin slab (by its voxel count and spacing) before any work is done on it."""
    extent = np.asarray(size) * np.asarray(spacing)
    if extent.min() < MIN_THICKNESS_MM:
        axis = int(extent.argmin())
        raise InputError(source, f"is {size[axis]} voxel(s), {extent[axis]:.0f} mm, along its {'IJK'[axis]} axis: a slice, not a volume; "
                                 f"the 3-D dual-stream FCN needs at least {MIN_THICKNESS_MM:.0f} mm along every axis")


@dataclass(frozen=True)
class Preparation:
    """How a model's volumes are prepared: its recipe's in training, its card's at inference, so both prepare alike.

    Defaults are what every model did before each became a choice (a recipe or card that names none)."""

    spacing_mm: float = SPACING_MM
    ct_window: tuple[float, float] | None = None
    """HU window the training CT was stored in (BTCV's copy: [-125, 275]); CT is clipped to it."""
    body_threshold: str = DEFAULT_BODY_THRESHOLD
    """How the body is found for the crop and the z-score statistics (:data:`BODY_THRESHOLDS`)."""
    trim_blank_borders: bool = False
    """Border slabs of one value are outside the field of view (:func:`without_blank_borders`)."""

    def __post_init__(self) -> None:  # a recipe's or card's JSON list, or none
        object.__setattr__(self, "ct_window", tuple(self.ct_window) if self.ct_window else None)

    @classmethod
    def of_card(cls, preprocessing: dict, source: str) -> Preparation:
        """A model card's preparation (``source`` names the card in an error)."""
        preparation = cls(preprocessing["spacing_mm"], preprocessing.get("ct_window"), preprocessing.get("body_threshold", DEFAULT_BODY_THRESHOLD),
                          bool(preprocessing.get("trim_blank_borders", False)))
        require_body_threshold(preparation.body_threshold, source)
        return preparation

    def card_entries(self) -> dict:
        """What a model card records of it (read back by :meth:`of_card`), with how it reads for a user."""
        ct = f"clip to {list(self.ct_window)} HU" if self.ct_window else "clip below -1000 HU"
        return {"spacing_mm": self.spacing_mm, "orientation": "LPS-aligned grid over the field of view",
                "crop": f"{self.body_threshold.capitalize()} body mask + {BODY_MARGIN_MM:g} mm", "body_threshold": self.body_threshold,
                "normalisation": {"CT": f"{ct}, z-score in the body", "MR": "z-score in the body"},
                "ct_window": list(self.ct_window) if self.ct_window else None, "trim_blank_borders": self.trim_blank_borders}


def prepare_volume(image: sitk.Image, modality: str, labels: sitk.Image | None = None, *, preparation: Preparation = Preparation(),
                   source: str = "image") -> PreparedVolume:
    """Resample onto the LPS-aligned grid of ``preparation.spacing_mm`` over the field of view, crop to the body, normalise.

    Every input, whatever its voxel order (CHAOS stores MR with y flipped relative to BTCV CT),
    obliquity or anisotropy, reaches the network with its array axes towards the patient's left,
    posterior and superior: the shared layers of the joint and dual-stream variants must see both
    modalities the same way up. CT is clipped to ``preparation.ct_window`` so that raw CT reaches a model with the
    statistics of its windowed training CT. Predictions go back onto the input's own grid (:func:`labels_on_source`),
    background outside the crop.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, not {modality!r}")
    require_body_threshold(preparation.body_threshold, "prepare_volume")
    if image.GetDimension() != 3:
        raise InputError(source, f"is {image.GetDimension()}-D; the dual-stream FCN takes 3-D volumes")
    require_volume(image.GetSize(), image.GetSpacing(), source)
    if not np.isfinite(sitk.GetArrayViewFromImage(image)).all():
        raise InputError(source, "contains NaN or infinite values")
    own_grid = Grid.of(image)
    if modality == "CT":  # first of all, so that a raw and a windowed copy of a CT are prepared alike
        image = sitk.Cast(image, sitk.sitkFloat32)
        image = sitk.Clamp(image, sitk.sitkFloat32, *preparation.ct_window) if preparation.ct_window else sitk.Maximum(image, CT_AIR_HU)
    if preparation.trim_blank_borders:
        image = without_blank_borders(image)
    background = float(np.min(sitk.GetArrayViewFromImage(image)))  # outside an oblique field of view: air
    resampled = resample(image, Grid.of(image).axis_aligned(preparation.spacing_mm), default=background)
    array = sitk.GetArrayFromImage(resampled)
    if looks_like(array) != modality:
        warnings.warn(f"{source}: its intensities look like {looks_like(array)}, but it was given as {modality}; check the modality", stacklevel=2)
    low, high = body_box(array, int(np.ceil(BODY_MARGIN_MM / preparation.spacing_mm)), preparation.body_threshold)
    crop = tuple(slice(a, b) for a, b in zip(low, high))
    full = Grid.of(resampled)
    grid = Grid(tuple(int(n) for n in (high - low)[::-1]), tuple(full.index_to_point(low[::-1])), full.spacing, full.direction)
    body = array[crop]
    mask = body > intensity_threshold(body, preparation.body_threshold)
    prepared = PreparedVolume(modality, zscore(body, mask if mask.any() else None), grid, own_grid)
    if labels is not None:
        prepared.labels = sitk.GetArrayFromImage(resample(labels, grid, label=True)).astype(np.uint8)
    return prepared


def intensity_threshold(array: np.ndarray, method: str = DEFAULT_BODY_THRESHOLD) -> float:
    """The threshold between background and body intensities by ``method`` (:data:`BODY_THRESHOLDS`)."""
    threshold = BODY_THRESHOLDS[method]()
    threshold.Execute(sitk.GetImageFromArray(array))
    return float(threshold.GetThreshold())


def labels_on_source(prepared: PreparedVolume, probabilities: np.ndarray) -> sitk.Image:
    """Class labels on the input's own grid: each class's probability resampled linearly, then a running argmax.

    One class map at the input resolution is held at a time (plus the best score and label so far),
    never the full stack of class maps.
    """
    best_score = best_label = None
    for c, probability in enumerate(probabilities):
        score = sitk.GetArrayFromImage(resample(prepared.grid.image(probability.astype(np.float32)), prepared.source, anti_aliasing=False))
        if best_score is None:
            best_score, best_label = score, np.zeros(score.shape, np.uint8)
        else:
            better = score > best_score
            best_score[better], best_label[better] = score[better], c
    return prepared.source.image(best_label)
