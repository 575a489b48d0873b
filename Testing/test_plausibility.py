"""Plausibility warnings: anatomy and acquisition common sense applied to inputs and results, without a model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import SimpleITK as sitk

from crossmodal.labels import ABDOMEN
from crossmodal.phantoms import abdominal_volume, cardiac_pair
from crossmodal.plausibility import abdominal_warnings, cardiac_warnings


def volumes_ml(labels: sitk.Image) -> dict[str, float]:
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000
    array = sitk.GetArrayViewFromImage(labels)
    return {label.name: float((array == label.value).sum()) * voxel_ml for label in ABDOMEN.labels}


def moved(image: sitk.Image, along_row_mm: float, along_column_mm: float) -> sitk.Image:
    """``image`` with its origin moved in its own plane, as a wrong header would place it."""
    copy = sitk.Image(image)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    copy.SetOrigin(tuple(np.asarray(image.GetOrigin()) + direction[:, 0] * along_row_mm + direction[:, 1] * along_column_mm))
    return copy


def test_hearts_a_few_mm_apart_pass_and_several_cm_apart_are_flagged():
    pair = cardiac_pair(seed=3)
    assert cardiac_warnings(pair.lge_mask, pair.cine_mask) == []
    assert cardiac_warnings(pair.lge_mask, moved(pair.cine_mask, 6, 4)) == []  # a breath-hold's worth
    (warning,) = cardiac_warnings(pair.lge_mask, moved(pair.cine_mask, 30, 20))
    assert re.match(r"the left ventricle lies 3\d mm apart in the cine and the LGE", warning), warning  # 36 mm moved, the phantom's own offset besides
    assert cardiac_warnings(pair.lge_mask, None) == [] and cardiac_warnings(pair.lge_mask, pair.cine_mask * 0) == []


@pytest.fixture(scope="module")
def abdomen() -> tuple[sitk.Image, sitk.Image]:
    return abdominal_volume("CT", seed=3)


def test_a_plausible_abdomen_gives_no_warning(abdomen):
    image, labels = abdomen
    assert abdominal_warnings(image, labels, ABDOMEN, volumes_ml(labels), "ct.nii.gz") == []


def test_a_mirrored_result_is_flagged_once_naming_the_crossed_organs(abdomen):
    image, labels = abdomen
    mirrored = sitk.Flip(labels, [True, False, False])  # left-right, in voxels: the organs change sides in physical space
    mirrored.CopyInformation(labels)
    (warning,) = abdominal_warnings(image, mirrored, ABDOMEN, volumes_ml(mirrored), "ct.nii.gz")
    assert "the liver lies on the patient's left of the spleen" in warning and "the right kidney lies on the patient's left of the left kidney" in warning
    assert warning.endswith("a left-right flipped image header, or a confused result")


def test_volumes_outside_adult_ranges_and_missing_organs_are_flagged(abdomen):
    image, labels = abdomen
    volumes = {**volumes_ml(labels), "liver": 4100.0, "spleen": 0.0}
    warnings = abdominal_warnings(image, sitk.Mask(labels, labels != 4), ABDOMEN, volumes, "ct.nii.gz")
    assert warnings == ["the liver measures 4100 mL, outside the 700-3000 mL of adult livers: disease, or a wrong segmentation; look at it",
                        "no spleen was found: the field of view may not include it, or the model missed it"]


def test_a_thin_slab_or_another_body_part_cannot_be_the_abdomen(abdomen):
    image, labels = abdomen
    slab, slab_labels = image[:, :, 10:24], labels[:, :, 10:24]  # 14 slices of 5 mm
    warnings = abdominal_warnings(slab, slab_labels, ABDOMEN, volumes_ml(labels), "lge.nii.gz")
    assert warnings[0].startswith("lge.nii.gz: is only 70 mm thick along its K axis")
    tagged = sitk.Image(image)
    tagged.SetMetaData("0018|0015", "HEART ")
    assert abdominal_warnings(tagged, labels, ABDOMEN, volumes_ml(labels), "series") == ["series: its DICOM Body Part Examined is HEART, not the abdomen"]
    tagged.SetMetaData("0018|0015", "ABDOMEN")
    assert abdominal_warnings(tagged, labels, ABDOMEN, volumes_ml(labels), "series") == []
