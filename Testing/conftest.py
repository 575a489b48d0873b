"""Shared fixtures: the real data folder (skipped with a reason when absent) and small images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

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


@pytest.fixture
def oblique() -> sitk.Image:
    return oblique_volume()


def write_phantom_mscmrseg(folder: Path, labelled: int, unlabelled: int = 0, **phantom) -> Path:
    """An MS-CMRSeg-layout folder of synthetic patients: ``labelled`` with LGE masks, then ``unlabelled`` without."""
    from crossmodal.image_io import write_image
    from crossmodal.phantoms import cardiac_pair

    folder.mkdir(parents=True, exist_ok=True)
    for patient in range(1, labelled + unlabelled + 1):
        pair = cardiac_pair(seed=patient, **phantom)
        write_image(pair.cine, folder / f"patient{patient}_C0.nii.gz")
        write_image(pair.cine_mask, folder / f"patient{patient}_C0_manual.nii.gz")
        write_image(pair.lge, folder / f"patient{patient}_DE.nii.gz")
        if patient <= labelled:
            write_image(pair.lge_mask, folder / f"patient{patient}_DE_manual.nii.gz")
    return folder


@pytest.fixture(scope="session")
def phantom_mscmrseg(tmp_path_factory) -> Path:
    """Seven labelled and two cine-only-labelled synthetic patients (enough for three folds)."""
    return write_phantom_mscmrseg(tmp_path_factory.mktemp("phantom_mscmrseg"), labelled=7, unlabelled=2)


def write_phantom_nnunet(folder: Path, modality: str, subjects: int) -> Path:
    """An nnU-Net v2 raw dataset of synthetic abdominal ``modality`` ("CT" or "MR") volumes."""
    import json

    from crossmodal.image_io import write_image
    from crossmodal.phantoms import abdominal_volume

    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    for i in range(subjects):
        image, labels = abdominal_volume(modality, seed=100 + i)
        write_image(image, folder / "imagesTr" / f"{modality}_{i:03d}_0000.nii.gz")
        write_image(labels, folder / "labelsTr" / f"{modality}_{i:03d}.nii.gz")
    meta = {"channel_names": {"0": modality}, "labels": {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4},
            "numTraining": subjects, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder
