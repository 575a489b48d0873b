"""The QA measures of a cardiac result that the command line and the Slicer panel share.

Free of PyTorch, so that a Slicer panel can import it before PyTorch is installed.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from crossmodal.errors import InputError
from crossmodal.labels import CARDIAC_MYO_LV

DISAGREEMENT_FLAG = 0.8
"""Slices whose LGE-only and fused foreground masks overlap less than this (Dice) are flagged."""

Scores = dict[str, dict[str, dict[str, float]]]
"""Per mask, per structure: {"dice": ..., "hd95_mm": ...}."""


def slice_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two foregrounds (1 when both are empty)."""
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def disagreeing_slices(agreement: list[float | None]) -> list[int]:
    return [i for i, a in enumerate(agreement) if a is not None and a < DISAGREEMENT_FLAG]


def require_reference(reference: sitk.Image, source: object) -> sitk.Image:
    """A reference LGE mask, refused when it is empty or marks none of the MS-CMRSeg values scored against
    (a mask with other values would score 0 everywhere without saying why)."""
    found = set(np.unique(sitk.GetArrayViewFromImage(reference)).tolist()) - {0}
    if not found & set(CARDIAC_MYO_LV.values):
        expected = ", ".join(f"{label.value} ({label.name})" for label in CARDIAC_MYO_LV.labels)
        holds = f"holds the labels {sorted(found)[:8]}" if found else "is empty"
        raise InputError(source, f"{holds}; a reference LGE mask marks {expected}, the MS-CMRSeg values")
    return reference


def reference_rows(scores: Scores) -> tuple[list[str], list[list]]:
    """Reference scores as a header and one row per mask (Dice, then HD95, per structure)."""
    names = CARDIAC_MYO_LV.names
    rows = [[mask, *(by[n]["dice"] for n in names), *(by[n]["hd95_mm"] for n in names)] for mask, by in scores.items()]
    return ["mask", *(f"Dice {n}" for n in names), *(f"HD95 {n} (mm)" for n in names)], rows
