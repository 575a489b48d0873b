"""MRML adapter against the real Slicer core libraries (PyPI slicer-core): a fresh scene per test."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import oblique_volume

from crossmodal.errors import InputError
from crossmodal.image_io import write_image
from crossmodal.labels import CARDIAC_MYO_LV, MSCMRSEG
from crossmodal.phantoms import cardiac_pair
from crossmodal_slicer import conversion

slicer = pytest.importorskip("slicer", reason="the Slicer core libraries (pip install -e '.[dev]') are not installed")
vtk = pytest.importorskip("vtk")


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


def node_matrix(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def assert_same_image(a: sitk.Image, b: sitk.Image, atol=1e-9) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=atol)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=atol)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=atol)
    assert sitk.GetArrayViewFromImage(a).dtype == sitk.GetArrayViewFromImage(b).dtype
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def labels_on(image: sitk.Image, values=(0, 200, 500, 600), seed=0) -> sitk.Image:
    k, j, i = np.indices(image.GetSize()[::-1])
    rng = np.random.default_rng(seed)
    array = np.zeros(image.GetSize()[::-1], np.uint16)
    for value in values[1:]:
        centre = rng.uniform(0.2, 0.8, 3) * np.array(image.GetSize()[::-1])
        array[((k - centre[0]) / 3) ** 2 + ((j - centre[1]) / 8) ** 2 + ((i - centre[2]) / 9) ** 2 < 1] = value
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(image)
    return labels


@pytest.mark.parametrize("reflected", [False, True], ids=["rotation", "det-1 like MS-CMRSeg"])
def test_ijk_to_ras_of_an_oblique_anisotropic_volume(scene, oblique, reflected):
    if reflected:  # the real MS-CMRSeg headers have left-handed direction matrices
        direction = np.asarray(oblique.GetDirection()).reshape(3, 3) @ np.diag([1.0, -1.0, 1.0])
        oblique.SetDirection(tuple(direction.ravel()))
    node = conversion.image_to_volume_node(oblique, scene, "oblique")
    # Expected RAS matrix computed independently from SimpleITK's own index-to-point mapping.
    for index in [(0, 0, 0), (36, 28, 10), (7, 3, 9)]:
        lps = np.array(oblique.TransformIndexToPhysicalPoint(index))
        ras = node_matrix(node) @ np.r_[index, 1.0]
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)
    np.testing.assert_allclose(node.GetSpacing(), oblique.GetSpacing(), atol=1e-12)
    assert_same_image(conversion.volume_node_to_image(node), oblique)


def test_update_in_place_replaces_the_same_node(scene, oblique):
    node = conversion.image_to_volume_node(oblique, scene, "result")
    again = conversion.image_to_volume_node(oblique_volume(seed=3), scene, "result", node=node)
    assert again is node and scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1
    assert_same_image(conversion.volume_node_to_image(node), oblique_volume(seed=3))


def test_file_to_node_to_file_keeps_geometry(scene, oblique, tmp_path):
    source = write_image(oblique, tmp_path / "in.nii.gz")
    node = conversion.read_volume(source, scene)
    assert_same_image(conversion.volume_node_to_image(node), sitk.ReadImage(str(source)), atol=1e-5)
    out = conversion.write_volume(node, tmp_path / "out.nrrd")
    assert_same_image(sitk.ReadImage(str(out)), oblique, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz", "out.nrrd"]


def test_labelmap_segmentation_round_trip(scene, oblique):
    labels = labels_on(oblique)
    node = conversion.labelmap_to_segmentation_node(labels, MSCMRSEG, scene, "LGE segmentation")
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    for index, label in enumerate(MSCMRSEG.labels):
        segment = segmentation.GetNthSegment(index)
        assert segment.GetName() == label.name
        np.testing.assert_allclose(segment.GetColor(), label.color, atol=1e-6)
        entry = slicer.vtkSlicerTerminologyEntry()
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        assert entry.GetTypeObject().GetCodeValue() == label.code.value
    back = conversion.segmentation_node_to_labelmap(node, MSCMRSEG, oblique)
    assert_same_image(back, labels)


def test_absent_structures_get_empty_segments(scene, oblique):
    labels = labels_on(oblique, values=(0, 500))
    node = conversion.labelmap_to_segmentation_node(labels, MSCMRSEG, scene, "only LV")
    names = [node.GetSegmentation().GetNthSegment(i).GetName() for i in range(3)]
    assert names == ["myocardium", "left ventricle", "right ventricle"]
    assert_same_image(conversion.segmentation_node_to_labelmap(node, MSCMRSEG, oblique), labels)


def test_segmentation_file_round_trip_in_a_new_scene(scene, oblique, tmp_path):
    labels = labels_on(oblique, seed=4)
    node = conversion.labelmap_to_segmentation_node(labels, MSCMRSEG, scene, "seg")
    path = conversion.write_segmentation(node, tmp_path / "seg.seg.nrrd")
    fresh = slicer.vtkMRMLScene()
    loaded = conversion.read_segmentation(path, fresh)
    assert [loaded.GetSegmentation().GetNthSegment(i).GetName() for i in range(3)] == list(MSCMRSEG.names)
    assert_same_image(conversion.segmentation_node_to_labelmap(loaded, MSCMRSEG, oblique), labels)


def test_bad_inputs_are_named(scene, oblique, tmp_path):
    with pytest.raises(InputError, match="missing.nrrd: no such file"):
        conversion.read_volume(tmp_path / "missing.nrrd", scene)
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_bytes(b"not a volume")
    with pytest.raises(InputError, match="garbage.nrrd: could not be read as a volume"):
        conversion.read_volume(garbage, scene)
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0  # nothing half-made is left
    bad_segmentation = tmp_path / "bad.seg.nrrd"
    bad_segmentation.write_bytes(b"NRRD0004\nnot really")
    with pytest.raises(InputError, match="bad.seg.nrrd: could not be read as a segmentation"):
        conversion.read_segmentation(bad_segmentation, scene)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    with pytest.raises(InputError, match=r"bad mask: mask has unexpected label value\(s\) \[300\]"):
        conversion.labelmap_to_segmentation_node(labels_on(oblique, values=(0, 300)), MSCMRSEG, scene, "bad mask")
    vector = sitk.Compose(oblique, oblique)
    with pytest.raises(InputError, match="rgb: has vector of 16-bit signed integer voxels; a real scalar image"):
        conversion.image_to_volume_node(vector, scene, "rgb")
    with pytest.raises(InputError, match="a segmentation is written as .seg.nrrd"):
        conversion.write_segmentation(slicer.vtkMRMLSegmentationNode(), tmp_path / "x.nrrd")


def test_numbered_neighbours_are_not_stacked(scene, tmp_path):
    # Slicer's archetype reader would read case1/case2/case3 single slices as one series.
    for value in (1, 2, 3):
        write_image(sitk.Image(9, 8, 1, sitk.sitkUInt8) + value, tmp_path / f"case{value}.nrrd")
    node = conversion.read_volume(tmp_path / "case1.nrrd", scene)
    assert node.GetImageData().GetDimensions() == (9, 8, 1)
    assert set(np.unique(sitk.GetArrayFromImage(conversion.volume_node_to_image(node)))) == {1}


def test_writing_leaves_neighbouring_folders_alone(scene, oblique, tmp_path):
    (tmp_path / "TempWrite").mkdir()
    (tmp_path / "TempWrite" / "keep.txt").write_text("user data")
    node = conversion.image_to_volume_node(oblique, scene, "out")
    conversion.write_volume(node, tmp_path / "out.nrrd")
    with pytest.raises(InputError, match="cannot write this format"):
        conversion.write_volume(node, tmp_path / "out.xyz")
    assert (tmp_path / "TempWrite" / "keep.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["TempWrite", "out.nrrd"]


def test_segments_keep_their_names_and_colours_when_saved(scene, oblique):
    node = conversion.labelmap_to_segmentation_node(labels_on(oblique), MSCMRSEG, scene, "seg")
    for index in range(3):
        segment = node.GetSegmentation().GetNthSegment(index)
        assert not segment.GetNameAutoGenerated() and not segment.GetColorAutoGenerated()


def test_transformed_node_is_refused(scene, oblique, tmp_path):
    node = conversion.image_to_volume_node(oblique, scene, "moved")
    transform = slicer.vtkMRMLLinearTransformNode()
    scene.AddNode(transform)
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(InputError, match="moved: is under a transform; harden"):
        conversion.volume_node_to_image(node)
    with pytest.raises(InputError, match="moved: is under a transform; harden"):
        conversion.write_volume(node, tmp_path / "never-written.nrrd")
    assert not any(tmp_path.iterdir())


def test_labels_missing_a_structure_or_all_structures_still_give_every_segment(scene):
    pair = cardiac_pair(seed=41)
    for keep in ((), (200,)):
        array = sitk.GetArrayFromImage(pair.lge_mask)
        array[~np.isin(array, keep)] = 0
        labels = sitk.GetImageFromArray(array)
        labels.CopyInformation(pair.lge_mask)
        node = conversion.labelmap_to_segmentation_node(labels, CARDIAC_MYO_LV, scene, f"keep {keep}")
        segmentation = node.GetSegmentation()
        assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == ["myocardium", "left ventricle"]
        back = conversion.segmentation_node_to_labelmap(node, CARDIAC_MYO_LV, pair.lge_mask)
        assert np.array_equal(sitk.GetArrayViewFromImage(back), array)
