"""The one scoring home: structures named by their label set, graded on the reference's own grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from crossmodal.errors import InputError
from crossmodal.labels import ABDOMEN, CARDIAC_MYO_LV
from crossmodal.scoring import foreground_dice, score, score_images, structure_dice, volume_and_slice_dice


def cube_labels(spacing: float = 2.0) -> sitk.Image:
    """A 40 mm block of liver and a 20 mm block of spleen, on a grid of ``spacing`` mm voxels."""
    n = int(round(60 / spacing))
    array = np.zeros((n, n, n), np.uint8)
    a, b = int(round(10 / spacing)), int(round(50 / spacing))
    array[a:b, a:b, a:b] = 1
    array[a : a + int(round(20 / spacing)), a : a + int(round(20 / spacing)), b - int(round(20 / spacing)) : b] = 4
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((spacing,) * 3)
    image.SetOrigin((-30.0, -30.0, -30.0))
    return image


def test_a_prediction_on_another_grid_is_scored_on_the_references_grid_by_structure_name():
    reference = cube_labels(2.0)
    same_in_physical_space = cube_labels(1.0)
    scores = score_images(same_in_physical_space, reference, ABDOMEN, "prediction.nii.gz", present_only=True)
    assert set(scores) == {"liver", "spleen"}  # no kidney in either: not scored
    assert scores["liver"]["dice"] == pytest.approx(1.0) and scores["spleen"]["hd95_mm"] == pytest.approx(0.0)
    everything = score_images(reference, reference, ABDOMEN, "prediction.nii.gz")
    assert list(everything) == list(ABDOMEN.names) and everything["left kidney"] == {"dice": 1.0, "hd95_mm": 0.0}


def test_a_prediction_that_misses_its_reference_in_physical_space_is_refused():
    elsewhere = cube_labels(2.0)
    elsewhere.SetOrigin((500.0, 0.0, 0.0))
    with pytest.raises(InputError, match="prediction.nii.gz: does not overlap its reference in physical space"):
        score_images(elsewhere, cube_labels(2.0), ABDOMEN, "prediction.nii.gz")


def test_class_maps_are_scored_per_volume_and_per_labelled_slice_with_their_mean():
    reference = np.zeros((4, 10, 10), np.uint8)
    reference[1:3, 2:8, 2:8] = 1
    reference[1:3, 4:6, 4:6] = 2
    prediction = reference.copy()
    prediction[2] = 0  # one of the two labelled slices missed entirely
    scores = volume_and_slice_dice(prediction, reference, CARDIAC_MYO_LV)
    assert scores["slices"] == {"myocardium": 0.5, "left ventricle": 0.5, "mean": 0.5}
    assert scores["volume"]["myocardium"] == pytest.approx(2 / 3) and scores["volume"]["mean"] == pytest.approx(2 / 3)
    assert structure_dice(prediction, reference, CARDIAC_MYO_LV, classes=True) == {k: v for k, v in scores["volume"].items() if k != "mean"}
    assert score(prediction * 0, reference * 0, CARDIAC_MYO_LV) == {"myocardium": {"dice": 1.0}, "left ventricle": {"dice": 1.0}}


def test_agreement_of_two_results_ignores_which_label_each_voxel_has():
    a = np.zeros((8, 8), np.uint16)
    a[2:6, 2:6] = 200
    b = np.where(a > 0, 500, 0)
    assert foreground_dice(a, b) == 1.0 and foreground_dice(a * 0, b * 0) == 1.0 and foreground_dice(a, b * 0) == 0.0
