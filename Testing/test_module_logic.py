"""The Slicer modules' logic on real MRML scenes (PyPI slicer-core): nodes in, a child process, nodes out."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

slicer = pytest.importorskip("slicer", reason="the Slicer core libraries (pip install -e '.[dev]') are not installed")

from slicer_python import modules_on_newest_release  # noqa: E402

from crossmodal.catalog import recipe_of  # noqa: E402
from crossmodal.errors import InputError  # noqa: E402
from crossmodal.geometry import Grid  # noqa: E402
from crossmodal.image_io import read_image  # noqa: E402
from crossmodal.labels import ABDOMEN, CARDIAC_MYO_LV  # noqa: E402
from crossmodal.phantoms import abdominal_volume, cardiac_pair  # noqa: E402
from crossmodal.segment_outputs import SegmentOutput  # noqa: E402
from crossmodal_slicer import conversion, runs  # noqa: E402
from crossmodal_slicer.outputs import OUTPUT_ATTRIBUTE, own_outputs  # noqa: E402
from crossmodal_slicer.scene import append_metrics, training_plot  # noqa: E402

MultiModalSegLib, DualStreamSegLib = modules_on_newest_release()
DualStreamSegLogic = DualStreamSegLib.DualStreamSegLogic
CardiacOutputs = MultiModalSegLib.CardiacOutputs
MultiModalSegLogic = MultiModalSegLib.MultiModalSegLogic


def node_names(scene) -> list[str]:
    nodes = scene.GetNodes()
    return sorted(nodes.GetItemAsObject(i).GetName() or "" for i in range(nodes.GetNumberOfItems()))


def checksum(node) -> tuple:
    image = conversion.volume_node_to_image(node)
    return float(sitk.GetArrayViewFromImage(image).sum()), image.GetOrigin(), image.GetDirection(), node.GetName()


@pytest.fixture
def cardiac_scene(catalog):
    scene = slicer.vtkMRMLScene()
    pair = cardiac_pair(seed=41)
    nodes = {"lge": conversion.image_to_volume_node(pair.lge, scene, "LGE"), "cine": conversion.image_to_volume_node(pair.cine, scene, "cine"),
             "reference": conversion.image_to_volume_node(pair.lge_mask, scene, "LGE reference", labelmap=True)}
    return scene, nodes, pair


def test_multimodalseg_puts_every_output_in_the_scene_and_rerunning_replaces_only_its_own(cardiac_scene, tmp_path):
    scene, nodes, pair = cardiac_scene
    before = {k: checksum(n) for k, n in nodes.items()}
    logic = MultiModalSegLogic()
    run = logic.segment(nodes["lge"], nodes["cine"], nodes["reference"], model="tiny-mmsdnet", device="cpu")
    assert run.job.wait(timeout=300) == 0, run.job.failure()
    outputs = logic.load_results(run, scene)
    assert set(outputs.segmentations) == {"fused LGE", "LGE", "cine"}
    fused = outputs.segmentations["fused LGE"]
    segmentation = fused.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == ["myocardium", "left ventricle"]
    back = conversion.segmentation_node_to_labelmap(fused, CARDIAC_MYO_LV, pair.lge)
    assert back.GetSize() == pair.lge.GetSize()  # exported on the LGE's own grid
    assert [len(v) for v in outputs.anatomy.values()] == [8, 8]
    assert outputs.aligned_cine.GetParentTransformNode() is outputs.transform and nodes["cine"].GetParentTransformNode() is None
    engine = sitk.ReadImage(run.job.last("result")["outputs"]["tps_lge_to_cine"])  # the displacement field the engine wrote (LPS, mm)
    k, j, i = (n // 2 for n in sitk.GetArrayViewFromImage(engine).shape[:3])
    lps = np.asarray(engine.TransformIndexToPhysicalPoint((i, j, k)))
    shown_at = outputs.transform.GetTransformFromParent().TransformPoint((-lps[0], -lps[1], lps[2]))  # where Slicer samples the cine for this LGE point
    moved = lps + np.asarray(engine[i, j, k])
    assert np.abs(np.asarray(engine[i, j, k])).max() > 0.1 and np.allclose(shown_at, (-moved[0], -moved[1], moved[2]), atol=1e-3)
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


def test_a_single_lge_slice_is_segmented_with_the_cine(cardiac_scene):
    """MMSDNet is a 2-D network: one LGE slice (a 2-D image in Slicer) is a valid input, paired with its cine slice."""
    scene, nodes, pair = cardiac_scene
    middle = pair.lge.GetSize()[2] // 2
    one = conversion.image_to_volume_node(pair.lge[:, :, middle : middle + 1], scene, "LGE slice")
    logic = MultiModalSegLogic()
    run = logic.segment(one, nodes["cine"], model="tiny-mmsdnet", device="cpu")
    assert run.job.wait(timeout=300) == 0, run.job.failure()
    outputs = logic.load_results(run, scene)
    logic.discard(run)
    fused = conversion.segmentation_node_to_labelmap(outputs.segmentations["fused LGE"], CARDIAC_MYO_LV, pair.lge[:, :, middle : middle + 1])
    assert fused.GetSize()[2] == 1 and outputs.agreement_table.GetTable().GetNumberOfRows() == 1


def test_flagged_slices_are_shown_at_their_physical_centres(cardiac_scene):
    _, nodes, pair = cardiac_scene  # an oblique LGE: index and RAS axes differ
    centres = MultiModalSegLogic.flagged_slice_centres(CardiacOutputs(nodes["lge"], flagged_slices=[0, 3]))
    nx, ny, _ = pair.lge.GetSize()
    assert [k for k, _ in centres] == [0, 3]
    for k, ras in centres:
        lps = pair.lge.TransformContinuousIndexToPhysicalPoint(((nx - 1) / 2, (ny - 1) / 2, k))
        assert np.allclose(ras, (-lps[0], -lps[1], lps[2]), atol=1e-6)


def cine_sequence(scene, cine: sitk.Image, frames: int):
    """A cine sequence as Slicer holds a 4-D cine: one volume per frame (here the cine scaled by frame + 1)."""
    sequence = slicer.vtkMRMLSequenceNode()
    scene.AddNode(sequence)
    sequence.SetName("cine sequence")
    for frame in range(frames):
        volume = conversion.image_to_volume_node(sitk.Cast(cine, sitk.sitkFloat32) * (frame + 1.0), scene, f"phase {frame}")
        sequence.SetDataNodeAtValue(volume, str(frame))  # the sequence keeps its own copy
        scene.RemoveNode(volume)
    return sequence


def test_a_cine_sequence_is_used_at_the_chosen_frame(cardiac_scene):
    scene, nodes, pair = cardiac_scene
    sequence = cine_sequence(scene, pair.cine, frames=3)
    logic = MultiModalSegLogic()
    run = logic.segment(nodes["lge"], sequence, cine_frame_index=1, model="tiny-mmsdnet", device="cpu")
    exported = read_image(run.folder / "cine.nrrd")
    assert np.allclose(sitk.GetArrayViewFromImage(exported), 2.0 * sitk.GetArrayViewFromImage(pair.cine))  # frame 1, not the first
    assert np.allclose(exported.GetOrigin(), pair.cine.GetOrigin()) and np.allclose(exported.GetDirection(), pair.cine.GetDirection())
    assert run.job.wait(timeout=300) == 0, run.job.failure()
    outputs = logic.load_results(run, scene)
    logic.discard(run)
    assert outputs.aligned_cine.GetName() == "cine sequence frame 1 aligned to LGE"
    assert sequence.GetNumberOfDataNodes() == 3  # the input sequence is untouched
    with pytest.raises(InputError, match=r"cine sequence: has 3 frames \(0..2\); frame 3 does not exist"):
        logic.segment(nodes["lge"], sequence, cine_frame_index=3)
    transforms = slicer.vtkMRMLSequenceNode()
    scene.AddNode(transforms)
    transforms.SetName("motion")
    transforms.SetDataNodeAtValue(slicer.vtkMRMLTransformNode(), "0")
    with pytest.raises(InputError, match="motion: holds vtkMRMLTransformNode, not cine volumes"):
        logic.segment(nodes["lge"], transforms)


def test_the_bundled_models_masks_land_voxel_for_voxel_on_each_inputs_oblique_grid(cardiac_scene):
    """The bundled model (a tiny one may predict nothing): each segmentation node, exported on its input's grid,
    is exactly what the child wrote there."""
    _, nodes, pair = cardiac_scene
    scene = nodes["lge"].GetScene()
    logic = MultiModalSegLogic()
    run = logic.segment(nodes["lge"], nodes["cine"], device="cpu")
    assert run.job.wait(timeout=300) == 0, run.job.failure()
    outputs = logic.load_results(run, scene)
    for name, node in outputs.segmentations.items():
        source = pair.cine if name == "cine" else pair.lge
        back = conversion.segmentation_node_to_labelmap(node, CARDIAC_MYO_LV, source)
        written = sitk.GetArrayFromImage(read_image(SegmentOutput.read(run.folder / "out").mask(name)))
        assert written.any() and np.array_equal(sitk.GetArrayFromImage(back), written), name
    logic.discard(run)


def test_multimodalseg_reports_a_failed_run_and_leaves_the_scene_alone(cardiac_scene):
    scene, nodes, pair = cardiac_scene
    names = node_names(scene)
    logic = MultiModalSegLogic()
    run = logic.segment(nodes["lge"], nodes["cine"], model="tiny-v4", device="cpu")  # the other module's model: the child refuses it
    assert run.job.wait(timeout=300) != 0
    with pytest.raises(InputError, match="is a DualStreamFCN model"):
        logic.load_results(run, scene)
    assert node_names(scene) == names
    with pytest.raises(InputError, match="no LGE volume is selected"):
        logic.segment(None, nodes["cine"])
    empty = conversion.image_to_volume_node(sitk.Image(pair.lge.GetSize(), sitk.sitkUInt8), scene, "blank mask", labelmap=True)
    with pytest.raises(InputError, match="blank mask: is empty; a reference LGE mask marks 200 \\(myocardium\\)"):
        logic.segment(nodes["lge"], nodes["cine"], empty)


def test_the_panels_refuse_blank_nan_and_intensity_references_before_a_child_starts(cardiac_scene):
    scene, nodes, pair = cardiac_scene
    far = sitk.Image(pair.cine)  # the same orientation, 9 m away
    far.SetOrigin((9000.0, 0.0, 0.0))
    with pytest.raises(InputError, match="remote cine and .*: do not overlap in physical space"):
        MultiModalSegLogic().segment(nodes["lge"], conversion.image_to_volume_node(far, scene, "remote cine"))
    blank = conversion.image_to_volume_node(pair.lge * 0, scene, "blank LGE")
    holes = sitk.GetArrayFromImage(sitk.Cast(pair.lge, sitk.sitkFloat32))
    holes[2, 5:9, 5:9] = np.nan
    nan = sitk.GetImageFromArray(holes)
    nan.CopyInformation(pair.lge)
    nan_node = conversion.image_to_volume_node(nan, scene, "LGE with holes")
    cine_as_labels = conversion.image_to_volume_node(sitk.Cast(pair.cine * 1000, sitk.sitkInt16), scene, "cine as labelmap", labelmap=True)
    folders = set(Path(tempfile.gettempdir()).glob("crossmodal-*"))
    refusals = [
        (lambda: MultiModalSegLogic().segment(blank, nodes["cine"]), "blank LGE: is blank: every voxel has the same value 0"),
        (lambda: MultiModalSegLogic().segment(nodes["lge"], blank), "blank LGE: is blank"),
        (lambda: MultiModalSegLogic().segment(nan_node, nodes["cine"]), "LGE with holes: has 16 NaN or infinite voxel(s)"),
        (lambda: MultiModalSegLogic().segment(nodes["lge"], nodes["cine"], cine_as_labels), "cine as labelmap: has "),
        (lambda: DualStreamSegLogic().segment(blank), "blank LGE: is blank"),
    ]
    for segment, message in refusals:
        with pytest.raises(InputError, match=re.escape(message)):
            segment()
    assert set(Path(tempfile.gettempdir()).glob("crossmodal-*")) == folders  # nothing written, no child started


def test_plausibility_warnings_reach_the_panel_naming_the_users_volume(cardiac_scene):
    """The cardiac LGE given to DualStreamSeg: done, with a warning about the volume the user chose, not the
    run's temporary file."""
    scene, nodes, _ = cardiac_scene
    logic = DualStreamSegLogic()
    run = logic.segment(nodes["lge"], model="tiny-v4", device="cpu")
    assert run.job.wait(timeout=300) == 0, run.job.failure()
    outputs = logic.load_results(run, scene)
    logic.discard(run)
    assert outputs.warnings and outputs.warnings[0].startswith("LGE: is only 75 mm thick along its K axis"), outputs.warnings
    assert not any(str(run.folder) in w for w in outputs.warnings)


