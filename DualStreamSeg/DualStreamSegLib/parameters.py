"""The DualStreamSeg panel's parameters, kept in the scene by Slicer's parameter node wrapper (saved with it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper


@parameterNodeWrapper
class DualStreamSegParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    modality: Annotated[str, Choice(["auto", "CT", "MR"])] = "auto"
    mirror: bool = False
    """Test-time mirroring; used only with a model trained for it (the panel disables it for any other)."""
    trainingCT: Path
    """``Path(".")`` until a folder is chosen, as ``trainingMR`` (see ``crossmodal_slicer.runs.chosen_folder``)."""
    trainingMR: Path
    trainingModelId: str = "my-dualstream"
    variant: Annotated[str, Choice(["V4", "V3", "V2", "V1", "Joint", "Individual"])] = "V4"
    trainingSteps: Annotated[int, WithinRange(10, 200000)] = 3000
