"""The QA measures of a cardiac result that the command line and the Slicer panel share.

Free of PyTorch, so that a Slicer panel can import it before PyTorch is installed.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from crossmodal.errors import InputError
from crossmodal.labels import CARDIAC_MYO_LV, MSCMRSEG
from crossmodal.plausibility import centroid_mm
from crossmodal.scoring import Scores

DISAGREEMENT_FLAG = 0.8
"""Slices whose LGE-only and fused foreground masks overlap less than this (Dice) are flagged."""

MaskScores = dict[str, Scores]
"""Per mask (fused, LGE only, ...), its :data:`~crossmodal.scoring.Scores`."""


def disagreeing_slices(agreement: list[float | None]) -> list[int]:
    return [i for i, a in enumerate(agreement) if a is not None and a < DISAGREEMENT_FLAG]


def require_reference(reference: sitk.Image, source: object, lge: sitk.Image | None = None) -> sitk.Image:
    """A reference LGE mask: a label map of MS-CMRSeg values (an intensity image, or other label values, would
    score nonsense without saying why) marking the myocardium or LV, over the LGE in physical space when
    ``lge`` is given. It may lie on another grid than the LGE: the masks are resampled onto it (nearest
    neighbour, in physical space) to be scored."""
    array = sitk.GetArrayViewFromImage(reference)
    MSCMRSEG.check(array, str(source))
    found = set(np.unique(array).tolist()) - {0}
    if not found & set(CARDIAC_MYO_LV.values):
        expected = ", ".join(f"{label.value} ({label.name})" for label in CARDIAC_MYO_LV.labels)
        holds = f"marks only {sorted(found)}" if found else "is empty"
        raise InputError(source, f"{holds}; a reference LGE mask marks {expected}, the MS-CMRSeg values")
    if lge is not None:
        index = np.asarray(lge.TransformPhysicalPointToContinuousIndex(centroid_mm(reference).tolist()))
        if np.any(index < -0.5) or np.any(index > np.asarray(lge.GetSize()) - 0.5):
            raise InputError(source, "marks structures outside the LGE's field of view in physical space: the reference of another "
                                     "image, or a wrong header")
    return reference


def reference_rows(scores: MaskScores) -> tuple[list[str], list[list]]:
    """Reference scores as a header and one row per mask (Dice, then HD95, per structure)."""
    names = CARDIAC_MYO_LV.names
    rows = [[mask, *(by[n]["dice"] for n in names), *(by[n]["hd95_mm"] for n in names)] for mask, by in scores.items()]
    return ["mask", *(f"Dice {n}" for n in names), *(f"HD95 {n} (mm)" for n in names)], rows