@pytest.mark.parametrize(
    ("module", "change", "message"),
    [
        ("MultiModalSeg", {"model": "tiny-v4"}, "is a DualStreamFCN model (for abdominal images)"),
        ("MultiModalSeg", {"device": "cuda"}, "no CUDA device is available"),
        ("DualStreamSeg", {"model": "tiny-mmsdnet"}, "is a MMSDNet model (for cardiac images)"),
        ("DualStreamSeg", {"cancel": True}, "cancelled"),
    ],
)
def test_a_failed_or_cancelled_run_explains_itself_and_leaves_the_scene_alone(catalog, module, change, message):
    if change.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    scene = slicer.vtkMRMLScene()
    options = {"model": change.get("model", "tiny-mmsdnet" if module == "MultiModalSeg" else "tiny-v4"), "device": change.get("device", "cpu")}
    if module == "MultiModalSeg":
        pair = cardiac_pair(seed=43)
        logic, inputs = MultiModalSegLogic(), [conversion.image_to_volume_node(pair.lge, scene, "LGE"), conversion.image_to_volume_node(pair.cine, scene, "cine")]
    else:
        image, _ = abdominal_volume("CT", seed=9)
        logic, inputs = DualStreamSegLogic(), [conversion.image_to_volume_node(image, scene, "CT")]
    names, before = node_names(scene), [checksum(node) for node in inputs]
    run = logic.segment(*inputs, **options)
    if change.get("cancel"):
        run.job.cancel()
    assert run.job.wait(timeout=300) != 0
    with pytest.raises(InputError, match=re.escape(message)):
        logic.load_results(run, scene)
    logic.discard(run)
    assert node_names(scene) == names and [checksum(node) for node in inputs] == before


