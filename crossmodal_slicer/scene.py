"""Building a module's results into the scene: tables, subject-hierarchy folders, transforms, training plots,
and what the slice views show. MRML only (no Qt, no ``slicer.app``), so it runs on any ``vtkMRMLScene``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import slicer
import vtk

from crossmodal_slicer.conversion import node_ijk_to_ras, read_node
from crossmodal_slicer.outputs import OUTPUT_ATTRIBUTE, mark

KEEP = "keep"
"""A slice-view layer left as it is (:func:`show_layers`)."""


def show_layers(scene, *, background=KEEP, foreground=KEEP, label=KEEP, foreground_opacity: float | None = None,
                label_opacity: float | None = None) -> None:
    """Set the background, foreground and label volumes (nodes or ``None``) and opacities of every slice view
    of ``scene``, as ``slicer.util.setSliceViewerLayers`` does for the application's scene."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        for layer, setter in ((background, composite.SetBackgroundVolumeID), (foreground, composite.SetForegroundVolumeID),
                              (label, composite.SetLabelVolumeID)):
            if layer is not KEEP:
                setter(layer.GetID() if layer is not None else None)
        if foreground_opacity is not None:
            composite.SetForegroundOpacity(foreground_opacity)
        if label_opacity is not None:
            composite.SetLabelOpacity(label_opacity)


def show_only(segmentations: Sequence, shown) -> None:
    """Make each segmentation node visible if it is ``shown``, hidden otherwise (display nodes made as needed)."""
    for node in segmentations:
        node.CreateDefaultDisplayNodes()
        node.GetDisplayNode().SetVisibility(node is shown)


def subject_folder(scene, name: str, key: str, parent_node=None) -> int:
    """A subject-hierarchy folder item for grouped outputs (e.g. the anatomy channels), tagged as ``key``'s,
    under ``parent_node``'s item."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    parent = hierarchy.GetItemByDataNode(parent_node) if parent_node is not None else hierarchy.GetSceneItemID()
    parent = parent or hierarchy.GetSceneItemID()
    item = hierarchy.CreateFolderItem(parent, name)
    hierarchy.SetItemAttribute(item, OUTPUT_ATTRIBUTE, key)
    return item


def place_in_folder(scene, node, folder: int) -> None:
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, folder)
    else:  # outside the Slicer application nothing makes items for new nodes
        hierarchy.CreateItem(folder, node)


def table_node(scene, name: str, header: Sequence[str], rows: Sequence[Sequence[object]], key: str, *, label_column: bool = True):
    """A table node, tagged as ``key``'s output: numbers, the first column text when ``label_column``."""
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
    return tuple(float(v) for v in (node_ijk_to_ras(volume) @ [(nx - 1) / 2, (ny - 1) / 2, k, 1])[:3])


def read_transform(path: Path, scene, name: str, key: str):
    """An ITK transform file (e.g. the TPS displacement field) as a transform node, tagged as ``key``'s.

    Slicer reads ITK files as resampling transforms, so a moving image placed under this node is
    shown aligned to the fixed one (here: the cine over the LGE). The file is a run's temporary output,
    so the node lets go of it: saving the scene then writes the transform as new data.
    """
    node = mark(slicer.vtkMRMLTransformNode(), key)
    node = read_node(node, slicer.vtkMRMLTransformStorageNode(), Path(path), scene, "a transform")
    node.SetName(name)
    storage = node.GetStorageNode()
    node.SetAndObserveStorageNodeID(None)
    scene.RemoveNode(storage)
    return node


METRIC_COLUMNS = ("step", "loss", "validation")


def training_plot(scene, name: str, key: str):
    """A table (step, loss, validation Dice) and a chart plotting it, for a live view of a training."""
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
