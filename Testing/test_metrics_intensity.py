"""Metrics (Dice, per-slice Dice, HD95, MSD in mm) and intensity normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from crossmodal.intensity import normalise_ct, normalise_mr, percentile_scale, zscore
from crossmodal.metrics import dice, dice_per_slice, surface_distances


def box(shape=(10, 40, 40), z=(2, 8), y=(10, 30), x=(10, 30), value=1):
    a = np.zeros(shape, np.uint8)
    a[z[0] : z[1], y[0] : y[1], x[0] : x[1]] = value
    return a


def test_dice_values_and_empty_cases():
    ref = box()
    assert dice(ref, ref, [1]) == {1: 1.0}
    shifted = box(x=(15, 35))  # 15 of 20 columns overlap
    assert dice(shifted, ref, [1])[1] == pytest.approx(0.75)
    empty = np.zeros_like(ref)
    assert dice(empty, empty, [1]) == {1: 1.0}
    assert dice(empty, ref, [1]) == {1: 0.0}
    assert dice(ref, empty, [1]) == {1: 0.0}


def test_dice_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)), [1])


def test_per_slice_dice_averages_labelled_slices_only():
    ref = box()
    pred = ref.copy()
    pred[2] = 0  # one labelled slice missed entirely
    pred[0] = box()[3]  # a false positive on an unlabelled slice does not count
    assert dice_per_slice(pred, ref, [1])[1] == pytest.approx(5 / 6)
    # The volume Dice weighs slices by size instead.
    assert dice(pred, ref, [1])[1] == pytest.approx(2 * 5 / (6 + 6))
    assert np.isnan(dice_per_slice(ref, np.zeros_like(ref), [1])[1])


def test_surface_distances_in_mm():
    ref = box(shape=(20, 40, 40), z=(5, 15))
    moved = np.roll(ref, 3, axis=2)  # 3 voxels along x
    result = surface_distances(moved, ref, [1], spacing=(4.0, 1.0, 2.0))[1]
    assert result["hd95"] == pytest.approx(6.0)  # 3 voxels x 2 mm
    assert 0 < result["msd"] < 6.0
    same = surface_distances(ref, ref, [1], spacing=(4.0, 1.0, 2.0))[1]
    assert same == {"hd95": 0.0, "msd": 0.0}


def test_surface_distances_when_absent():
    ref = box()
    empty = np.zeros_like(ref)
    diagonal = float(np.linalg.norm(np.array(ref.shape) * np.array([5.0, 1.0, 1.0])))
    assert surface_distances(empty, empty, [1], (5.0, 1.0, 1.0))[1] == {"hd95": 0.0, "msd": 0.0}
    assert surface_distances(empty, ref, [1], (5.0, 1.0, 1.0))[1] == {"hd95": diagonal, "msd": diagonal}
    with pytest.raises(ValueError, match="spacing"):
        surface_distances(ref, ref, [1], (1.0, 1.0))


def test_percentile_scaling_is_robust_to_outliers():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, size=(4, 32, 32)).astype(np.float32)
    image[0, 0, 0] = 1e6  # a hot pixel must not squash the rest
    out = normalise_mr(image)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    assert 0.4 < float(np.median(out)) < 0.6


def test_percentile_scaling_per_slice_and_mask():
    image = np.stack([np.linspace(0, 1, 100).reshape(10, 10), np.linspace(0, 1000, 100).reshape(10, 10)])
    per_slice = percentile_scale(image, per_slice=True, lower=0, upper=100)
    np.testing.assert_allclose(per_slice[0], per_slice[1], atol=1e-6)
    mask = np.zeros_like(image, bool)
    mask[:, 5:] = True
    masked = percentile_scale(image, lower=0, upper=100, per_slice=True, mask=mask)
    assert (masked[:, :5] == 0).all() and masked[:, 5:].min() == 0 and masked[:, 5:].max() == 1
    assert not percentile_scale(np.full((3, 3), 7.0)).any()  # constant image -> zeros, no division by 0


def test_ct_clips_air_floor_then_zscores():
    ct = np.array([-3024.0, -1000.0, 0.0, 40.0, 1000.0], np.float32)
    out = normalise_ct(ct)
    clipped = np.array([-1000.0, -1000.0, 0.0, 40.0, 1000.0])
    np.testing.assert_allclose(out, (clipped - clipped.mean()) / clipped.std(), rtol=1e-5)
    assert zscore(np.ones(5)).tolist() == [0.0] * 5
