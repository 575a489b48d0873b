"""Intensity normalisation: MR has arbitrary units, CT has Hounsfield units.

MR is scaled by robust percentiles (per volume, or per slice when a stack's slices were acquired
with different gains, as LGE often is); CT keeps its physical meaning up to a z-score after
clipping the air floor, as the dual-stream paper does.
"""

from __future__ import annotations

import numpy as np

CT_AIR_HU = -1000.0


def percentile_scale(
    array: np.ndarray,
    *,
    lower: float = 0.5,
    upper: float = 99.5,
    per_slice: bool = False,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Map the ``lower``..``upper`` percentiles to 0..1 and clip (float32).

    ``per_slice`` computes the percentiles over each slice (axis 0) separately. ``mask`` limits
    the statistics to some voxels (e.g. inside the field of view after resampling, where the
    padding zeros would otherwise pull the lower percentile down).
    """
    array = np.asarray(array, dtype=np.float32)
    if per_slice:
        slice_masks = [None] * len(array) if mask is None else list(mask)
        return np.stack([percentile_scale(a, lower=lower, upper=upper, mask=m) for a, m in zip(array, slice_masks)])
    values = array if mask is None else array[np.asarray(mask, bool)]
    if values.size == 0:
        return np.zeros_like(array)
    low, high = (float(v) for v in np.percentile(values, [lower, upper]))
    if high <= low:
        return np.zeros_like(array)
    return np.clip((array - low) / (high - low), 0.0, 1.0).astype(np.float32, copy=False)


def zscore(array: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Zero mean, unit variance (float32), with statistics from ``mask`` when given (e.g. the body)."""
    array = np.asarray(array, dtype=np.float32)
    values = array if mask is None else array[np.asarray(mask, bool)]
    if values.size == 0:
        return np.zeros_like(array)
    std = float(values.std())
    return ((array - float(values.mean())) / (std if std > 0 else 1.0)).astype(np.float32, copy=False)


def normalise_ct(array: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """CT: clip below -1000 HU (scanner padding values such as -2048 or -3024), then z-score."""
    return zscore(np.maximum(np.asarray(array, dtype=np.float32), CT_AIR_HU), mask)


def normalise_mr(array: np.ndarray, *, per_slice: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
    """MR: robust 0.5-99.5 percentile scaling to 0..1 (per volume by default)."""
    return percentile_scale(array, per_slice=per_slice, mask=mask)
