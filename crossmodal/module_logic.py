"""What the logic of both Slicer modules shares (MRML, no Qt): inputs out to files, a ``crossmodal``
child process, and results into the scene as the module's own, replaceable outputs.

A module never modifies its input nodes. Every node it creates is tagged with the attribute
:data:`OUTPUT_ATTRIBUTE` = ``<module>/<input node ID>``, so that running it again on the same input
replaces exactly its earlier outputs and nothing else. The tag is saved with the scene.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from crossmodal import mrml
from crossmodal.catalog import list_models
from crossmodal.errors import InputError
from crossmodal.image_io import write_image
from crossmodal.jobs import ChildJob

OUTPUT_ATTRIBUTE = "crossmodal.Output"


def output_key(module: str, input_node) -> str:
    return f"{module}/{input_node.GetID()}"


def own_outputs(scene, key: str) -> list:
    nodes = scene.GetNodes()
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems()) if nodes.GetItemAsObject(i).GetAttribute(OUTPUT_ATTRIBUTE) == key]


def remove_outputs(scene, key: str) -> None:
    """Remove the nodes an earlier run made for ``key`` (and their display and storage nodes)."""
    for node in own_outputs(scene, key):
        if node.IsA("vtkMRMLDisplayableNode"):
            for i in range(node.GetNumberOfDisplayNodes()):
                display = node.GetNthDisplayNode(i)
                if display is not None:
                    scene.RemoveNode(display)
        if node.IsA("vtkMRMLStorableNode") and node.GetStorageNode() is not None:
            scene.RemoveNode(node.GetStorageNode())
        scene.RemoveNode(node)


def mark(node, key: str):
    node.SetAttribute(OUTPUT_ATTRIBUTE, key)
    return node


def export_inputs(nodes: dict[str, object], folder: Path) -> dict[str, Path]:
    """Each (role -> volume node) written as NRRD, geometry exact; a missing node is a clear error."""
    paths = {}
    for role, node in nodes.items():
        if node is None:
            raise InputError(role, "no volume is selected")
        paths[role] = write_image(mrml.volume_node_to_image(node), folder / f"{role}.nrrd")
    return paths


def work_folder(prefix: str) -> Path:
    """A fresh temporary folder for one run's files (inputs out, outputs back)."""
    return Path(tempfile.mkdtemp(prefix=f"crossmodal-{prefix}-"))


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


def subject_folder(scene, name: str, key: str, parent_node=None) -> int:
    """A subject-hierarchy folder item for grouped outputs (e.g. the anatomy channels), under ``parent_node``'s item."""
    slicer = mrml._slicer()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    parent = hierarchy.GetItemByDataNode(parent_node) if parent_node is not None else hierarchy.GetSceneItemID()
    parent = parent or hierarchy.GetSceneItemID()
    item = hierarchy.CreateFolderItem(parent, name)
    hierarchy.SetItemAttribute(item, OUTPUT_ATTRIBUTE, key)
    return item


def remove_subject_folders(scene, key: str) -> None:
    slicer = mrml._slicer()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    vtk, _ = mrml._vtk()
    items = vtk.vtkIdList()
    hierarchy.GetItemChildren(hierarchy.GetSceneItemID(), items, True)
    for i in range(items.GetNumberOfIds()):
        item = items.GetId(i)
        if hierarchy.GetItemAttribute(item, OUTPUT_ATTRIBUTE) == key:
            hierarchy.RemoveItem(item, False, False)


def place_in_folder(scene, node, folder: int) -> None:
    slicer = mrml._slicer()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, folder)
    else:  # outside the Slicer application nothing makes items for new nodes
        hierarchy.CreateItem(folder, node)


def table_node(scene, name: str, header: Sequence[str], rows: Sequence[Sequence[object]], key: str, *, label_column: bool = True):
    """A table node, tagged as ``key``'s output: numbers, the first column text when ``label_column``."""
    slicer = mrml._slicer()
    vtk, _ = mrml._vtk()
    node = mark(slicer.vtkMRMLTableNode(), key)
    scene.AddNode(node)
    node.SetName(name)
    table = node.GetTable()
    for index, title in enumerate(header):
        column = vtk.vtkStringArray() if index == 0 and label_column else vtk.vtkDoubleArray()
        column.SetName(title)
        table.AddColumn(column)
    table.SetNumberOfRows(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.SetValue(r, c, vtk.vtkVariant(str(value) if c == 0 and label_column else float(value)))
    node.Modified()
    return node


def slice_centre_ras(volume, k: int) -> tuple[float, float, float]:
    """The RAS centre of slice ``k`` of a volume node, where the viewers jump to show that slice."""
    nx, ny, _ = volume.GetImageData().GetDimensions()
    return tuple(float(v) for v in (mrml._node_ijk_to_ras(volume) @ [(nx - 1) / 2, (ny - 1) / 2, k, 1])[:3])


def read_transform(path: Path, scene, name: str, key: str):
    """An ITK transform file (e.g. the TPS displacement field) as a transform node.

    Slicer reads ITK files as resampling transforms, so a moving image placed under this node is
    shown aligned to the fixed one (here: the cine over the LGE). The file is a run's temporary output,
    so the node lets go of it: saving the scene then writes the transform as new data.
    """
    slicer = mrml._slicer()
    node = mark(slicer.vtkMRMLTransformNode(), key)
    node = mrml._read(node, slicer.vtkMRMLTransformStorageNode(), Path(path), scene, "a transform")
    node.SetName(name)
    storage = node.GetStorageNode()
    node.SetAndObserveStorageNodeID(None)
    scene.RemoveNode(storage)
    return node


# --- training from a panel ---------------------------------------------------------------------


def start_training(recipe: dict, data: dict[str, str], out: Path, *, resume: bool = False, python: str | None = None, device: str = "auto") -> ChildJob:
    """``crossmodal train`` on a recipe made from the panel's choices; ``data`` maps --data/--ct/--mr to folders."""
    folder = work_folder("train")
    config = folder / "recipe.json"
    config.write_text(json.dumps(recipe, indent=1))
    arguments = ["train", "--config", str(config), "--out", str(out), *(a for flag, path in data.items() for a in (f"--{flag}", str(path)))]
    return start([*arguments, *(["--resume"] if resume else [])], python, device)


METRIC_COLUMNS = ("step", "loss", "validation")


def training_plot(scene, name: str, key: str):
    """A table (step, loss, validation Dice) and a chart plotting it, for a live view of a training."""
    slicer = mrml._slicer()
    table = table_node(scene, f"{name} metrics", METRIC_COLUMNS, [], key, label_column=False)
    chart = mark(slicer.vtkMRMLPlotChartNode(), key)
    scene.AddNode(chart)
    chart.SetName(f"{name} training")
    chart.SetXAxisTitle("step")
    chart.SetYAxisTitle("loss / Dice")
    for column in ("loss", "validation"):
        series = mark(slicer.vtkMRMLPlotSeriesNode(), key)
        scene.AddNode(series)
        series.SetName(f"{name} {column}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("step")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return table, chart


def append_metrics(table, events: Sequence[dict]) -> int:
    """Add a row per ``metrics`` event (validation missing -> NaN); returns how many were added."""
    rows = [e for e in events if e.get("type") == "metrics"]
    data = table.GetTable()
    for event in rows:
        values = event["values"]
        data.InsertNextBlankRow()
        row = data.GetNumberOfRows() - 1
        for column, value in enumerate((event["step"], values.get("loss", float("nan")), values.get("validation", float("nan")))):
            data.SetValue(row, column, float(value))
    if rows:
        table.Modified()
    return len(rows)
