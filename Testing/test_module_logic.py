"""The Slicer modules' logic on real MRML scenes (PyPI slicer-core): nodes in, a child process, nodes out."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="the Slicer core libraries (pip install -e '.[dev]') are not installed")

from crossmodal import module_logic, mrml  # noqa: E402
from crossmodal.errors import InputError  # noqa: E402
from crossmodal.phantoms import abdominal_volume, cardiac_pair  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "MultiModalSeg"), str(ROOT / "DualStreamSeg")]

from DualStreamSegLib import DualStreamSegLogic  # noqa: E402
from MultiModalSegLib import MultiModalSegLogic  # noqa: E402


def node_names(scene) -> list[str]:
    nodes = scene.GetNodes()
    return sorted(nodes.GetItemAsObject(i).GetName() or "" for i in range(nodes.GetNumberOfItems()))


def checksum(node) -> tuple:
    image = mrml.volume_node_to_image(node)
    return float(sitk.GetArrayViewFromImage(image).sum()), image.GetOrigin(), image.GetDirection(), node.GetName()


@pytest.fixture
def cardiac_scene(catalog):
    scene = slicer.vtkMRMLScene()
    pair = cardiac_pair(seed=41)
    nodes = {"lge": mrml.image_to_volume_node(pair.lge, scene, "LGE"), "cine": mrml.image_to_volume_node(pair.cine, scene, "cine"),
             "reference": mrml.image_to_volume_node(pair.lge_mask, scene, "LGE reference", labelmap=True)}
    return scene, nodes, pair


def test_multimodalseg_puts_every_output_in_the_scene_and_rerunning_replaces_only_its_own(cardiac_scene, tmp_path):
    scene, nodes, pair = cardiac_scene
    before = {k: checksum(n) for k, n in nodes.items()}
    logic = MultiModalSegLogic()
    run = logic.segment(nodes["lge"], nodes["cine"], nodes["reference"], model="tiny-mmsdnet", device="cpu")
    assert run.job.wait(timeout=300) == 0, run.job.failure()
    outputs = logic.load_results(run, scene)
    assert set(outputs.segmentations) == {"seg_fused_lge", "seg_lge", "seg_cine"}
    fused = outputs.segmentations["seg_fused_lge"]
    segmentation = fused.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == ["myocardium", "left ventricle"]
    back = mrml.segmentation_node_to_labelmap(fused, __import__("crossmodal.labels", fromlist=["CARDIAC_MYO_LV"]).CARDIAC_MYO_LV, pair.lge)
    assert back.GetSize() == pair.lge.GetSize()  # exported on the LGE's own grid
    assert [len(v) for v in outputs.anatomy.values()] == [8, 8]
    assert outputs.aligned_cine.GetParentTransformNode() is outputs.transform and nodes["cine"].GetParentTransformNode() is None
    table = outputs.dice_table.GetTable()
    assert [table.GetValue(r, 0).ToString() for r in range(table.GetNumberOfRows())] == ["fused LGE", "LGE", "cine aligned to LGE", "cine copied to LGE"]
    assert outputs.agreement_table.GetTable().GetNumberOfRows() == pair.lge.GetSize()[2]
    assert {k: checksum(n) for k, n in nodes.items()} == before  # inputs untouched
    count = scene.GetNumberOfNodes()
    rerun = logic.segment(nodes["lge"], nodes["cine"], model="tiny-mmsdnet", device="cpu")
    assert rerun.job.wait(timeout=300) == 0
    again = logic.load_results(rerun, scene)
    assert again.dice_table is None and scene.GetNumberOfNodes() == count - 1  # the same outputs, less the Dice table (no reference)
    assert "LGE MMSDNet Dice" not in node_names(scene)
    assert fused.GetScene() is None and node_names(scene).count("LGE MMSDNet fused (cine + LGE)") == 1
    for run_ in (run, rerun):
        logic.discard(run_)
    assert not run.folder.exists()


def test_multimodalseg_reports_a_failed_run_and_leaves_the_scene_alone(cardiac_scene):
    scene, nodes, _ = cardiac_scene
    far = sitk.Image(cardiac_pair(seed=41).cine)  # the same orientation as the LGE, 9 m away
    far.SetOrigin((9000.0, 0.0, 0.0))
    remote = mrml.image_to_volume_node(far, scene, "remote cine")
    names = node_names(scene)
    logic = MultiModalSegLogic()
    run = logic.segment(nodes["lge"], remote, model="tiny-mmsdnet", device="cpu")
    assert run.job.wait(timeout=300) != 0
    with pytest.raises(InputError, match="overlap"):
        logic.load_results(run, scene)
    assert node_names(scene) == names
    with pytest.raises(InputError, match="no LGE volume is selected"):
        logic.segment(None, nodes["cine"])


def test_dualstreamseg_segments_a_volume_onto_its_own_grid(catalog):
    scene = slicer.vtkMRMLScene()
    image, _ = abdominal_volume("MR", seed=7)
    volume = mrml.image_to_volume_node(image, scene, "T2")
    logic = DualStreamSegLogic()
    assert logic.guess_modality(volume) == "MR"
    run = logic.segment(volume, model="tiny-v4", device="cpu")
    assert run.job.wait(timeout=300) == 0, run.job.failure()
    outputs = logic.load_results(run, scene)
    assert outputs.modality == "MR" and outputs.volumes_table.GetTable().GetNumberOfRows() == 4
    labels = mrml.segmentation_node_to_labelmap(outputs.segmentation, __import__("crossmodal.labels", fromlist=["ABDOMEN"]).ABDOMEN, image)
    assert labels.GetSize() == image.GetSize() and np.allclose(labels.GetOrigin(), image.GetOrigin())
    with pytest.raises(InputError, match="no CT or MR volume is selected"):
        logic.segment(None)


def test_a_training_started_from_a_panel_fills_its_plot(phantom_mscmrseg, tmp_path):
    scene = slicer.vtkMRMLScene()
    recipe = {"architecture": "MMSDNet", "id": "panel", "size": 32, "spacing_mm": 6.0, "filters": 4, "steps": 4,
              "batch_size": 4, "validate_every": 2, "validation": [1]}
    job = module_logic.start_training(recipe, {"data": str(phantom_mscmrseg)}, tmp_path / "panel", device="cpu")
    table, chart = module_logic.training_plot(scene, "panel", "test")
    assert job.wait(timeout=300) == 0, job.failure()
    assert module_logic.append_metrics(table, job.events) == 4
    data = table.GetTable()
    assert [data.GetValue(r, 0).ToDouble() for r in range(4)] == [1, 2, 3, 4] and chart.GetNumberOfPlotSeriesNodes() == 2
    assert (tmp_path / "panel" / "card.json").exists()


def test_outputs_survive_saving_and_reloading_the_scene(catalog, tmp_path):
    scene = slicer.vtkMRMLScene()
    image, _ = abdominal_volume("CT", seed=8)
    volume = mrml.image_to_volume_node(image, scene, "CT")
    logic = DualStreamSegLogic()
    run = logic.segment(volume, model="tiny-v4", device="cpu")
    assert run.job.wait(timeout=300) == 0, run.job.failure()
    outputs = logic.load_results(run, scene)
    logic.discard(run)
    key = outputs.segmentation.GetAttribute(module_logic.OUTPUT_ATTRIBUTE)
    mrml.write_volume(volume, tmp_path / "CT.nrrd")
    mrml.write_segmentation(outputs.segmentation, tmp_path / "organs.seg.nrrd")
    for node, path in ((volume, "CT.nrrd"), (outputs.segmentation, "organs.seg.nrrd")):  # what Slicer's Save does: a storage node per node
        storage = node.CreateDefaultStorageNode()
        scene.AddNode(storage)
        storage.SetFileName(str(tmp_path / path))
        node.SetAndObserveStorageNodeID(storage.GetID())
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    reloaded = slicer.vtkMRMLScene()
    reloaded.SetURL(str(tmp_path / "scene.mrml"))
    assert reloaded.Connect()
    found = {n.GetName(): n for n in module_logic.own_outputs(reloaded, key)}
    assert sorted(found) == ["CT organ volumes", "CT organs"]  # still tagged: a re-run after reloading replaces them
    segmentation = found["CT organs"]
    names = [segmentation.GetSegmentation().GetNthSegment(i).GetName() for i in range(segmentation.GetSegmentation().GetNumberOfSegments())]
    assert names == ["liver", "right kidney", "left kidney", "spleen"]
