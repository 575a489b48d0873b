"""The MultiModalSeg panel's parameters, kept in the scene by Slicer's parameter node wrapper (saved with it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Union

from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLSequenceNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper


@parameterNodeWrapper
class MultiModalSegParameterNode:
    """A Union of node types must list ``None``: the wrapper writes ``None`` as the default, and Slicer's
    Union serializer refuses a value none of its members can hold."""

    lgeVolume: vtkMRMLScalarVolumeNode
    cineVolume: Union[vtkMRMLScalarVolumeNode, vtkMRMLSequenceNode, None]  # noqa: UP007 - the wrapper reads typing.Union only
    cineFrame: Annotated[int, WithinRange(0, 999)] = 0
    """Bounded again by the chosen sequence's frames in the panel (the GUI connector resets it to 0..999)."""
    referenceSegmentation: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]  # noqa: UP007
    anatomyChannel: Annotated[int, WithinRange(1, 8)] = 1
    showAlignedCine: bool = True
    trainingData: Path
    """``Path(".")`` until a folder is chosen (a path line edit cannot hold None): see :func:`chosen_folder`."""
    trainingModelId: str = "my-mmsdnet"
    lgeMaskPercent: Annotated[float, WithinRange(0, 100)] = 100
    trainingSteps: Annotated[int, WithinRange(10, 200000)] = 1500
