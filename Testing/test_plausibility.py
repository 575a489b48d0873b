"""Plausibility warnings: anatomy and acquisition common sense applied to inputs and results, without a model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import SimpleITK as sitk

from crossmodal.labels import ABDOMEN
from crossmodal.phantoms import abdominal_volume, cardiac_pair
from crossmodal.plausibility import abdominal_warnings, acquisition_warnings, cardiac_warnings


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


def test_hearts_a_centimetre_or_more_apart_in_the_slice_plane_say_to_prefer_the_lge_only_mask():
    """Measured on the shared pairs: from about 10 mm in the LGE's plane the fused mask loses to the LGE-only one."""
    pair = cardiac_pair(seed=3)
    (warning,) = cardiac_warnings(pair.lge_mask, moved(pair.cine_mask, 12, 5))
    assert re.match(r"the left ventricle lies 1\d mm apart in the cine and the LGE within the LGE's slices", warning), warning
    assert "prefer the LGE-only mask" in warning
    assert cardiac_warnings(pair.lge_mask, moved(pair.cine_mask, 12, 5), prealigned=True) == []  # segment moved the cine onto the LGE's heart
    (header,) = cardiac_warnings(pair.lge_mask, moved(pair.cine_mask, 30, 20), prealigned=True)
    assert "headers" in header and "moved onto the LGE's heart" in header
    normal = np.asarray(pair.cine_mask.GetDirection()).reshape(3, 3)[:, 2]
    along_normal = sitk.Image(pair.cine_mask)
    along_normal.SetOrigin(tuple(np.asarray(pair.cine_mask.GetOrigin()) + normal * 14))  # through the slices: not an in-plane misalignment
    assert cardiac_warnings(pair.lge_mask, along_normal) == []


def tagged(image: sitk.Image, **tags: str) -> sitk.Image:
    """A copy of ``image`` with DICOM header tags, as the series reader keeps them."""
    names = {"sequence": "0018|0020", "inversion_ms": "0018|0082", "description": "0008|103e"}
    copy = sitk.Image(image)
    for name, value in tags.items():
        copy.SetMetaData(names[name], value)
    return copy


def test_an_lge_looking_cine_and_a_cine_looking_lge_are_told_by_their_headers():
    pair = cardiac_pair(seed=3)
    sources = {"LGE": "lge_series", "cine": "cine_series"}
    lge, cine = tagged(pair.lge, sequence="GR\\IR", inversion_ms="280"), tagged(pair.cine, sequence="GR", description="SAX cine retro")
    assert acquisition_warnings({"LGE": lge, "cine": cine}, sources) == []
    assert acquisition_warnings({"LGE": pair.lge, "cine": pair.cine}, sources) == []  # no header: nothing to tell
    swapped = {"LGE": tagged(pair.cine, sequence="GR", description="SAX cine retro"), "cine": tagged(pair.lge, sequence="GR\\IR", inversion_ms="280")}
    assert acquisition_warnings(swapped, sources) == [
        "lge_series: the LGE's Series Description \"SAX cine retro\" names a cine acquisition: were the cine and the LGE swapped?",
        "cine_series: the cine was acquired with an inversion pulse (Inversion Time 280 ms), as an LGE is: were the cine and the LGE swapped?"]
    plain_gradient_echo = {"LGE": tagged(pair.lge, sequence="GR"), "cine": tagged(pair.cine, sequence="IR\\GR")}
    assert acquisition_warnings(plain_gradient_echo, sources) == [
        "lge_series: the LGE was acquired without an inversion pulse (Scanning Sequence GR, no Inversion Time); late gadolinium enhancement is imaged "
        "with one: is this a cine?",
        "cine_series: the cine was acquired with an inversion pulse (Scanning Sequence IR), as an LGE is: were the cine and the LGE swapped?"]
    (warning,) = acquisition_warnings({"LGE": lge, "cine": tagged(pair.cine, description="LGE_PSIR_SAX")}, sources)
    assert warning == "cine_series: the cine's Series Description \"LGE_PSIR_SAX\" names an LGE acquisition: were the cine and the LGE swapped?"
    assert acquisition_warnings({"LGE": lge, "cine": tagged(pair.cine, description="Late Enhancement SA")}, sources) != []
    for description in ("cine_late_systole_TFE", "Deleted_stack", "sa_cine_flge2"):  # words, not letters
        assert acquisition_warnings({"LGE": lge, "cine": tagged(pair.cine, description=description)}, sources) == [], description


def test_one_image_given_as_both_cine_and_lge_is_said():
    lge = cardiac_pair(seed=3).lge
    (warning,) = acquisition_warnings({"LGE": lge, "cine": sitk.Image(lge)}, {"LGE": "a.nii.gz", "cine": "b.nii.gz"})
    assert warning == "b.nii.gz and a.nii.gz hold the same image: the cine and the LGE must be two acquisitions"


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
