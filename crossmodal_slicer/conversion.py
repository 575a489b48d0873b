"""The one adapter between the engine's images (SimpleITK, LPS) and Slicer's nodes (RAS): volumes and
segmentations, in memory and through Slicer's storage nodes.

It needs only MRML classes, storage nodes and module logic classes, never ``slicer.app`` or
``slicer.util``, so it runs on a bare ``vtkMRMLScene``: inside Slicer, and in tests against the Slicer
core libraries from PyPI.

Geometry: ITK keeps LPS, MRML keeps RAS. A volume node's IJK-to-RAS matrix is
``diag(-1, -1, 1) @ [direction * spacing | origin]`` of the SimpleITK image; nothing else changes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from crossmodal.errors import InputError
from crossmodal.image_io import atomic_output, check_writable
from crossmodal.labels import ANATOMICAL_STRUCTURE, Label, LabelSet

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
LABEL_VALUE_TAG = "crossmodal.LabelValue"
"""Segment tag holding the label's value in files (e.g. 200 for MS-CMRSeg myocardium)."""


# --- volumes -------------------------------------------------------------------------------------


def ijk_to_ras(image: sitk.Image) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of a SimpleITK image."""
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = LPS_TO_RAS @ np.asarray(image.GetOrigin(), float)
    return matrix


def image_to_volume_node(image: sitk.Image, scene, name: str, *, node=None, labelmap: bool = False):
    """Put a SimpleITK image into a (new, or the given) scalar or labelmap volume node.

    Passing ``node`` updates that node in place, so that re-running a module replaces its own output.
    A 2-D image becomes a one-slice volume.
    """
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(name, f"has {image.GetPixelIDTypeAsString()} voxels; a real scalar image is needed")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise InputError(name, f"is a {image.GetDimension()}-D image; a volume node holds 3-D images")
    if node is None:
        node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
        scene.AddNode(node)
    node.SetName(name)
    array = sitk.GetArrayFromImage(image)  # (k, j, i): C order is VTK's x-fastest order
    data = vtk.vtkImageData()
    data.SetDimensions(*image.GetSize())
    data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.ravel(), deep=True))
    node.SetAndObserveImageData(data)
    node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras(image)))
    return node


def volume_node_to_image(node) -> sitk.Image:
    """A volume node's voxels and geometry as a SimpleITK image (LPS), exactly.

    A node under a transform is refused: its voxels are not where its matrix says, and silently
    dropping the transform would misplace every result. Harden the transform first.
    """
    name = node.GetName()
    if node.GetParentTransformNode() is not None:
        raise InputError(name, "is under a transform; harden the transform before using it")
    data = node.GetImageData()
    if data is None:
        raise InputError(name, "has no image data")
    if data.GetNumberOfScalarComponents() != 1:
        raise InputError(name, f"has {data.GetNumberOfScalarComponents()} components per voxel; a scalar image is needed")
    size = data.GetDimensions()
    array = numpy_support.vtk_to_numpy(data.GetPointData().GetScalars()).reshape(size[::-1]).copy()
    matrix = node_ijk_to_ras(node)
    lps = LPS_TO_RAS @ matrix[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (lps / spacing).ravel()))
    image.SetOrigin(tuple(float(v) for v in LPS_TO_RAS @ matrix[:3, 3]))
    return image


def read_volume(path: str | os.PathLike[str], scene, *, labelmap: bool = False):
    """Read a NIfTI/NRRD/MHA file into a new volume node through Slicer's archetype storage node."""
    node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetSingleFile(True)  # else numbered neighbours (case1, case2, ...) are stacked as a series
    return read_node(node, storage, Path(path), scene, "a volume")


def write_volume(node, path: str | os.PathLike[str]) -> Path:
    """Write a volume node through Slicer's archetype storage node, atomically (single-file formats)."""
    path = check_writable(path)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetUseCompression(True)
    return _write_atomically(node, storage, path)


