"""MultiModalSeg's logic and parameters (MRML, no Qt; tested on real MRML scenes with Slicer's own Python)."""

from MultiModalSegLib.logic import CardiacOutputs, CardiacRun, MultiModalSegLogic
from MultiModalSegLib.parameters import MultiModalSegParameterNode

__all__ = ["CardiacOutputs", "CardiacRun", "MultiModalSegLogic", "MultiModalSegParameterNode"]
