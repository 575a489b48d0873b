"""Baselines that carry the cine mask onto the LGE without learning (rows of MMSDNet's Table 1).

* copy masks: the cine mask as it lies in physical space, on the LGE's common grid (pairing already
  puts the nearest cine slice there), i.e. what one gets assuming the heart did not move;
* registration: per paired slice, the cine registered to the LGE with ANTs, an affine stage with
  mutual information and then symmetric diffeomorphic normalisation (SyN) with cross-correlation,
  as in the paper; the cine mask follows the transform (nearest neighbour).

Both return class maps on the common grid, (slices, H, W), 0 where a slice has no cine. ANTs samples
the affine metric randomly over several threads, so registration results vary slightly from run to
run (about +/- 0.04 myocardium Dice on MS-CMRSeg) even with a fixed seed.
"""

from __future__ import annotations

import numpy as np

from crossmodal.training.cardiac_data import CardiacPatient


def copy_masks(patient: CardiacPatient) -> np.ndarray:
    """The cine mask, unmoved, on each LGE slice's grid."""
    if patient.cine_mask is None:
        raise ValueError(f"patient {patient.patient} has no cine mask to copy")
    return np.where(patient.paired[:, None, None], patient.cine_mask, 0).astype(np.uint8)


def register_masks(patient: CardiacPatient, *, spacing_mm: float = 1.0, seed: int = 0) -> np.ndarray:
    """The cine mask warped by an affine (MI) + SyN (CC) registration of each cine slice onto its LGE slice."""
    import ants  # optional dependency (the "registration" extra): only this baseline needs it

    moved = copy_masks(patient)
    for k in np.flatnonzero(patient.paired):
        fixed = ants.from_numpy(patient.lge[k].astype(np.float32), spacing=(spacing_mm, spacing_mm))
        moving = ants.from_numpy(patient.cine[k].astype(np.float32), spacing=(spacing_mm, spacing_mm))
        mask = ants.from_numpy(patient.cine_mask[k].astype(np.float32), spacing=(spacing_mm, spacing_mm))
        found = ants.registration(
            fixed, moving, type_of_transform="SyN", aff_metric="mattes", syn_metric="CC", random_seed=seed
        )
        warped = ants.apply_transforms(fixed, mask, found["fwdtransforms"], interpolator="nearestNeighbor")
        moved[k] = np.rint(warped.numpy()).astype(np.uint8)
    return moved
