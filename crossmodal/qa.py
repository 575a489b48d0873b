"""The QA measures of a cardiac result that the command line and the Slicer panel share.

Free of PyTorch, so that a Slicer panel can import it before PyTorch is installed.
"""

from __future__ import annotations

import numpy as np

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


def reference_rows(scores: Scores) -> tuple[list[str], list[list]]:
    """Reference scores as a header and one row per mask (Dice, then HD95, per structure)."""
    names = CARDIAC_MYO_LV.names
    rows = [[mask, *(by[n]["dice"] for n in names), *(by[n]["hd95_mm"] for n in names)] for mask, by in scores.items()]
    return ["mask", *(f"Dice {n}" for n in names), *(f"HD95 {n} (mm)" for n in names)], rows
