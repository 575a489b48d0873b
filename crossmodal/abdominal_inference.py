"""Dual-stream FCN inference on one abdominal CT or MR volume (MONAI sliding windows, Gaussian-blended), organs back on its own grid."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference

from crossmodal.abdominal import Preparation, PreparedVolume, guess_modality, labels_on_source, prepare_volume
from crossmodal.bundles import ModelCard
from crossmodal.devices import volume_layout
from crossmodal.errors import InputError
from crossmodal.labels import ABDOMEN
from crossmodal.organ_components import keep_organ_components

INFERENCE_WINDOW = 96
"""Sliding-window edge (voxels) at inference. The network is fully convolutional, so windows larger than
the training patches see more context and cut the number of windows (and the run time) several-fold."""


@dataclass
class AbdominalResult:
    labels: sitk.Image
    """The card's label values (e.g. 1 liver .. 4 spleen) on the input's own voxel grid."""
    modality: str
    modality_from: str
    """How the stream was chosen: "given", "DICOM tag" or "intensities"."""
    volumes_ml: dict[str, float]
    """Per organ name: its segmented volume."""


def window_count(shape: tuple[int, ...], window: int, overlap: float) -> int:
    """How many windows MONAI's sliding-window inference runs over a volume of ``shape`` (padded to one window at least)."""
    padded = [max(n, window) for n in shape]
    interval = [window if n == window else max(int(window * (1 - overlap)), 1) for n in padded]
    return len(dense_patch_slices(padded, (window,) * len(shape), interval))


@torch.no_grad()
def predict_probabilities(network: torch.nn.Module, stream: int, prepared: PreparedVolume, *, window: int = INFERENCE_WINDOW,
                          overlap: float = 0.5, device: torch.device | str = "cpu", batch_size: int = 1, mirror: np.ndarray | None = None,
                          progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Class probabilities (classes, z, y, x) float32 on the prepared grid, by overlapping Gaussian-blended windows;
    ``progress(done, total)`` after each batch of windows.

    ``mirror`` (:meth:`~crossmodal.labels.LabelSet.mirrored_classes`): test-time mirroring, the average with the
    prediction for the body flipped left-right (its sided twins swapped back); twice the time. Only for a network
    trained on mirrored patches: any other has never seen a flipped body."""
    device = torch.device(device)
    layout = volume_layout(device)
    network = network.to(device, memory_format=layout).eval()
    volume = torch.from_numpy(prepared.image)[None, None].to(device)
    passes = 1 if mirror is None else 2
    total, done = passes * window_count(prepared.image.shape, window, overlap), 0

    def predict(windows: torch.Tensor) -> torch.Tensor:
        nonlocal done
        logits = network(windows.contiguous(memory_format=layout), stream)
        done += len(windows)
        if progress is not None:
            progress(min(done, total), total)
        return logits

    def probabilities(image: torch.Tensor) -> torch.Tensor:
        logits = sliding_window_inference(image, (window,) * 3, batch_size, predict, overlap=overlap,
                                          mode="gaussian", padding_mode="constant", cval=float(prepared.image.min()))
        return torch.softmax(logits[0].float(), dim=0)

    result = probabilities(volume)
    if mirror is not None:
        flipped = probabilities(volume.flip(-1)).flip(-1)
        result = (result + flipped[torch.from_numpy(mirror).to(flipped.device)]) / 2
    return result.cpu().numpy()


def delivered_classes(prepared: PreparedVolume, probabilities: np.ndarray, keep_components: bool = True) -> sitk.Image:
    """The organ classes ``segment`` delivers, on the input's own grid: with ``keep_components``, each organ's
    largest piece, each kidney named after its side (:mod:`crossmodal.organ_components`). Validation, cards and
    tables grade this too, so that they promise what ``segment`` gives."""
    classes = labels_on_source(prepared, probabilities)
    return keep_organ_components(classes, ABDOMEN) if keep_components else classes


def segment_abdominal(
    network: torch.nn.Module,
    card: ModelCard,
    image: sitk.Image,
    modality: str | None = None,
    *,
    device: torch.device | str = "cpu",
    source: str = "image",
    progress: Callable[[int, int], None] | None = None,
    keep_components: bool = True,
    mirror: bool = False,
) -> AbdominalResult:
    """Segment the organs of ``image`` with the stream of ``modality`` (guessed when ``None``); ``progress`` per batch of windows.

    ``keep_components``: each organ's largest piece only, each kidney named after its side
    (:mod:`crossmodal.organ_components`). On the bundled V4's four held-out volumes it raised every organ's
    Dice or left it equal (liver 0.64 -> 0.73 on the worst MR) for 0.05 s a volume.
    ``mirror``: test-time mirroring (:func:`predict_probabilities`), for a model whose card says it was trained for it."""
    if mirror and not card.trained_mirrored:
        raise InputError("--mirror", f"model {card.id!r} was not trained on mirrored patches: it has never seen a flipped body, "
                                     "and averaging in its guess for one is unreliable (measured: a held-out MR's Dice 0.79 -> 0.68)")
    modality_from = "given"
    if modality is None:
        modality, modality_from = guess_modality(image)
    streams = card.hyperparameters["streams"]
    if modality not in streams:
        raise InputError(source, f"is {modality}, but model {card.id!r} has streams for {', '.join(streams)} only")
    prepared = prepare_volume(image, modality, preparation=Preparation.of_card(card.preprocessing, f"model {card.id!r} (its card)"), source=source)
    probabilities = predict_probabilities(network, streams.index(modality), prepared, device=device, progress=progress,
                                          mirror=ABDOMEN.mirrored_classes() if mirror else None)
    classes = sitk.GetArrayFromImage(delivered_classes(prepared, probabilities, keep_components))
    entries = sorted(card.labels, key=lambda entry: entry["class"])
    lookup = np.array([0, *(entry["value"] for entry in entries)], dtype=np.min_scalar_type(max(e["value"] for e in entries)))
    labels = prepared.source.image(lookup[classes])
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000
    values = sitk.GetArrayViewFromImage(labels)
    volumes = {entry["name"]: float((values == entry["value"]).sum()) * voxel_ml for entry in entries}
    return AbdominalResult(labels, modality, modality_from, volumes)
