"""A module's work in a ``crossmodal`` child process: its inputs written out, the child started, and its
result taken back only when it finished well and its input is still in the scene."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from crossmodal.catalog import list_models
from crossmodal.errors import InputError
from crossmodal.image_io import write_image
from crossmodal.jobs import ChildJob
from crossmodal_slicer.conversion import volume_node_to_image


def work_folder(prefix: str) -> Path:
    """A fresh temporary folder for one run's files (inputs out, outputs back)."""
    return Path(tempfile.mkdtemp(prefix=f"crossmodal-{prefix}-"))


def export_inputs(nodes: dict[str, object], folder: Path) -> dict[str, Path]:
    """Each (role -> volume node) written as NRRD, geometry exact; a missing node is a clear error."""
    paths = {}
    for role, node in nodes.items():
        if node is None:
            raise InputError(role, "no volume is selected")
        paths[role] = write_image(volume_node_to_image(node), folder / f"{role}.nrrd")
    return paths


def start(arguments: Sequence[str], python: str | None = None, device: str = "auto") -> ChildJob:
    """``crossmodal <arguments> --device <device>`` in a child process (``python``: Slicer's PythonSlicer)."""
    return ChildJob([*arguments, "--device", device], python=python)


def finished_result(job: ChildJob, node, scene) -> dict:
    """The result event of a finished segmentation of ``node``; a clear error if it failed or is still
    running, or if ``node`` left ``scene`` meanwhile (its results would have nothing to belong to)."""
    failure = job.failure()
    if failure is not None or job.returncode is None:
        raise InputError("segmentation", failure or "is still running")
    if node.GetScene() is not scene:
        raise InputError(node.GetName(), "was removed from the scene while it was being segmented; the results were discarded")
    return job.last("result")


def models_for(architecture: str) -> list[tuple[str, str]]:
    """(id, folder) of the catalog's models of ``architecture`` whose weights match their card, for a model selector."""
    return [(e.id, str(e.path)) for e in list_models() if e.card is not None and e.card.architecture == architecture and e.status == "ok"]


def start_training(recipe: dict, data: dict[str, str], out: Path, *, resume: bool = False, python: str | None = None, device: str = "auto") -> ChildJob:
    """``crossmodal train`` on a recipe made from the panel's choices; ``data`` maps --data/--ct/--mr to folders."""
    folder = work_folder("train")
    config = folder / "recipe.json"
    config.write_text(json.dumps(recipe, indent=1))
    arguments = ["train", "--config", str(config), "--out", str(out), *(a for flag, path in data.items() for a in (f"--{flag}", str(path)))]
    return start([*arguments, *(["--resume"] if resume else [])], python, device)


def chosen_folder(path) -> Path | None:
    """A folder the user chose in a panel, or ``None`` where none was: a path parameter holds ``Path(".")``
    (or an empty line edit's "") until then, and training must never scan Slicer's working folder."""
    return Path(path) if path is not None and str(path) not in ("", ".") else None
