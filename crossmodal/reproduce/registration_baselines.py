"""Baselines that carry the cine mask onto the LGE without learning (rows of MMSDNet's Table 1).

* copy masks: the cine mask as it lies in physical space, on the LGE's common grid (pairing already
  puts the nearest cine slice there), i.e. what one gets assuming the heart did not move;
* registration: per paired slice, the cine registered to the LGE with ANTs, an affine stage with
  mutual information and then symmetric diffeomorphic normalisation (SyN) with cross-correlation,
  as in the paper; the cine mask follows the transform (nearest neighbour).

Both return class maps on the common grid, (slices, H, W), 0 where a slice has no cine. Registration is
repeatable: one seed, one ITK thread (see :func:`repeatable_ants`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from crossmodal.training.cardiac_data import CardiacPatient


def copy_masks(patient: CardiacPatient) -> np.ndarray:
    """The cine mask, unmoved, on each LGE slice's grid."""
    if patient.cine_mask is None:
        raise ValueError(f"patient {patient.patient} has no cine mask to copy")
    return np.where(patient.paired[:, None, None], patient.cine_mask, 0).astype(np.uint8)


ITK_THREADS = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


@contextmanager
def repeatable_ants(seed: int) -> Iterator[None]:
    """ANTs samples its affine metric at random points from several threads, so its result varies from run to run
    (myocardium Dice by about +/- 0.04). antspyx 0.6.3 ignores ``registration(random_seed=...)``: the seed goes
    through its config, and ITK gets one thread, for the calls inside this block only."""
    import ants

    previous = ants.config._random_seed, os.environ.get(ITK_THREADS)
    ants.config._random_seed, os.environ[ITK_THREADS] = seed, "1"
    try:
        yield
    finally:
        ants.config._random_seed = previous[0]
        if previous[1] is None:
            os.environ.pop(ITK_THREADS, None)
        else:
            os.environ[ITK_THREADS] = previous[1]


def register_masks(patient: CardiacPatient, *, spacing_mm: float = 1.0, seed: int = 1) -> np.ndarray:
    """The cine mask warped by an affine (MI) + SyN (CC) registration of each cine slice onto its LGE slice; the
    same result for the same ``seed`` (see :func:`repeatable_ants`)."""
    import ants  # optional dependency (the "registration" extra): only this baseline needs it

    moved = copy_masks(patient)
    with repeatable_ants(seed):
        for k in np.flatnonzero(patient.paired):
            moved[k] = _register_slice(ants, patient, k, spacing_mm)
    return moved


def _register_slice(ants, patient: CardiacPatient, k: int, spacing_mm: float) -> np.ndarray:
    fixed = ants.from_numpy(patient.lge[k].astype(np.float32), spacing=(spacing_mm, spacing_mm))
    moving = ants.from_numpy(patient.cine[k].astype(np.float32), spacing=(spacing_mm, spacing_mm))
    mask = ants.from_numpy(patient.cine_mask[k].astype(np.float32), spacing=(spacing_mm, spacing_mm))
    found = ants.registration(fixed, moving, type_of_transform="SyN", aff_metric="mattes", syn_metric="CC")
    warped = ants.apply_transforms(fixed, mask, found["fwdtransforms"], interpolator="nearestNeighbor")
    return np.rint(warped.numpy()).astype(np.uint8)
