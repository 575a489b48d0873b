"""Plausibility of inputs and results against anatomy and acquisition common sense.

Warnings, never refusals: disease and unusual protocols exist, so each warning says what looked wrong and
what to check, and the result is still written. They reach the user as warning events, in
``segment.json`` (``warnings``), at the top of the QA report and in the panels. Free of PyTorch.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from crossmodal.labels import CARDIAC_MYO_LV, LabelSet

HEART_OFFSET_MM = 20.0
"""Between the cine and LGE of one patient the left ventricle moves a few mm (breath-holds; at most 12 mm on
the shared data); more than this is a header problem (the shared data's wrong cine headers put it 20-57 mm off)."""
ABDOMEN_THICKNESS_MM = 120.0
"""Liver, kidneys and spleen span about 15-20 cm from head to feet; a volume thinner than this along any of
its axes cannot hold them (a cardiac short-axis stack is 75-90 mm thick)."""
DICOM_BODY_PART = "0018|0015"
ABDOMINAL_BODY_PARTS = ("ABDOMEN", "ABDOMENPELVIS", "CHESTABDOMEN", "CHESTABDOMENPELVIS", "TORSO", "WHOLEBODY", "LIVER", "KIDNEY", "SPLEEN")


def centroid_mm(labels: sitk.Image, value: int | None = None) -> np.ndarray | None:
    """The physical (LPS) centre of the voxels holding ``value`` (any label when None), or None where there are none."""
    array = sitk.GetArrayViewFromImage(labels)
    where = np.argwhere(array != 0 if value is None else array == value)
    if not len(where):
        return None
    return np.asarray(labels.TransformContinuousIndexToPhysicalPoint(where.mean(axis=0)[::-1].tolist()))


def cardiac_warnings(lge_mask: sitk.Image | None, cine_mask: sitk.Image | None) -> list[str]:
    """The left ventricle found far apart in the LGE and the cine, each segmented on its own grid: the two
    images' headers disagree about where the heart is, and the fused result cannot be trusted."""
    if lge_mask is None or cine_mask is None:
        return []
    lv = CARDIAC_MYO_LV.labels[1].value
    in_lge, in_cine = centroid_mm(lge_mask, lv), centroid_mm(cine_mask, lv)
    if in_lge is None or in_cine is None:
        return []
    distance = float(np.linalg.norm(in_lge - in_cine))
    if distance <= HEART_OFFSET_MM:
        return []
    return [f"the left ventricle lies {distance:.0f} mm apart in the cine and the LGE (in physical space); between two breath-holds the heart "
            "moves a few mm, so the images' headers (origin, orientation) disagree: check them before trusting the fused result"]


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
