"""Plausibility of inputs and results against anatomy and acquisition common sense.

Warnings, never refusals: disease and unusual protocols exist, so each warning says what looked wrong and
what to check, and the result is still written. They reach the user as warning events, in
``segment.json`` (``warnings``), at the top of the QA report and in the panels. Free of PyTorch.
"""

from __future__ import annotations

import re

import numpy as np
import SimpleITK as sitk

from crossmodal.labels import CARDIAC_MYO_LV, LabelSet

HEART_OFFSET_MM = 20.0
"""Between the cine and LGE of one patient the left ventricle moves a few mm (breath-holds; at most 12 mm on
the shared data); more than this is a header problem (the shared data's wrong cine headers put it 20-57 mm off)."""
FUSION_OFFSET_MM = 10.0
"""In the LGE's slice plane, the two left ventricles farther apart than this and the fused mask is no longer
better than the LGE-only one: measured with the bundled model on the 10 labelled shared pairs with the cine
moved on purpose, fused beats LGE-only up to about 5 mm and loses from 10 mm on (MYO 0.79 vs 0.82 at 10 mm,
0.64 vs 0.82 at 20 mm); the real pairs' in-plane offsets are 1-12 mm (median 5)."""
ABDOMEN_THICKNESS_MM = 120.0
"""Liver, kidneys and spleen span about 15-20 cm from head to feet; a volume thinner than this along any of
its axes cannot hold them (a cardiac short-axis stack is 75-90 mm thick)."""
DICOM_BODY_PART = "0018|0015"
DICOM_SCANNING_SEQUENCE = "0018|0020"
DICOM_INVERSION_TIME = "0018|0082"
DICOM_SERIES_DESCRIPTION = "0008|103e"
LGE_WORDS = re.compile(r"(?<![a-z])(lge|psir|mag_?ir|mde|viability|delayed|late[ _-]?(gd|gad|enh[a-z]*))(?![a-z])", re.IGNORECASE)
CINE_WORDS = re.compile(r"(?<![a-z])(cine|b?ssfp|trufi|truefisp|fiesta|b?tfe|balanced)(?![a-z])", re.IGNORECASE)
"""Words that name an LGE or a cine acquisition in vendors' Series Descriptions."""
ABDOMINAL_BODY_PARTS = ("ABDOMEN", "ABDOMENPELVIS", "CHESTABDOMEN", "CHESTABDOMENPELVIS", "TORSO", "WHOLEBODY", "LIVER", "KIDNEY", "SPLEEN")


def centroid_mm(labels: sitk.Image, value: int | None = None) -> np.ndarray | None:
    """The physical (LPS) centre of the voxels holding ``value`` (any label when None), or None where there are none."""
    array = sitk.GetArrayViewFromImage(labels)
    where = np.argwhere(array != 0 if value is None else array == value)
    if not len(where):
        return None
    return np.asarray(labels.TransformContinuousIndexToPhysicalPoint(where.mean(axis=0)[::-1].tolist()))


def cardiac_warnings(lge_mask: sitk.Image | None, cine_mask: sitk.Image | None, prealigned: bool = False) -> list[str]:
    """The left ventricle found far apart in the LGE and the cine, each segmented on its own grid: beyond
    :data:`HEART_OFFSET_MM` the images' headers disagree about where the heart is; beyond
    :data:`FUSION_OFFSET_MM` in the LGE's slice plane the alignment does not make up for it, unless the cine
    was moved onto the LGE's heart before fusion (``prealigned``)."""
    if lge_mask is None or cine_mask is None:
        return []
    lv = CARDIAC_MYO_LV.labels[1].value
    in_lge, in_cine = centroid_mm(lge_mask, lv), centroid_mm(cine_mask, lv)
    if in_lge is None or in_cine is None:
        return []
    offset = in_lge - in_cine
    normal = np.asarray(lge_mask.GetDirection()).reshape(3, 3)[:, 2]
    distance, in_plane = float(np.linalg.norm(offset)), float(np.linalg.norm(offset - normal * (offset @ normal)))
    if distance > HEART_OFFSET_MM:
        moved = " (the cine was moved onto the LGE's heart before fusion)" if prealigned else ""
        return [f"the left ventricle lies {distance:.0f} mm apart in the cine and the LGE (in physical space); between two breath-holds the heart "
                f"moves a few mm, so the images' headers (origin, orientation) disagree: check them before trusting the fused result{moved}"]
    if in_plane > FUSION_OFFSET_MM and not prealigned:
        return [f"the left ventricle lies {in_plane:.0f} mm apart in the cine and the LGE within the LGE's slices; beyond "
                f"{FUSION_OFFSET_MM:.0f} mm the alignment does not make up for it and the fused mask is less accurate than the LGE-only one: "
                "prefer the LGE-only mask, or check the cine (another breath-hold, another position)"]
    return []