def test_dualstreamseg_segments_a_volume_onto_its_own_grid(catalog):
    scene = slicer.vtkMRMLScene()
    image, _ = abdominal_volume("MR", seed=7)
    volume = conversion.image_to_volume_node(image, scene, "T2")
    logic = DualStreamSegLogic()
    assert logic.guess_modality(volume) == "MR"
    run = logic.segment(volume, model="tiny-v4", device="cpu")
    assert run.job.wait(timeout=300) == 0, run.job.failure()
    outputs = logic.load_results(run, scene)
    assert outputs.modality == "MR" and outputs.volumes_table.GetTable().GetNumberOfRows() == 4
    labels = conversion.segmentation_node_to_labelmap(outputs.segmentation, ABDOMEN, image)
    written = read_image(run.folder / "out" / "organs.nii.gz")
    assert np.array_equal(sitk.GetArrayViewFromImage(labels), sitk.GetArrayViewFromImage(written))  # voxel for voxel
    assert Grid.of(labels) == Grid.of(image)
    with pytest.raises(InputError, match="no CT or MR volume is selected"):
        logic.segment(None)
    one_slice = conversion.image_to_volume_node(image[:, :, 12], scene, "T2 slice")  # a 2-D image: a one-slice volume in Slicer
    with pytest.raises(InputError, match=r"T2 slice: is 1 voxel\(s\), 1 mm, along its K axis: a slice, not a volume"):
        logic.segment(one_slice)
    rerun = logic.segment(volume, model="tiny-v4", device="cpu")
    scene.RemoveNode(volume)  # the user deletes the input while it is being segmented
    names = node_names(scene)
    assert rerun.job.wait(timeout=300) == 0, rerun.job.failure()
    with pytest.raises(InputError, match="T2: was removed from the scene while it was being segmented"):
        logic.load_results(rerun, scene)
    assert node_names(scene) == names


