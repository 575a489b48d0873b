"""Scoring a result against its reference: the one home of how the project grades segmentations, used by
the QA report, ``evaluate``, training validation and model cards, and the papers' tables.

What :mod:`crossmodal.metrics` defines (Dice, HD95, their empty cases), applied per structure of a
:class:`~crossmodal.labels.LabelSet` and named by it, on the reference's own grid: a prediction on another
grid is resampled onto it (nearest neighbour, in physical space), because grading a resampled reference
would grade something no radiologist drew.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from crossmodal.errors import InputError
from crossmodal.geometry import Grid, resample
from crossmodal.labels import LabelSet
from crossmodal.metrics import dice, dice_per_slice, surface_distances

Scores = dict[str, dict[str, float]]
"""Per structure name: {"dice": ..., and "hd95_mm" where distances were asked for}."""


def _values(labels: LabelSet, classes: bool) -> dict[int, str]:
    """Array value -> structure name: file values, or class indices 1..n when ``classes``."""
    return {(i if classes else label.value): label.name for i, label in enumerate(labels.labels, 1)}


def structure_dice(prediction: np.ndarray, reference: np.ndarray, labels: LabelSet, *, classes: bool = False) -> dict[str, float]:
    """Dice per structure over the whole arrays (file values, or class indices when ``classes``)."""
    names = _values(labels, classes)
    return {names[v]: d for v, d in dice(prediction, reference, list(names)).items()}


def score(prediction: np.ndarray, reference: np.ndarray, labels: LabelSet, *, spacing: Sequence[float] | None = None,
          present_only: bool = False) -> Scores:
    """Dice, and HD95 in mm where ``spacing`` (array axis order) is given, per structure of ``labels``;
    ``present_only`` leaves out structures in neither array (a case without a spleen has no spleen score)."""
    names = _values(labels, classes=False)
    values = [v for v in names if not present_only or (reference == v).any() or (prediction == v).any()]
    overlap = dice(prediction, reference, values)
    distance = surface_distances(prediction, reference, values, spacing) if spacing is not None else {}
    return {names[v]: {"dice": overlap[v], **({"hd95_mm": distance[v]["hd95"]} if v in distance else {})} for v in values}


def on_reference_grid(prediction: sitk.Image, reference: sitk.Image, source: object) -> np.ndarray:
    """``prediction`` as an array on ``reference``'s grid; refused when it does not overlap it at all."""
    if Grid.of(prediction) == Grid.of(reference):
        return sitk.GetArrayFromImage(prediction)
    moved = sitk.GetArrayFromImage(resample(prediction, Grid.of(reference), label=True, default=0))
    if np.count_nonzero(sitk.GetArrayViewFromImage(prediction)) and not moved.any():
        raise InputError(source, "does not overlap its reference in physical space")
    return moved


def score_images(prediction: sitk.Image, reference: sitk.Image, labels: LabelSet, source: object, *, present_only: bool = False) -> Scores:
    """Dice and HD95 (mm) per structure of a label map against its reference, on the reference's grid."""
    found = on_reference_grid(prediction, reference, source)
    return score(found, sitk.GetArrayViewFromImage(reference), labels, spacing=reference.GetSpacing()[::-1], present_only=present_only)


def volume_and_slice_dice(prediction: np.ndarray, reference: np.ndarray, labels: LabelSet) -> dict[str, dict[str, float]]:
    """Class maps (slices first) scored as the MMSDNet paper reports: Dice per volume and mean Dice per labelled
    slice, per structure and their ``mean``."""
    names = _values(labels, classes=True)
    levels = {"volume": dice(prediction, reference, list(names)), "slices": dice_per_slice(prediction, reference, list(names))}
    return {level: {**{names[v]: d for v, d in found.items()}, "mean": float(np.mean(list(found.values())))} for level, found in levels.items()}


def foreground_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks' foregrounds, whatever their labels (1 when both are empty): how much two results agree."""
    return dice((a > 0).astype(np.uint8), (b > 0).astype(np.uint8), [1])[1]
