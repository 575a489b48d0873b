"""Dual-stream FCN inference on one abdominal CT or MR volume, with the organs back on the input's own grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from crossmodal.abdominal import labels_on_source, looks_like, predict_probabilities, prepare_volume
from crossmodal.bundles import ModelCard
from crossmodal.errors import InputError

DICOM_MODALITY_TAG = "0008|0060"


@dataclass
class AbdominalResult:
    labels: sitk.Image
    """The card's label values (e.g. 1 liver .. 4 spleen) on the input's own voxel grid."""
    modality: str
    modality_from: str
    """How the stream was chosen: "given", "DICOM tag" or "intensities"."""
    volumes_ml: dict[str, float]
    """Per organ name: its segmented volume."""


def guess_modality(image: sitk.Image) -> tuple[str, str]:
    """(modality, how it was decided): the DICOM Modality tag when the image carries it, else the intensity range."""
    if image.HasMetaDataKey(DICOM_MODALITY_TAG):
        tag = image.GetMetaData(DICOM_MODALITY_TAG).strip().upper()
        if tag in ("CT", "MR"):
            return tag, "DICOM tag"
    return looks_like(sitk.GetArrayViewFromImage(image)), "intensities"


def segment_abdominal(
    network: torch.nn.Module,
    card: ModelCard,
    image: sitk.Image,
    modality: str | None = None,
    *,
    device: torch.device | str = "cpu",
    source: str = "image",
) -> AbdominalResult:
    """Segment the organs of ``image`` with the stream of ``modality`` (guessed when ``None``)."""
    modality_from = "given"
    if modality is None:
        modality, modality_from = guess_modality(image)
    streams = card.hyperparameters["streams"]
    if modality not in streams:
        raise InputError(source, f"is {modality}, but model {card.id!r} has streams for {', '.join(streams)} only")
    window = card.preprocessing.get("ct_window")
    prepared = prepare_volume(image, modality, spacing_mm=card.preprocessing["spacing_mm"], ct_window=tuple(window) if window else None, source=source)
    probabilities = predict_probabilities(network, streams.index(modality), prepared, device=device)
    classes = sitk.GetArrayFromImage(labels_on_source(prepared, probabilities))
    entries = sorted(card.labels, key=lambda entry: entry["class"])
    lookup = np.array([0, *(entry["value"] for entry in entries)], dtype=np.min_scalar_type(max(e["value"] for e in entries)))
    labels = prepared.source.image(lookup[classes])
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000
    volumes = {entry["name"]: float((classes == entry["class"]).sum()) * voxel_ml for entry in entries}
    return AbdominalResult(labels, modality, modality_from, volumes)
