"""Anatomy the network does not know: each organ is one piece, and a paired organ has one piece on each side.

A voxel-wise network leaves islands (a scrap of "liver" in the spleen, "kidney" in the bowel) and can
name a kidney after the wrong side. Here each organ keeps its largest 3-D connected component; organs
that are one organ on two sides (the same anatomical code with a right and a left modifier, such as
the kidneys) are pooled first, their two largest pieces kept, and each named after the side of the body
it lies on when the network's own naming does not tell them apart. A pooled piece in which the network did
tell two organs apart, far apart left-right, is two organs joined by a bridge of false voxels (two kidneys
across the midline): each keeps its own named part.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import SimpleITK as sitk

from crossmodal.labels import Label, LabelSet
from crossmodal.plausibility import centroid_mm


def keep_organ_components(labels: sitk.Image, label_set: LabelSet) -> sitk.Image:
    """``labels`` (file values of ``label_set``) with every organ reduced to its anatomically possible pieces."""
    array = sitk.GetArrayFromImage(labels)
    cleaned = np.zeros_like(array)
    groups: dict[object, list[Label]] = defaultdict(list)
    for label in label_set.labels:
        groups[label.code if label.side is not None and label.modifier is not None else label].append(label)
    for members in groups.values():
        pooled = np.isin(array, [m.value for m in members])
        if not pooled.any():
            continue
        if len(members) == 1:
            (piece,) = _largest_pieces(labels, pooled, 1)
            cleaned[piece] = members[0].value
            continue
        # three: once the largest is split in two, the third-largest piece may outsize one of its parts
        parts = [part for piece in _largest_pieces(labels, pooled, 3) for part in _organs_told_apart(labels, array, piece, members)]
        pieces = sorted(parts, key=np.count_nonzero, reverse=True)[:2]
        named = [_majority(array[piece], members) for piece in pieces]
        if len(pieces) == 2 and named[0] is named[1]:
            named = _by_side(labels, pieces, members)
        for piece, label in zip(pieces, named):
            cleaned[piece] = label.value
    return _on_grid(labels, cleaned)


def _on_grid(reference: sitk.Image, array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8) if array.dtype == bool else array)
    image.CopyInformation(reference)
    return image


def _largest_pieces(reference: sitk.Image, mask: np.ndarray, count: int) -> list[np.ndarray]:
    """The ``count`` largest face-connected pieces of ``mask``, largest first."""
    pieces = sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(_on_grid(reference, mask)), sortByObjectSize=True))
    return [pieces == i for i in range(1, min(count, int(pieces.max())) + 1)]


PAIRED_ORGANS_APART_MM = 60.0
"""How far apart left-right the two named parts of a pooled piece must lie to be two organs: kidney centroids lie
10-13 cm apart; the two halves of one kidney named after different sides lie within about 3 cm."""


def _organs_told_apart(reference: sitk.Image, array: np.ndarray, piece: np.ndarray, members: list[Label]) -> list[np.ndarray]:
    """``piece`` split into the largest part of each organ the network named in it when it named both (each a fifth of
    the piece or more), on their own sides and :data:`PAIRED_ORGANS_APART_MM` apart; otherwise ``piece`` alone."""
    parts = [piece & (array == m.value) for m in _right_and_left(members)]
    if min(np.count_nonzero(p) for p in parts) < 0.2 * np.count_nonzero(piece):
        return [piece]
    x_right, x_left = (centroid_mm(_on_grid(reference, p))[0] for p in parts)
    if x_left - x_right < PAIRED_ORGANS_APART_MM:  # LPS +x is the patient's left
        return [piece]
    return [_largest_pieces(reference, p, 1)[0] for p in parts]


def _right_and_left(members: list[Label]) -> tuple[Label, Label]:
    right, left = (next(m for m in members if m.side == side) for side in ("right", "left"))
    return right, left


def _majority(values: np.ndarray, members: list[Label]) -> Label:
    return max(members, key=lambda m: int((values == m.value).sum()))


def _by_side(reference: sitk.Image, pieces: list[np.ndarray], members: list[Label]) -> list[Label]:
    """Name each piece after the side of the body it lies on: LPS +x is the patient's left."""
    x = [centroid_mm(_on_grid(reference, p))[0] for p in pieces]
    right, left = _right_and_left(members)
    return [right, left] if x[0] < x[1] else [left, right]