def acquisition_warnings(images: dict[str, sitk.Image], sources: dict[str, str]) -> list[str]:
    """A cine that was acquired as an LGE is, or the other way round, told by the DICOM header where there is one.

    LGE is an inversion-recovery acquisition (Inversion Time set, Scanning Sequence IR); a cine is a
    balanced SSFP without an inversion pulse. The images' contrast cannot tell them apart reliably
    (myocardium/blood-pool ratio 0.21-0.68 on the shared LGE, 0.37-0.54 on the cine), so a NIfTI pair
    without a header is only checked for being one image given twice.
    """
    warnings = []
    for role, image in images.items():
        source, inversion, description = sources[role], _inversion(image), _tag(image, DICOM_SERIES_DESCRIPTION)
        if role == "cine" and inversion:
            warnings.append(f"{source}: the cine was acquired with an inversion pulse ({inversion}), as an LGE is: were the cine and the LGE swapped?")
        elif role == "cine" and LGE_WORDS.search(description):
            warnings.append(f"{source}: the cine's Series Description \"{description}\" names an LGE acquisition: were the cine and the LGE swapped?")
        elif role == "LGE" and CINE_WORDS.search(description):
            warnings.append(f"{source}: the LGE's Series Description \"{description}\" names a cine acquisition: were the cine and the LGE swapped?")
        elif role == "LGE" and image.HasMetaDataKey(DICOM_SCANNING_SEQUENCE) and not inversion:
            warnings.append(f"{source}: the LGE was acquired without an inversion pulse (Scanning Sequence {_tag(image, DICOM_SCANNING_SEQUENCE)}, no "
                            "Inversion Time); late gadolinium enhancement is imaged with one: is this a cine?")
    if "LGE" in images and "cine" in images and _same_image(images["LGE"], images["cine"]):
        warnings.append(f"{sources['cine']} and {sources['LGE']} hold the same image: the cine and the LGE must be two acquisitions")
    return warnings


def _tag(image: sitk.Image, tag: str) -> str:
    return image.GetMetaData(tag).strip() if image.HasMetaDataKey(tag) else ""


def _inversion(image: sitk.Image) -> str:
    """How the header says the image was inversion-prepared ("" when it does not)."""
    sequence = _tag(image, DICOM_SCANNING_SEQUENCE).upper().split("\\")
    try:
        inversion_ms = float(_tag(image, DICOM_INVERSION_TIME) or 0)
    except ValueError:
        inversion_ms = 0.0
    if inversion_ms > 0:
        return f"Inversion Time {inversion_ms:.0f} ms"
    return "Scanning Sequence IR" if "IR" in sequence else ""


def _same_image(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing()) and np.allclose(a.GetOrigin(), b.GetOrigin())
            and np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b)))


def abdominal_warnings(image: sitk.Image, labels: sitk.Image, label_set: LabelSet, volumes_ml: dict[str, float], source: str) -> list[str]:
    """What an abdominal result should satisfy: a field of view that can hold the organs, a body part that is
    the abdomen, every organ present with an adult volume, each on its own side of the body."""
    warnings = []
    extent = np.asarray(image.GetSize()) * np.asarray(image.GetSpacing())
    if extent.min() < ABDOMEN_THICKNESS_MM:
        axis = int(extent.argmin())
        warnings.append(f"{source}: is only {extent[axis]:.0f} mm thick along its {'IJK'[axis]} axis; the liver, kidneys and spleen span about "
                        "15-20 cm from head to feet, so some are missing or cut: is this an abdominal volume?")
    if image.HasMetaDataKey(DICOM_BODY_PART):
        part = image.GetMetaData(DICOM_BODY_PART).strip().upper().replace(" ", "")
        if part and part not in ABDOMINAL_BODY_PARTS:
            warnings.append(f"{source}: its DICOM Body Part Examined is {part}, not the abdomen")
    for label in label_set.labels:
        ml = volumes_ml.get(label.name, 0.0)
        if ml < 1.0:
            warnings.append(f"no {label.name} was found: the field of view may not include it, or the model missed it")
        elif label.adult_ml is not None and not label.adult_ml[0] <= ml <= label.adult_ml[1]:
            low, high = label.adult_ml
            warnings.append(f"the {label.name} measures {ml:.0f} mL, outside the {low:.0f}-{high:.0f} mL of adult {label.name}s: disease, or a wrong "
                            "segmentation; look at it")
    centres = {label: centroid_mm(labels, label.value) for label in label_set.labels if label.side is not None}
    right = [(label, c) for label, c in centres.items() if c is not None and label.side == "right"]
    left = [(label, c) for label, c in centres.items() if c is not None and label.side == "left"]
    crossed = [f"the {r.name} lies on the patient's left of the {lab.name}" for r, rc in right for lab, lc in left if rc[0] > lc[0]]  # LPS: +x is left
    if crossed:
        warnings.append("; ".join(crossed) + ": a left-right flipped image header, or a confused result")
    return warnings
