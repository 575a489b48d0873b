"""Shared fixtures: the real data folder (skipped with a reason when absent) and small images."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from crossmodal.cli import main as crossmodal
from crossmodal.phantoms import write_mscmrseg_phantoms as write_phantom_mscmrseg
from crossmodal.phantoms import write_nnunet_phantoms as write_phantom_nnunet

SHARED_DATA = Path(os.environ.get("CROSSMODAL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
"""Real data: ../shared/data beside the project, or the folder named by CROSSMODAL_SHARED_DATA."""


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip: a user's fresh clone has no such data."""
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"real data {folder} is absent (it lives only beside the project, in ../shared/data)")
    return folder


def rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    """Rotation matrix about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def oblique_volume(
    size=(37, 29, 11),
    spacing=(0.7, 1.3, 5.0),
    origin=(-12.5, 40.25, 101.0),
    degrees: float = 30.0,
    dtype=np.int16,
    seed: int = 0,
) -> sitk.Image:
    """An oblique, anisotropic volume with random voxels: geometry errors cannot hide in it."""
    rng = np.random.default_rng(seed)
    array = rng.integers(-500, 1500, size=size[::-1]).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(rotation((1.0, 2.0, 0.5), degrees).ravel().tolist())
    return image


def write_dicom_series(volume: sitk.Image, folder: Path, series: str = "1.2.826.0.1.3680043.2.1125.1.99", skip: tuple[int, ...] = (),
                       modality: str = "MR", tags: dict[str, str] | None = None) -> Path:
    """``volume`` as a DICOM series written slice by slice with its geometry tags and one study and frame of
    reference, as a scanner would (slices in ``skip`` left out, as in an incomplete export)."""
    folder.mkdir(parents=True, exist_ok=True)
    direction = volume.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    spacing = volume.GetSpacing()
    for k in (k for k in range(volume.GetDepth()) if k not in skip):
        s = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0020|000e": series,
            "0020|000d": f"{series}.1",
            "0020|0052": f"{series}.2",
            "0008|0018": f"{series}.3.{k + 1}",
            "0010|0020": "PHANTOM",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{x:.6f}" for x in position),
            "0020|0037": "\\".join(f"{x:.8f}" for x in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])),
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
            "0018|0050": str(spacing[2]),
            "0008|0060": modality,
            **(tags or {}),
        }.items():
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series[-4:]}-slice{k:03d}.dcm"))
        writer.Execute(s)
    return folder


@pytest.fixture
def oblique() -> sitk.Image:
    return oblique_volume()


@pytest.fixture(scope="session")
def phantom_mscmrseg(tmp_path_factory) -> Path:
    """Seven labelled and two cine-only-labelled synthetic patients (enough for three folds)."""
    return write_phantom_mscmrseg(tmp_path_factory.mktemp("phantom_mscmrseg"), labelled=7, unlabelled=2)


TINY_MMSDNET = {"architecture": "MMSDNet", "id": "tiny-mmsdnet", "size": 32, "spacing_mm": 6.0, "filters": 4, "steps": 4,
                "batch_size": 4, "validate_every": 2, "checkpoint_every": 2, "validation": [1]}
TINY_DUALSTREAM = {"architecture": "DualStreamFCN", "id": "tiny-v4", "filters": [2, 4, 4, 8, 8], "patch": 16, "batch_size": 1, "spatial_augmentation": True,
                   "mirror": True, "steps": 2, "validate_every": 2, "checkpoint_every": 2, "validation": {"CT": 1, "MR": 1}}


def write_config(folder: Path, recipe: dict, **changes) -> Path:
    path = folder / f"{recipe['id']}{''.join(f'-{k}' for k in changes)}.json"
    path.write_text(json.dumps({**recipe, **changes}))
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory, phantom_mscmrseg) -> dict[str, Path]:
    """A tiny MMSDNet and a tiny dual-stream V4, trained through `crossmodal train` into a user models folder."""
    folder = tmp_path_factory.mktemp("models")
    ct = write_phantom_nnunet(folder / "ct", "CT", 2)
    mr = write_phantom_nnunet(folder / "mr", "MR", 2)
    cardiac = crossmodal(["train", "--config", str(write_config(folder, TINY_MMSDNET)), "--data", str(phantom_mscmrseg),
                    "--out", str(folder / "user" / "tiny-mmsdnet"), "--events", "jsonl", "--device", "cpu"])
    abdominal = crossmodal(["train", "--config", str(write_config(folder, TINY_DUALSTREAM)), "--ct", str(ct), "--mr", str(mr),
                      "--out", str(folder / "user" / "tiny-v4"), "--events", "jsonl"])
    assert cardiac == abdominal == 0
    return {"user": folder / "user", "cardiac": folder / "user" / "tiny-mmsdnet", "abdominal": folder / "user" / "tiny-v4"}


@pytest.fixture
def catalog(models, monkeypatch):
    monkeypatch.setenv("CROSSMODAL_MODELS", str(models["user"]))
    return models
