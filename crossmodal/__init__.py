"""crossmodal: the engine behind the MultiModalSeg and DualStreamSeg 3D Slicer modules.

Images are ``SimpleITK.Image`` throughout, so that origin, spacing and direction (LPS, as ITK keeps
them) travel with the voxels from reading to writing back. It never imports Slicer: :mod:`crossmodal_slicer` adapts it to Slicer's scene.
"""

__version__ = "0.1.0"