# --- segmentations -------------------------------------------------------------------------------


def terminology(label: Label) -> str:
    """Slicer's serialised terminology entry for a label (category, type, modifier; no region)."""
    terminologies = slicer.vtkSlicerTerminologiesModuleLogic
    modifier = label.modifier
    return terminologies.SerializeTerminologyEntry(
        TERMINOLOGY_CONTEXT,
        ANATOMICAL_STRUCTURE.value, ANATOMICAL_STRUCTURE.scheme, ANATOMICAL_STRUCTURE.meaning,
        label.code.value, label.code.scheme, label.code.meaning,
        modifier.value if modifier else "", modifier.scheme if modifier else "", modifier.meaning if modifier else "",
        ANATOMIC_CONTEXT, "", "", "", "", "", "",
    )  # fmt: skip


def labelmap_to_segmentation_node(labels: sitk.Image, label_set: LabelSet, scene, name: str, *, node=None):
    """A label image (file values, e.g. 200/500/600) as a segmentation node.

    Every label of ``label_set`` gets a segment, an empty one if the structure is absent, so that
    names, colours and the order of segments are the same for every case. Each segment carries its
    name, colour, standard terminology and its file value (tag ``crossmodal.LabelValue``).
    """
    label_set.check(sitk.GetArrayViewFromImage(labels), name)
    _register_segmentation_converters()
    if node is None:
        node = slicer.vtkMRMLSegmentationNode()
        scene.AddNode(node)
    node.SetName(name)
    segmentation = node.GetSegmentation()
    segmentation.RemoveAllSegments()
    temporary = image_to_volume_node(labels, scene, f"{name} labels", labelmap=True)
    try:
        node.SetReferenceImageGeometryParameterFromVolumeNode(temporary)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(temporary, node, ""):
            raise InputError(name, "could not be imported as a segmentation")
    finally:
        scene.RemoveNode(temporary)
    imported = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        imported[segmentation.GetSegment(segment_id).GetLabelValue()] = segment_id
    for index, label in enumerate(label_set.labels):
        segment_id = imported.get(label.value)
        if segment_id is None:
            segment_id = segmentation.AddEmptySegment(label.name.replace(" ", "_"), label.name, list(label.color))
        segmentation.SetSegmentIndex(segment_id, index)
        segment = segmentation.GetSegment(segment_id)
        segment.SetName(label.name)
        segment.SetColor(*label.color)
        segment.SetNameAutoGenerated(False)  # else Slicer may rename or recolour it from terminology
        segment.SetColorAutoGenerated(False)
        segment.SetTag(LABEL_VALUE_TAG, str(label.value))
        segment.SetTerminology(terminology(label))
    return node


