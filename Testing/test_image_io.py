"""Readers and writers keep geometry and voxels, and refuse bad input with the file's name."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk
from bad_inputs import BAD_FILES, bad_file
from conftest import oblique_volume, write_dicom_series

from crossmodal.errors import InputError
from crossmodal.image_io import read_cine_frame, read_image, write_image


def assert_same_image(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_file_round_trip_keeps_geometry(tmp_path, oblique, suffix):
    path = write_image(oblique, tmp_path / f"volume{suffix}")
    image = read_image(path)
    assert_same_image(image, oblique)
    assert image.GetPixelID() == oblique.GetPixelID()


def test_write_is_atomic_and_leaves_no_temporary(tmp_path, oblique):
    target = tmp_path / "out.nrrd"
    write_image(oblique, target)
    write_image(oblique_volume(seed=1), target)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nrrd"]
    assert_same_image(read_image(target), oblique_volume(seed=1))


def test_dicom_series_folder(tmp_path):
    volume = oblique_volume(size=(24, 20, 6), spacing=(0.8, 0.8, 4.0), dtype=np.int16)
    image = read_image(write_dicom_series(volume, tmp_path))
    assert image.GetSize() == volume.GetSize()
    np.testing.assert_allclose(image.GetOrigin(), volume.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(image.GetSpacing(), volume.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(image.GetDirection(), volume.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(volume))
    assert image.GetMetaData("0008|0060") == "MR"  # the Modality tag travels with the volume (which stream, in the abdominal model)


def test_cine_frame_from_4d(tmp_path):
    frames = [oblique_volume(seed=t, dtype=np.float32) for t in range(4)]
    cine = sitk.JoinSeries(frames)
    path = write_image(cine, tmp_path / "cine.nii.gz")
    frame = read_cine_frame(path, 2)
    assert frame.GetDimension() == 3
    assert_same_image(frame, frames[2])
    with pytest.raises(InputError, match=r"cine.nii.gz: has 4 time frames \(0..3\); frame 7"):
        read_cine_frame(path, 7)
    with pytest.raises(InputError, match="4-D image .*read_cine_frame"):
        read_image(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"nothere.nii.gz: no such file"):
        read_image(tmp_path / "nothere.nii.gz")


def test_unsupported_format(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="scan.png: unsupported format"):
        read_image(path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "broken.nrrd"
    path.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="broken.nrrd: could not be read"):
        read_image(path)


def test_2d_image_where_volume_needed(tmp_path):
    path = write_image(sitk.Image(16, 16, sitk.sitkInt16), tmp_path / "slice.nrrd")
    with pytest.raises(InputError, match="slice.nrrd: is a 2-D image; a 3-D image is needed"):
        read_image(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_voxels(tmp_path, bad):
    array = np.ones((4, 5, 6), np.float32)
    array[1, 2, 3] = bad
    path = write_image(sitk.GetImageFromArray(array), tmp_path / "nan.mha")
    with pytest.raises(InputError, match="nan.mha: has 1 NaN or infinite voxel"):
        read_image(path)


def test_write_refuses_unknown_format_and_missing_folder(tmp_path, oblique):
    with pytest.raises(InputError, match="cannot write this format"):
        write_image(oblique, tmp_path / "x.png")
    with pytest.raises(InputError, match="output folder does not exist"):
        write_image(oblique, tmp_path / "no" / "x.nrrd")


@pytest.mark.parametrize("case", BAD_FILES)
def test_every_bad_file_is_refused_naming_it_and_the_problem(tmp_path, case):
    path, message = bad_file(case, tmp_path)
    with pytest.raises(InputError) as refused:
        read_image(path)
    assert str(refused.value).startswith(f"{path}: ") and message in str(refused.value), str(refused.value)


def test_a_whole_nifti_in_two_gzip_members_is_read(tmp_path, oblique):
    """The fast truncation check trusts the length a gzip stream records at its end; a file of two gzip members
    (as some compressors write) records only the last one's, and must still be read, not refused."""
    plain = write_image(oblique, tmp_path / "volume.nii", compress=False).read_bytes()
    half = len(plain) // 2
    path = tmp_path / "members.nii.gz"
    path.write_bytes(gzip.compress(plain[:half]) + gzip.compress(plain[half:]))
    assert_same_image(read_image(path), oblique)
