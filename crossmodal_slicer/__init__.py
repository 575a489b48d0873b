"""The Qt side that the MultiModalSeg and DualStreamSeg panels share (needs the Slicer application)."""