def _register_segmentation_converters() -> None:
    """The labelmap/surface converter rules the Segmentations module registers when Slicer starts.

    Outside the application (the PyPI Slicer libraries) nothing registers them, and a segmentation
    cannot even make an empty segment (for a structure absent from the labels) without them.
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if len(factory.GetConverterRules()) == 0:
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def segmentation_node_to_labelmap(node, label_set: LabelSet, reference: sitk.Image) -> sitk.Image:
    """A segmentation node as a label image on exactly ``reference``'s grid, with file values.

    Segments are matched to labels by their value tag, else by name; unknown segments are refused.
    """
    scene = node.GetScene()
    segmentation = node.GetSegmentation()
    values_by_name = {label.name: label.value for label in label_set.labels}
    colors = slicer.vtkMRMLColorTableNode()
    colors.SetTypeToUser()
    colors.SetNumberOfColors(max(label_set.values) + 1)
    ids = vtk.vtkStringArray()
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        tag = vtk.reference("")
        value = int(tag.get()) if segment.GetTag(LABEL_VALUE_TAG, tag) else values_by_name.get(segment.GetName())
        if value not in label_set.values:
            raise InputError(node.GetName(), f"segment '{segment.GetName()}' is not one of {list(label_set.names)}")
        colors.SetColor(value, segment.GetName(), *segment.GetColor(), 1.0)
        ids.InsertNextValue(segment_id)
    scene.AddNode(colors)
    empty = sitk.Image(reference.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(reference)
    reference_node = image_to_volume_node(empty, scene, "reference", labelmap=True)
    output = slicer.vtkMRMLLabelMapVolumeNode()
    display = slicer.vtkMRMLLabelMapVolumeDisplayNode()
    try:
        scene.AddNode(output)
        scene.AddNode(display)
        display.SetAndObserveColorNodeID(colors.GetID())
        output.SetAndObserveDisplayNodeID(display.GetID())
        exported = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            node, ids, output, reference_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, colors
        )
        if not exported:
            raise InputError(node.GetName(), "could not be exported to a labelmap")
        image = volume_node_to_image(output)
    finally:
        for temporary in (output, display, reference_node, colors):
            scene.RemoveNode(temporary)
    dtype = np.min_scalar_type(max(label_set.values))
    labels = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(image).astype(dtype))
    labels.CopyInformation(reference)
    return labels


def read_segmentation(path: str | os.PathLike[str], scene):
    """Read a ``.seg.nrrd`` file into a new segmentation node through Slicer's storage node.

    The header is checked with SimpleITK first: Slicer's segmentation reader crashes the whole
    process (segmentation fault) on some malformed files instead of failing.
    """
    path = Path(path)
    if path.is_file():
        header = sitk.ImageFileReader()
        header.SetFileName(str(path))
        try:
            header.ReadImageInformation()
        except RuntimeError:
            raise InputError(path, "could not be read as a segmentation (not a valid NRRD file)") from None
    return read_node(slicer.vtkMRMLSegmentationNode(), slicer.vtkMRMLSegmentationStorageNode(), Path(path), scene, "a segmentation")


def write_segmentation(node, path: str | os.PathLike[str]) -> Path:
    """Write a segmentation node as ``.seg.nrrd`` through Slicer's storage node, atomically."""
    path = Path(path)
    if not path.name.endswith(".seg.nrrd"):
        raise InputError(path, "a segmentation is written as .seg.nrrd")
    check_writable(path)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetUseCompression(True)
    return _write_atomically(node, storage, path)


# --- storage and matrices -------------------------------------------------------------------------------------


def read_node(node, storage, path: Path, scene, what: str):
    """Read ``path`` into ``node`` through ``storage`` (any storable node: volume, segmentation, transform);
    on failure the scene is left as it was."""
    if not path.is_file():
        raise InputError(path, "no such file")
    node.SetName(path.name.split(".")[0])
    storage.SetFileName(str(path))
    scene.AddNode(storage)
    scene.AddNode(node)
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node) or (node.IsA("vtkMRMLVolumeNode") and node.GetImageData() is None):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise InputError(path, f"could not be read as {what}")
    return node


def _write_atomically(node, storage, path: Path) -> Path:
    """Write through ``storage`` to a temporary file beside ``path``, then rename it into place."""
    scene = node.GetScene()
    if scene is None:
        raise InputError(node.GetName(), "is not in a scene")
    if node.GetParentTransformNode() is not None:
        raise InputError(node.GetName(), "is under a transform; harden the transform before saving it")
    with atomic_output(path) as temporary:
        staging = path.parent / f"TempWrite{temporary.name.split('.')[0]}"  # Slicer's volume writer's
        try:
            storage.SetFileName(str(temporary))
            scene.AddNode(storage)
            if not storage.WriteData(node):
                raise InputError(path, f"could not be written ({node.GetName()})")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            scene.RemoveNode(storage)
    return path


def vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    """A 4x4 NumPy matrix as VTK's."""
    result = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            result.SetElement(row, column, float(matrix[row, column]))
    return result


def node_ijk_to_ras(node) -> np.ndarray:
    """A volume node's IJK-to-RAS matrix as 4x4 NumPy."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
