"""Overlap and surface-distance metrics for label maps, with every empty case defined.

Conventions (stated once here, used by every table the project writes):

* Dice: both masks empty -> 1.0 (nothing to find, nothing found); one empty -> 0.0.
* HD95 and mean surface distance (mm): both empty -> 0.0; one empty -> the diagonal of the image
  in mm, the worst distance the image allows, so that a missed structure is penalised rather than
  dropped from the mean (the Metrics Reloaded recommendation).
* Per-slice Dice (as the MMSDNet authors report it): Dice on each slice of the reference that
  holds any labelled structure, averaged per volume; slices outside the labelled range do not count.

Surface distances use MONAI's implementation with the voxel spacing, so they are in mm; PyTorch and MONAI
are imported only there, so that the Slicer panels score agreement without them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np


def _check(prediction: np.ndarray, reference: np.ndarray) -> None:
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")


def dice(prediction: np.ndarray, reference: np.ndarray, labels: Sequence[int]) -> dict[int, float]:
    """Dice per label value over the whole array."""
    _check(prediction, reference)
    scores = {}
    for label in labels:
        p, r = prediction == label, reference == label
        total = int(p.sum()) + int(r.sum())
        scores[label] = 1.0 if total == 0 else 2.0 * int(np.logical_and(p, r).sum()) / total
    return scores


def dice_per_slice(
    prediction: np.ndarray, reference: np.ndarray, labels: Sequence[int], axis: int = 0
) -> dict[int, float]:
    """Per-slice Dice averaged over the slices (along ``axis``) where the reference has any label."""
    _check(prediction, reference)
    prediction, reference = np.moveaxis(prediction, axis, 0), np.moveaxis(reference, axis, 0)
    labelled = [k for k in range(reference.shape[0]) if reference[k].any()]
    if not labelled:
        return {label: float("nan") for label in labels}
    per_slice = [dice(prediction[k], reference[k], labels) for k in labelled]
    return {label: float(np.mean([s[label] for s in per_slice])) for label in labels}


def surface_distances(
    prediction: np.ndarray,
    reference: np.ndarray,
    labels: Sequence[int],
    spacing: Sequence[float],
) -> dict[int, dict[str, float]]:
    """HD95 and mean (symmetric) surface distance in mm per label.

    ``spacing`` is given in the array's axis order (for a SimpleITK array: ``image.GetSpacing()[::-1]``).
    """
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    _check(prediction, reference)
    if len(spacing) != prediction.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {prediction.ndim}-D array")
    worst = float(np.linalg.norm(np.asarray(prediction.shape) * np.asarray(spacing)))
    results = {}
    for label in labels:
        p, r = prediction == label, reference == label
        if not p.any() and not r.any():
            results[label] = {"hd95": 0.0, "msd": 0.0}
        elif not p.any() or not r.any():
            results[label] = {"hd95": worst, "msd": worst}
        else:
            pt = torch.from_numpy(p)[None, None]
            rt = torch.from_numpy(r)[None, None]
            with warnings.catch_warnings():  # MONAI 1.6 warns about its own internal call
                warnings.simplefilter("ignore", FutureWarning)
                hd = compute_hausdorff_distance(pt, rt, include_background=True, percentile=95, spacing=list(spacing))
                msd = compute_average_surface_distance(pt, rt, include_background=True, symmetric=True, spacing=list(spacing))
            results[label] = {"hd95": float(hd), "msd": float(msd)}
    return results
