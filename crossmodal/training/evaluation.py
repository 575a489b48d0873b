"""Scoring LGE predictions where it matters: on the LGE's own voxel grid, against its manual mask.

Predictions are made on the common paired grid, then put back onto the native LGE volume with
:func:`crossmodal.pairing.write_back` (probabilities interpolated, then arg-maxed), and compared with
the native mask, per volume and per slice. Scoring on the common grid instead would grade the
resampled reference, not the radiologist's.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from crossmodal.labels import CARDIAC_MYO_LV
from crossmodal.pairing import write_back
from crossmodal.scoring import structure_dice, volume_and_slice_dice
from crossmodal.training.cardiac_data import CardiacPatient
from crossmodal.training.methods import Method


def predict_patient(method: Method, patient: CardiacPatient, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Per output of ``method``: probabilities (classes, slices, H, W) on the common grid."""
    cine, lge = torch.from_numpy(patient.cine[:, None]), torch.from_numpy(patient.lge[:, None])
    paired = torch.from_numpy(patient.paired)
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(lge), batch_size):
        chunk = slice(start, start + batch_size)
        for name, probs in method.predict(cine[chunk], lge[chunk], paired[chunk]).items():
            parts.setdefault(name, []).append(probs)
    return {name: torch.cat(p).permute(1, 0, 2, 3).numpy() for name, p in parts.items()}


def score_native(patient: CardiacPatient, probabilities: np.ndarray) -> dict:
    """Dice per structure (and their mean) on the native LGE grid, per volume and per slice."""
    if patient.lge_reference is None:
        raise ValueError(f"patient {patient.patient} has no LGE mask to score against")
    prediction = write_back(patient.stack, probabilities, "LGE", probabilities=True)
    return score_labels(patient, sitk.GetArrayFromImage(prediction))


def score_labels(patient: CardiacPatient, prediction: np.ndarray) -> dict:
    """Dice of a native-grid class map (slices, rows, columns) against the patient's LGE mask."""
    return volume_and_slice_dice(prediction, sitk.GetArrayFromImage(patient.lge_reference), CARDIAC_MYO_LV)


def score_common_grid(patient: CardiacPatient, probabilities: np.ndarray) -> float:
    """Mean MYO/LV Dice on the common grid: a quick validation score for choosing checkpoints."""
    if patient.lge_mask is None:
        raise ValueError(f"patient {patient.patient} has no LGE mask to score against")
    return float(np.mean(list(structure_dice(np.argmax(probabilities, axis=0), patient.lge_mask, CARDIAC_MYO_LV, classes=True).values())))


def validation_score(method: Method, patients: list[CardiacPatient]) -> float:
    """Mean of :func:`score_common_grid` over ``patients`` and every output of ``method``.

    Checkpoints are chosen for all of a method's outputs: MMSDNet's LGE-only result is what a user
    without a cine gets, and a checkpoint whose fused result is good but whose LGE-only result has
    collapsed must not win.
    """
    scores = [score_common_grid(p, probs) for p in patients for probs in predict_patient(method, p).values()]
    return float(np.mean(scores))