def test_dualstreamseg_mirrors_only_with_a_model_trained_for_it(catalog, models):
    """The panel offers test-time mirroring for a model whose card says it was trained on mirrored patches (the tiny
    test model), not for the bundled one; the child then runs ``segment --mirror`` and says it did."""
    from crossmodal.catalog import find_model

    assert DualStreamSegLogic.supports_mirroring(str(models["abdominal"]))
    assert not DualStreamSegLogic.supports_mirroring(str(find_model(None, "abdominal"))) and not DualStreamSegLogic.supports_mirroring(None)
    scene = slicer.vtkMRMLScene()
    volume = conversion.image_to_volume_node(abdominal_volume("CT", seed=5)[0], scene, "CT")
    run = DualStreamSegLogic().segment(volume, model="tiny-v4", mirror=True, device="cpu")
    assert run.job.wait(timeout=300) == 0, run.job.failure()
    assert "--mirror" in run.job.command
    assert json.loads((run.folder / "out" / "segment.json").read_text())["test_time_mirroring"] is True


def config_of(job) -> dict:
    """The recipe a training child was started with."""
    return json.loads(Path(job.command[job.command.index("--config") + 1]).read_text())


@pytest.mark.parametrize("module", ["MultiModalSeg", "DualStreamSeg"])
def test_panel_training_starts_from_the_bundled_models_own_recipe(module, phantom_mscmrseg, tmp_path, monkeypatch):
    """One source of each recipe: the bundled model's recipe.json, with the user's choices and data folders."""
    monkeypatch.setenv("CROSSMODAL_MODELS", str(tmp_path / "models"))
    if module == "MultiModalSeg":
        job = MultiModalSegLogic().train(phantom_mscmrseg, model_id="mine", lge_fraction=0.5, steps=7, device="cpu")
        task, choices = "cardiac", {"id": "mine", "steps": 7, "lge_fraction": 0.5, "validation": 2}
    else:
        job = DualStreamSegLogic().train(ct=tmp_path, mr=None, model_id="mine", variant="V2", steps=7, device="cpu")
        task, choices = "abdominal", {"id": "mine", "variant": "V2", "steps": 7}
    job.cancel(grace_seconds=0)
    bundled = json.loads(recipe_of(None, task).read_text())
    assert config_of(job) == {**{k: v for k, v in bundled.items() if k != "data"}, **choices}
    assert ("--data" if task == "cardiac" else "--ct") in job.command  # the user's folders, not the recipe's


