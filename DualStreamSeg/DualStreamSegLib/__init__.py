"""DualStreamSeg's logic and parameters (MRML, no Qt; tested on real MRML scenes with Slicer's own Python)."""

from DualStreamSegLib.logic import AbdominalOutputs, AbdominalRun, DualStreamSegLogic
from DualStreamSegLib.parameters import DualStreamSegParameterNode

__all__ = ["AbdominalOutputs", "AbdominalRun", "DualStreamSegLogic", "DualStreamSegParameterNode"]
