"""Synthetic phantoms: deterministic, geometrically consistent, and realistic where the papers need it."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from crossmodal.geometry import Grid, angle_between_degrees
from crossmodal.labels import ABDOMEN, MSCMRSEG
from crossmodal.metrics import dice
from crossmodal.phantoms import abdominal_volume, cardiac_pair

MYO, LV, RV = MSCMRSEG.values


@pytest.fixture(scope="module")
def pairs():
    return [cardiac_pair(seed) for seed in range(3)]


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def copy_mask_dice(pair) -> dict[int, float]:
    """The cine mask carried onto the LGE grid in physical space, against the LGE mask."""
    carried = sitk.Resample(pair.cine_mask, pair.lge_mask, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return dice(array(carried), array(pair.lge_mask), [MYO, LV, RV])


def test_cardiac_determinism():
    a, b, c = cardiac_pair(5), cardiac_pair(5), cardiac_pair(6)
    np.testing.assert_array_equal(array(a.lge), array(b.lge))
    np.testing.assert_array_equal(array(a.cine_mask), array(b.cine_mask))
    assert a.lge.GetSize() != c.lge.GetSize() or not np.array_equal(array(a.lge), array(c.lge))


def test_cardiac_geometry_mimics_the_real_data(pairs):
    for pair in pairs:
        cine, lge = Grid.of(pair.cine), Grid.of(pair.lge)
        assert cine.direction == lge.direction and not np.allclose(cine.matrix, np.eye(3), atol=0.1)
        assert cine.spacing[:2] == (1.25, 1.25) and cine.spacing[2] == 8.0
        assert 0.72 < lge.spacing[0] < 0.77 and lge.spacing[2] == 5.0
        assert cine.size != lge.size and cine.origin != lge.origin
        assert Grid.of(pair.cine_mask) == cine and Grid.of(pair.lge_mask) == lge
        assert pair.cine.GetPixelID() == sitk.sitkFloat32 and pair.lge.GetPixelID() == sitk.sitkInt16
        for mask in (pair.cine_mask, pair.lge_mask):
            assert set(np.unique(array(mask))) == {0, MYO, LV, RV}
        assert angle_between_degrees(cine.normal, lge.normal) == 0.0


def test_cardiac_anatomy_is_plausible(pairs):
    for pair in pairs:
        labels = array(pair.cine_mask)
        voxel_ml = np.prod(pair.cine_mask.GetSpacing()) / 1000
        myocardial_mass_g = (labels == MYO).sum() * voxel_ml * 1.05
        lv_volume_ml = (labels == LV).sum() * voxel_ml
        assert 70 < myocardial_mass_g < 250 and 60 < lv_volume_ml < 250


def test_wall_thickness_differs_between_patients():
    # A wall of one thickness in every phantom would let LGE alone find the epicardium from the blood pool.
    def epicardium_to_endocardium(pair) -> float:
        labels = array(pair.cine_mask)
        middle = labels[int(np.argmax((labels == LV).sum(axis=(1, 2))))]  # the slice with the most LV
        return float(np.sqrt(np.isin(middle, (MYO, LV)).sum() / (middle == LV).sum()))

    ratios = [epicardium_to_endocardium(cardiac_pair(seed)) for seed in range(5)]
    assert max(ratios) - min(ratios) > 0.06, ratios


def test_misalignment_shows_and_vanishes_when_switched_off(pairs):
    scores = [copy_mask_dice(pair)[MYO] for pair in pairs]
    assert all(0.35 < s < 0.8 for s in scores), scores
    aligned = cardiac_pair(0, misalignment_mm=0, rotation_degrees=0, deformation_mm=0)
    assert copy_mask_dice(aligned)[MYO] > 0.92  # only resampling differences remain


def contrast(image: sitk.Image, mask: sitk.Image) -> float:
    """Myocardium against what borders it outside (blood pools and surrounding tissue), in noise-free units."""
    values, labels = array(image).astype(float), array(mask)
    myo = labels == MYO
    ring = np.zeros_like(myo)
    for axis in (1, 2):
        for shift in (-3, 3):
            ring |= np.roll(myo, shift, axis=axis)
    ring &= ~myo
    background = values[ring & (labels == 0)]
    return float(abs(np.median(background) - np.median(values[myo])) / values[labels == LV].std())


def test_lge_nulls_the_myocardium(pairs):
    # The outer myocardial border stands out on cine and hardly on LGE: LGE alone is harder.
    for pair in pairs:
        assert contrast(pair.cine, pair.cine_mask) > 2 * contrast(pair.lge, pair.lge_mask)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_abdominal_geometry_labels_and_volumes(modality):
    image, labels = abdominal_volume(modality, seed=1)
    assert Grid.of(labels) == Grid.of(image)
    expected_spacing = {"CT": (1.75, 1.75, 5.0), "MR": (1.25, 1.25, 7.7)}[modality]
    assert image.GetSpacing() == expected_spacing
    values = array(labels)
    assert set(np.unique(values)) == {0, *ABDOMEN.values}
    ml = {label.name: (values == label.value).sum() * np.prod(image.GetSpacing()) / 1000 for label in ABDOMEN.labels}
    assert 1000 < ml["liver"] < 2500 and 80 < ml["spleen"] < 400
    assert 60 < ml["right kidney"] < 250 and 60 < ml["left kidney"] < 250
    # Laterality in LPS: +x is the patient's left.
    x = lambda value: np.argwhere(values == value)[:, 2].mean() * image.GetSpacing()[0] + image.GetOrigin()[0]  # noqa: E731
    assert x(1) < 0 < x(4) and x(2) < 0 < x(3)
    np.testing.assert_array_equal(values, array(abdominal_volume(modality, seed=1)[1]))


def test_ct_in_hounsfield_units_of_one_contrast_phase():
    """Portal-venous, as BTCV: liver 90-125 HU, the spleen a little brighter, kidneys brighter still; an unenhanced
    liver (50-65) beside enhanced kidneys is no scan a model meets."""
    image, labels = abdominal_volume("CT", seed=2)
    hu, values = array(image), array(labels)
    assert image.GetPixelID() == sitk.sitkInt16
    assert np.median(hu[values == 0][:1000]) < -900  # air in the corner of the field of view
    for value, (low, high) in {1: (90, 125), 4: (100, 135), 2: (140, 200), 3: (140, 200)}.items():
        assert low < np.median(hu[values == value]) < high
    assert np.median(hu[values == 1]) < np.median(hu[values == 4])


def test_mr_t2_organ_contrast():
    image, labels = abdominal_volume("MR", seed=2)
    t2, values = array(image), array(labels)
    median = {value: np.median(t2[values == value]) for value in ABDOMEN.values}
    assert median[4] > 1.5 * median[1] and median[2] > 1.5 * median[1]  # spleen and kidneys brighter than liver
    with pytest.raises(ValueError, match="modality must be"):
        abdominal_volume("PET")