def test_a_training_started_from_a_panel_fills_its_plot(phantom_mscmrseg, tmp_path):
    scene = slicer.vtkMRMLScene()
    choices = {"architecture": "MMSDNet", "id": "panel", "size": 32, "spacing_mm": 6.0, "filters": 4, "steps": 4,
               "batch_size": 4, "validate_every": 2, "validation": 1}
    job = runs.start_training("cardiac", choices, {"data": str(phantom_mscmrseg)}, tmp_path / "panel", device="cpu")
    table, chart = training_plot(scene, "panel", "test")
    assert job.wait(timeout=300) == 0, job.failure()
    assert append_metrics(table, job.events) == 4
    data = table.GetTable()
    assert [data.GetValue(r, 0).ToDouble() for r in range(4)] == [1, 2, 3, 4] and chart.GetNumberOfPlotSeriesNodes() == 2
    assert (tmp_path / "panel" / "card.json").exists()
    assert json.loads((tmp_path / "panel" / "card.json").read_text())["validation"]["patients"] == [7]  # the highest-numbered labelled pair


def save_and_reload(scene, folder: Path):
    """What Slicer's Save does (each storable node through its default storage node, then the .mrml), and a fresh load."""
    nodes = scene.GetNodes()
    for node in [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]:
        if node.IsA("vtkMRMLStorableNode") and node.GetStorageNode() is None and node.GetSaveWithScene():
            storage = node.CreateDefaultStorageNode()
            scene.AddNode(storage)
            node.SetAndObserveStorageNodeID(storage.GetID())  # the extension can depend on the node (e.g. .seg.nrrd)
            storage.SetFileName(str(folder / f"{node.GetID()}.{storage.GetDefaultWriteFileExtension()}"))
            assert storage.WriteData(node), node.GetName()
    scene.SetURL(str(folder / "scene.mrml"))
    assert scene.Commit()
    reloaded = slicer.vtkMRMLScene()
    reloaded.SetURL(str(folder / "scene.mrml"))
    assert reloaded.Connect()
    return reloaded


def test_outputs_survive_saving_and_reloading_the_scene(cardiac_scene, tmp_path):
    scene, nodes, pair = cardiac_scene
    logic = MultiModalSegLogic()
    run = logic.segment(nodes["lge"], nodes["cine"], nodes["reference"], model="tiny-mmsdnet", device="cpu")
    assert run.job.wait(timeout=300) == 0, run.job.failure()
    outputs = logic.load_results(run, scene)
    logic.discard(run)  # the run's files are gone: everything must be saved from the scene itself
    key = outputs.transform.GetAttribute(OUTPUT_ATTRIBUTE)
    saved = {node.GetName(): node for node in own_outputs(scene, key)}
    reloaded = save_and_reload(scene, tmp_path)
    found = {node.GetName(): node for node in own_outputs(reloaded, key)}
    assert sorted(found) == sorted(saved) and len(found) == 3 + 16 + 2 + 2  # still tagged: a re-run after reloading replaces them
    fused = found["LGE MMSDNet fused (cine + LGE)"]
    assert conversion.segmentation_node_to_labelmap(fused, CARDIAC_MYO_LV, pair.lge).GetSize() == pair.lge.GetSize()
    aligned = found["cine aligned to LGE"]
    assert aligned.GetParentTransformNode().GetName() == "LGE MMSDNet TPS alignment"  # the cine still shows aligned
    point = (5.0, -3.0, 12.0)
    assert np.allclose(aligned.GetParentTransformNode().GetTransformToParent().TransformPoint(point),
                       outputs.transform.GetTransformToParent().TransformPoint(point), atol=1e-4)
    table = found["LGE MMSDNet Dice"].GetTable()
    assert table.GetNumberOfRows() == 4 and table.GetValue(0, 0).ToString() == "fused LGE"
    assert np.isclose(table.GetValue(0, 1).ToDouble(), outputs.dice_table.GetTable().GetValue(0, 1).ToDouble())
