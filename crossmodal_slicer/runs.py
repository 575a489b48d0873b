"""A module's work in a ``crossmodal`` child process: its inputs written out, the child started, and its
result taken back only when it finished well and its input is still in the scene."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import SimpleITK as sitk

from crossmodal.bundles import RECIPE
from crossmodal.catalog import list_models, recipe_of
from crossmodal.errors import InputError
from crossmodal.image_io import check_finite, require_signal, write_image
from crossmodal.jobs import ChildJob
from crossmodal.segment_outputs import SegmentOutput
from crossmodal_slicer.conversion import volume_node_to_image


def work_folder(prefix: str) -> Path:
    """A fresh temporary folder for one run's files (inputs out, outputs back)."""
    return Path(tempfile.mkdtemp(prefix=f"crossmodal-{prefix}-"))


def input_images(nodes: dict[str, object]) -> dict[str, sitk.Image]:
    """Each (role -> volume node) as an image, geometry exact, refused here, naming the node, when it is missing,
    holds NaN or infinite voxels or is blank: before any file is written or a child started."""
    images = {}
    for role, node in nodes.items():
        if node is None:
            raise InputError(role, "no volume is selected")
        image = volume_node_to_image(node)
        check_finite(image, node.GetName())
        require_signal(image, node.GetName())
        images[role] = image
    return images


def write_inputs(images: dict[str, sitk.Image], prefix: str) -> tuple[Path, dict[str, Path]]:
    """A fresh work folder with each (role -> image) in it as NRRD (``<role>.nrrd``), and their paths; the
    child's ``segment --out`` is :func:`output_folder` of it."""
    folder = work_folder(prefix)
    return folder, {role: write_image(image, folder / f"{role}.nrrd") for role, image in images.items()}


def user_names(paths: dict[str, Path], nodes: dict[str, object]) -> dict[str, str]:
    """Each exported file's path -> the name of the node it was written from (what the user chose)."""
    return {str(paths[role]): node.GetName() for role, node in nodes.items() if role in paths and node is not None}


def start(arguments: Sequence[str], python: str | None = None, device: str = "auto", names: dict[str, str] | None = None) -> ChildJob:
    """``crossmodal <arguments> --device <device>`` in a child process (``python``: Slicer's PythonSlicer); ``names``
    (see :func:`user_names`) keeps its messages in the user's terms."""
    return ChildJob([*arguments, "--device", device], python=python, names=names)


def output_folder(work: Path) -> Path:
    return work / "out"


def finished_output(job: ChildJob, work: Path, node, scene) -> SegmentOutput:
    """What a finished segmentation of ``node`` wrote, read from its ``segment.json`` (the one record of it),
    its warnings naming the user's volumes instead of the files the child was given. A clear error if the
    child failed or is still running, or if ``node`` left ``scene`` meanwhile (its results would have
    nothing to belong to)."""
    failure = job.failure()
    if failure is not None or job.returncode is None:
        raise InputError("segmentation", failure or "is still running")
    if node.GetScene() is not scene:
        raise InputError(node.GetName(), "was removed from the scene while it was being segmented; the results were discarded")
    written = SegmentOutput.read(output_folder(work))
    return replace(written, summary={**written.summary, "warnings": [job.in_user_terms(w) for w in written.warnings]})


def models_for(architecture: str) -> list[tuple[str, str]]:
    """(id, folder) of the catalog's models of ``architecture`` whose weights match their card, for a model selector."""
    return [(e.id, str(e.path)) for e in list_models() if e.card is not None and e.card.architecture == architecture and e.status == "ok"]


def start_training(task: str, choices: dict, data: dict[str, str], out: Path, *, resume: bool = False, python: str | None = None,
                   device: str = "auto") -> ChildJob:
    """``crossmodal train`` on the recipe of the ``task``'s bundled model with the panel's ``choices`` (id,
    steps, ...); ``data`` maps --data/--ct/--mr to the user's folders, which replace the recipe's own."""
    recipe = {key: value for key, value in json.loads(recipe_of(None, task).read_text()).items() if key != "data"}
    folder = work_folder("train")
    config = folder / RECIPE
    config.write_text(json.dumps({**recipe, **choices}, indent=1))
    arguments = ["train", "--config", str(config), "--out", str(out), *(a for flag, path in data.items() for a in (f"--{flag}", str(path)))]
    return start([*arguments, *(["--resume"] if resume else [])], python, device)


def chosen_folder(path) -> Path | None:
    """A folder the user chose in a panel, or ``None`` where none was: a path parameter holds ``Path(".")``
    (or an empty line edit's "") until then, and training must never scan Slicer's working folder."""
    return Path(path) if path is not None and str(path) not in ("", ".") else None
