"""Model bundles: a folder with ``model.pt`` (a state dict) and ``card.json`` (what the model is and how to feed it).

The card's sha256 of ``model.pt`` is checked before every load, and weights are read with
``torch.load(weights_only=True)`` only, so a bundle can carry no code. The card is what the CLI and
the Slicer modules show a user: architecture, input modalities and preprocessing, labels with
names and colours, training data and validation metrics. Cards are read without PyTorch (the Slicer
panels list models before it is installed); weights import it when they are saved or loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from crossmodal.errors import InputError
from crossmodal.image_io import atomic_output
from crossmodal.labels import LabelSet

if TYPE_CHECKING:
    import torch

CARD, WEIGHTS, RECIPE = "card.json", "model.pt", "recipe.json"
"""A bundle's files; ``recipe.json`` is the recipe it was trained with, to train another like it."""
MIRRORED_PATCHES = "mirrored_patches"
"""Key of a card's ``training`` record: true when the model was trained on left-right mirrored patches."""
LGE_UNET = "lge_unet"
"""Key of an MMSDNet card's hyper-parameters: the U-Net (``filters``, ``depth``) whose LGE probabilities the
bundle averages with MMSDNet's (see :mod:`crossmodal.nets.ensemble`); absent: MMSDNet alone."""
MEMBERS = "members"
"""Key of a dual-stream card's hyper-parameters: how many networks of that configuration, trained from different
seeds, the bundle averages (:class:`~crossmodal.nets.ensemble.DualStreamEnsemble`); absent: one network."""


@dataclass(frozen=True)
class ModelCard:
    id: str
    version: str
    architecture: str
    """Name in :data:`ARCHITECTURES` (how to build the network)."""
    hyperparameters: dict
    modalities: list[str]
    preprocessing: dict
    """Common-grid size and spacing, intensity normalisation."""
    labels: list[dict]
    """Per class index 1..n: name, file value, colour (background is class 0)."""
    training: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    sha256: str = ""
    weights_dtype: str = "float32"
    """How ``model.pt`` stores floating tensors: float32, or float16 (half the size; loading widens them exactly)."""

    @property
    def trained_mirrored(self) -> bool:
        """Whether test-time mirroring suits the model: it was trained on mirrored patches, so it knows a flipped body."""
        return bool(self.training.get(MIRRORED_PATCHES))

    @property
    def network_name(self) -> str:
        """What a user is told the model is: the architecture, with the U-Net beside it or the number of networks
        averaged where the bundle carries an ensemble."""
        if LGE_UNET in self.hyperparameters:
            return f"{self.architecture} + LGE U-Net"
        if MEMBERS in self.hyperparameters:
            return f"{self.architecture} x {self.hyperparameters[MEMBERS]} (seed ensemble)"
        return self.architecture

    @staticmethod
    def label_entries(label_set: LabelSet) -> list[dict]:
        return [{"class": i, "name": lab.name, "value": lab.value, "color": list(lab.color)} for i, lab in enumerate(label_set.labels, 1)]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def round_to_float16(network: torch.nn.Module) -> torch.nn.Module:
    """Round every floating parameter and buffer to its nearest float16 value, in place: the weights a float16
    bundle loads, so that what is measured after this (its card's validation) is what the bundle computes."""
    import torch

    with torch.no_grad():
        for tensor in network.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half())
    return network


def save_bundle(folder: Path, network: torch.nn.Module, card: ModelCard, *, float16: bool = False) -> ModelCard:
    """Write ``model.pt`` then ``card.json`` (with the weights' sha256) atomically; returns the final card.

    ``float16`` stores floating tensors at half the size; the network must have been through
    :func:`round_to_float16` first (refused otherwise), so that nothing measured on it changes by storing."""
    import torch

    state = network.state_dict()
    if float16:
        half = {k: t.half() if t.is_floating_point() else t for k, t in state.items()}
        if any(not torch.equal(state[k], t.to(state[k].dtype)) for k, t in half.items()):
            raise ValueError("round the network with round_to_float16 before measuring and storing it as float16")
        state = half
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_output(folder / WEIGHTS) as partial:
        torch.save(state, partial)
        digest = sha256_of(partial)
    final = ModelCard(**{**asdict(card), "sha256": digest, "weights_dtype": "float16" if float16 else "float32"})
    with atomic_output(folder / CARD) as partial:
        partial.write_text(json.dumps(asdict(final), indent=1) + "\n")
    return final


def read_card(folder: Path) -> ModelCard:
    """The card of a bundle, checked for completeness (no weights are read)."""
    path = Path(folder) / CARD
    if not path.is_file():
        raise InputError(folder, f"is not a model bundle: {CARD} is missing")
    try:
        data = json.loads(path.read_text())
        return ModelCard(**data)
    except (json.JSONDecodeError, TypeError) as error:
        raise InputError(path, f"is not a valid model card ({error})") from None


def load_bundle(folder: Path, device: torch.device | str = "cpu") -> tuple[ModelCard, torch.nn.Module]:
    """Check the hash, read the weights safely, build the network in eval mode on ``device``."""
    import torch

    card = read_card(folder)
    weights = Path(folder) / WEIGHTS
    if not weights.is_file():
        raise InputError(folder, f"is not a complete model bundle: {WEIGHTS} is missing")
    if sha256_of(weights) != card.sha256:
        raise InputError(weights, "does not match the sha256 in its card: the file was changed or corrupted; refusing to load it")
    if card.architecture not in ARCHITECTURES:
        raise InputError(folder / CARD, f"names unknown architecture {card.architecture!r}; known: {', '.join(ARCHITECTURES)}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
        raise InputError(weights, f"could not be read as PyTorch weights ({type(error).__name__}: {error})") from None
    try:
        network = ARCHITECTURES[card.architecture](card.hyperparameters)
    except (ValueError, TypeError) as error:  # TypeError: a hyper-parameter the network does not take
        raise InputError(folder / CARD, str(error)) from None
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        raise InputError(weights, f"does not fit the {card.architecture} described in its card ({str(error).splitlines()[0]})") from None
    return card, network.to(device).eval()


def _mmsdnet(hyperparameters: dict) -> torch.nn.Module:
    from crossmodal.nets.blocks import UNet
    from crossmodal.nets.ensemble import LGEEnsemble
    from crossmodal.nets.mmsdnet import MMSDNet, MMSDNetConfig

    own = {k: v for k, v in hyperparameters.items() if k != LGE_UNET}
    # Cards from before the design was recorded are of design 1 (one modality encoder and decoder per modality).
    mmsdnet = MMSDNet(MMSDNetConfig(**{"design": 1, **own, "modalities": tuple(own["modalities"])}))
    if LGE_UNET not in hyperparameters:
        return mmsdnet
    return LGEEnsemble(mmsdnet, UNet(1, mmsdnet.config.classes, **hyperparameters[LGE_UNET]))


def _dual_stream_fcn(hyperparameters: dict) -> torch.nn.Module:
    from crossmodal.nets.ensemble import DualStreamEnsemble
    from crossmodal.nets.residual_fcn import DualStreamFCN, ResidualFCNConfig

    config = ResidualFCNConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in hyperparameters.items() if k != MEMBERS})
    if MEMBERS not in hyperparameters:
        return DualStreamFCN(config)
    return DualStreamEnsemble([DualStreamFCN(config) for _ in range(int(hyperparameters[MEMBERS]))])


ARCHITECTURES = {"MMSDNet": _mmsdnet, "DualStreamFCN": _dual_stream_fcn}
"""Architecture name -> builder from the card's hyper-parameters."""
