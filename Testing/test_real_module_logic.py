"""The Slicer modules' logic on real held-out subjects, read by Slicer's own file readers (MRML storage
nodes), with the bundled models run in the child process and scored on the inputs' native grids.

Skipped when the real data (../shared/data) or the Slicer core libraries are absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import shared_data

slicer = pytest.importorskip("slicer", reason="the Slicer core libraries (pip install -e '.[dev]') are not installed")

from slicer_python import ROOT, modules_on_newest_release  # noqa: E402

from crossmodal.bundles import read_card  # noqa: E402
from crossmodal.datasets import read_nnunet_dataset  # noqa: E402
from crossmodal.geometry import Grid, resample  # noqa: E402
from crossmodal.labels import ABDOMEN, CARDIAC_MYO_LV  # noqa: E402
from crossmodal.metrics import dice  # noqa: E402
from crossmodal_slicer import conversion  # noqa: E402

MultiModalSegLib, DualStreamSegLib = modules_on_newest_release()
DualStreamSegLogic = DualStreamSegLib.DualStreamSegLogic
MultiModalSegLogic = MultiModalSegLib.MultiModalSegLogic

pytestmark = pytest.mark.realdata


def assert_same_space(node, path: Path) -> None:
    """Slicer's reading of a file and SimpleITK's hold the same voxels at the same physical points.

    Not necessarily on the same voxel grid: Slicer turns a left-handed header (MS-CMRSeg's, det -1)
    into a right-handed one by reversing the slice order, so only a comparison in physical space is fair.
    """
    ours, theirs = conversion.volume_node_to_image(node), sitk.ReadImage(str(path))
    distances = np.linalg.norm(Grid.of(ours).corners()[:, None] - Grid.of(theirs).corners()[None], axis=-1)
    assert distances.min(axis=1).max() < 1e-3  # the same eight corners, in whatever order
    on_theirs = resample(ours, Grid.of(theirs), label=True)  # nearest neighbour: voxel centres coincide
    assert np.array_equal(sitk.GetArrayViewFromImage(on_theirs), sitk.GetArrayViewFromImage(theirs))


def test_multimodalseg_on_a_held_out_patient_read_by_slicer():
    """Patient 33 (held out of the bundle's training; left-handed det -1 headers) through the panel's logic."""
    folder = shared_data("mscmrseg")
    files = {role: folder / f"patient33_{suffix}.nii.gz" for role, suffix in (("lge", "DE"), ("cine", "C0"), ("reference", "DE_manual"))}
    scene = slicer.vtkMRMLScene()
    nodes = {role: conversion.read_volume(path, scene, labelmap=role == "reference") for role, path in files.items()}
    for role, node in nodes.items():
        assert_same_space(node, files[role])
    logic = MultiModalSegLogic()
    run = logic.segment(nodes["lge"], nodes["cine"], nodes["reference"], device="cpu")
    assert run.job.wait(timeout=600) == 0, run.job.failure()
    outputs = logic.load_results(run, scene)
    logic.discard(run)
    truth = sitk.ReadImage(str(files["reference"]))
    fused = conversion.segmentation_node_to_labelmap(outputs.segmentations["fused LGE"], CARDIAC_MYO_LV, truth)
    scores = dice(sitk.GetArrayFromImage(fused), sitk.GetArrayFromImage(truth), CARDIAC_MYO_LV.values)
    myocardium, ventricle = (scores[label.value] for label in CARDIAC_MYO_LV.labels)
    assert myocardium > 0.65 and ventricle > 0.8, scores
    table = outputs.dice_table.GetTable()
    assert table.GetValue(0, 0).ToString() == "fused LGE"
    # The panel's Dice table (scored by the child on the file it was given) agrees with the scene's segmentation.
    assert table.GetValue(0, 1).ToDouble() == pytest.approx(myocardium, abs=0.01)
    assert table.GetValue(0, 2).ToDouble() == pytest.approx(ventricle, abs=0.01)
    assert [len(channels) for channels in outputs.anatomy.values()] == [8, 8] and outputs.transform is not None


def test_dualstreamseg_on_a_held_out_ct_read_by_slicer():
    """BTCV_018 (held out of the bundle's training) through the panel's logic; Dice as the bundle's card reports."""
    dataset = read_nnunet_dataset(shared_data("btcv_ct"))
    case = next(c for c in dataset.cases if c.case_id == "BTCV_018")
    scene = slicer.vtkMRMLScene()
    volume = conversion.read_volume(case.images[0], scene)
    assert_same_space(volume, case.images[0])
    logic = DualStreamSegLogic()
    assert logic.guess_modality(volume) == "CT"
    run = logic.segment(volume, device="cpu")
    assert run.job.wait(timeout=600) == 0, run.job.failure()
    outputs = logic.load_results(run, scene)
    logic.discard(run)
    truth = dataset.read_label(case)
    labels = conversion.segmentation_node_to_labelmap(outputs.segmentation, ABDOMEN, truth)
    scores = dice(sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(truth), ABDOMEN.values)
    reported = read_card(ROOT / "Resources" / "Models" / "dualstream-v4-abdomen").validation["dice_native"]["BTCV_018"]
    for label in ABDOMEN.labels:
        assert scores[label.value] == pytest.approx(reported[label.name], abs=0.02), (label.name, scores)
