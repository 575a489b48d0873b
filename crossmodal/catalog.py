"""The model catalog: bundled models (shipped under ``Resources/Models``) and the user's own (trained with
``crossmodal train``), found by id or by folder, each verified against the sha256 in its card.

The user folder is ``$CROSSMODAL_MODELS``, else ``$XDG_DATA_HOME/crossmodal/models`` (by default
``~/.local/share/crossmodal/models``); the bundled folder can be moved with ``$CROSSMODAL_BUNDLED_MODELS``
(the Slicer extension installs it beside the modules).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from crossmodal.bundles import CARD, RECIPE, WEIGHTS, ModelCard, read_card, sha256_of
from crossmodal.errors import InputError

TASKS = {"cardiac": "MMSDNet", "abdominal": "DualStreamFCN"}
"""Task -> the architecture that serves it."""


def bundled_models_folder() -> Path:
    return Path(os.environ.get("CROSSMODAL_BUNDLED_MODELS", Path(__file__).resolve().parents[1] / "Resources" / "Models"))


def user_models_folder() -> Path:
    if "CROSSMODAL_MODELS" in os.environ:
        return Path(os.environ["CROSSMODAL_MODELS"])
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "crossmodal" / "models"


@dataclass(frozen=True)
class CatalogEntry:
    path: Path
    source: str
    """"bundled" or "user"."""
    card: ModelCard | None
    status: str
    """"ok", or what is wrong ("sha256 mismatch", "model.pt missing", "invalid card: ...")."""

    @property
    def id(self) -> str:
        return self.card.id if self.card else self.path.name

    def summary(self) -> dict:
        card = self.card
        return {"id": self.id, "source": self.source, "status": self.status, "path": str(self.path),
                "architecture": card.architecture if card else None, "modalities": card.modalities if card else None,
                "version": card.version if card else None, "validation": card.validation if card else None}


def inspect(folder: Path, source: str, verify: bool = True) -> CatalogEntry:
    """A bundle folder's card and whether its weights match the card's sha256."""
    try:
        card = read_card(folder)
    except InputError as error:
        return CatalogEntry(folder, source, None, f"invalid card: {error.problem}")
    if not (folder / WEIGHTS).is_file():
        return CatalogEntry(folder, source, card, f"{WEIGHTS} missing")
    if verify and sha256_of(folder / WEIGHTS) != card.sha256:
        return CatalogEntry(folder, source, card, "sha256 mismatch: model.pt was changed or corrupted")
    return CatalogEntry(folder, source, card, "ok")


def list_models(verify: bool = True) -> list[CatalogEntry]:
    """Every bundle folder (one holding a ``card.json``) in the bundled and the user folder."""
    entries = []
    for source, root in (("bundled", bundled_models_folder()), ("user", user_models_folder())):
        if root.is_dir():
            entries += [inspect(card.parent, source, verify) for card in sorted(root.glob(f"*/{CARD}"))]
    return entries


def find_model(reference: str | Path | None, task: str) -> Path:
    """The bundle folder for ``reference`` (an id in the catalog or a folder path), or the task's first bundled model.

    Refuses an unknown id (listing the known ones) and a model for another task.
    """
    wanted = TASKS[task]
    if reference is None:
        matches = [e for e in list_models(verify=False) if e.card is not None and e.card.architecture == wanted and e.source == "bundled"]
        if not matches:
            raise InputError("--model", f"no bundled {wanted} model is installed in {bundled_models_folder()}; name one with --model")
        folder, card = matches[0].path, matches[0].card
    else:
        folder = _locate(reference)
        card = read_card(folder)
    if card.architecture != wanted:
        other = next((t for t, a in TASKS.items() if a == card.architecture), "another")
        raise InputError(folder, f"is a {card.architecture} model (for {other} images); the {task} task needs a {wanted} model")
    return folder


def recipe_of(reference: str | Path | None, task: str | None = None) -> Path:
    """The recipe a model was trained with (its bundle's ``recipe.json``): ``reference`` is an id or a bundle
    folder, or None for the ``task``'s bundled model. How to train another model like it."""
    folder = find_model(reference, task) if task is not None else _locate(reference)
    if not (folder / RECIPE).is_file():
        raise InputError(folder, f"holds no {RECIPE}: the recipe it was trained with was not kept")
    return folder / RECIPE


def _locate(reference: str | Path) -> Path:
    """The bundle folder named by a folder path or a catalog id."""
    if Path(reference).is_dir():
        return Path(reference)
    matches = [e for e in list_models(verify=False) if e.card is not None and e.id == str(reference)]
    if not matches:
        known = ", ".join(sorted(e.id for e in list_models(verify=False) if e.card is not None)) or "none"
        raise InputError(str(reference), f"is not a model folder nor a known model id (known: {known})")
    return matches[0].path
