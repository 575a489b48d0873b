"""DualStreamSeg logic that needs MRML but not Qt (tested on real MRML scenes outside Slicer)."""

from DualStreamSegLib.logic import AbdominalOutputs, AbdominalRun, DualStreamSegLogic

__all__ = ["AbdominalOutputs", "AbdominalRun", "DualStreamSegLogic"]
