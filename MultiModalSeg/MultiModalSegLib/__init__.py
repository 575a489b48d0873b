"""MultiModalSeg logic that needs MRML but not Qt (tested on real MRML scenes outside Slicer)."""

from MultiModalSegLib.logic import CardiacOutputs, CardiacRun, MultiModalSegLogic

__all__ = ["CardiacOutputs", "CardiacRun", "MultiModalSegLogic"]
