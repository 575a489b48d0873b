"""Files a clinic or a careless export really produces, each with the words its refusal must contain.

Used by the reader tests (:func:`crossmodal.image_io.read_image` refuses each, naming the file) and the
command-line tests (``segment`` exits 2 with one line and writes nothing).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from conftest import oblique_volume, write_dicom_series

from crossmodal.image_io import MEMORY_PER_VOXEL, physical_memory


def _volume() -> sitk.Image:
    return oblique_volume(size=(40, 30, 12), spacing=(1.2, 1.2, 6.0), dtype=np.float32)


def _nifti(folder: Path, name: str, pixdim_k: float | None = None, nan: bool = False) -> Path:
    """A NIfTI written by SimpleITK, then its K voxel size or voxels changed the way a broken exporter would."""
    image = _volume()
    if nan:
        array = sitk.GetArrayFromImage(image)
        array[3, 10:14, 10:14] = np.nan
        patched = sitk.GetImageFromArray(array)
        patched.CopyInformation(image)
        image = patched
    path = folder / name
    sitk.WriteImage(image, str(path))
    if pixdim_k is not None:
        data = bytearray(path.read_bytes())
        data[88:92] = struct.pack("<f", pixdim_k)  # pixdim[3]
        path.write_bytes(bytes(data))
    return path


def _truncated(folder: Path, name: str, pixel: int = sitk.sitkFloat32) -> Path:
    path = folder / name
    sitk.WriteImage(sitk.Cast(_volume(), pixel), str(path), useCompression=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _truncated_nifti_gz(folder: Path, pixel: int = sitk.sitkFloat32) -> Path:
    """Gzip-valid, but the NIfTI inside ends early: ITK reads it as if whole."""
    plain = _truncated(folder, "cut.nii", pixel)
    path = folder / f"cut_inside_{sitk.GetPixelIDValueAsString(pixel).replace(' ', '_')}.nii.gz"
    path.write_bytes(gzip.compress(plain.read_bytes()))
    return path


def _cut_gzip(folder: Path) -> Path:
    path = folder / "cut_gzip.nii.gz"
    sitk.WriteImage(_volume(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _nrrd_header(folder: Path, name: str, old: str, new: str) -> Path:
    """An NRRD whose text header was edited (its data unchanged)."""
    path = folder / name
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((12, 30, 40), dtype=np.float32))
    image.SetSpacing((1.2, 1.2, 6.0))
    sitk.WriteImage(image, str(path), useCompression=False)
    head, body = path.read_bytes().split(b"\n\n", 1)
    assert old.encode() in head
    path.write_bytes(head.replace(old.encode(), new.encode()) + b"\n\n" + body)
    return path


def _huge(folder: Path) -> Path:
    """A header that claims more voxels than this machine could work on; the data is never read."""
    side = int(np.ceil((physical_memory() / MEMORY_PER_VOXEL * 2) ** (1 / 3)))
    path = folder / "huge.nhdr"
    path.write_text(f"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: {side} {side} {side}\n"
                    "space directions: (1,0,0) (0,1,0) (0,0,1)\nkinds: domain domain domain\nendian: little\nencoding: raw\n"
                    "space origin: (0,0,0)\ndata file: huge.raw\n")
    (folder / "huge.raw").write_bytes(b"\0" * 1024)
    return path


def _four_d(folder: Path) -> Path:
    path = folder / "cine4d.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([_volume(), _volume()]), str(path))
    return path


def _dicom_missing_slice(folder: Path) -> Path:
    volume = sitk.Cast(oblique_volume(size=(24, 20, 8), spacing=(0.8, 0.8, 4.0)), sitk.sitkInt16)
    return write_dicom_series(volume, folder / "dicom_gap", skip=(4,))


def _dicom_two_series(folder: Path) -> Path:
    volume = sitk.Cast(oblique_volume(size=(24, 20, 4), spacing=(0.8, 0.8, 4.0)), sitk.sitkInt16)
    write_dicom_series(volume, folder / "dicom_mixed", series="1.2.826.0.1.3680043.2.1125.1.1001")
    return write_dicom_series(volume, folder / "dicom_mixed", series="1.2.826.0.1.3680043.2.1125.1.1002")


def _garbage(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(b"\x00\x01not an image" * 40)
    return path


BUILDERS = {
    "NIfTI with NaN voxels": (lambda f: _nifti(f, "nan.nii.gz", nan=True), "has 16 NaN or infinite voxel(s)"),
    "NIfTI voxel size 0": (lambda f: _nifti(f, "zero_k.nii", pixdim_k=0.0), "every voxel size must be positive"),
    "NIfTI voxel size < 0": (lambda f: _nifti(f, "negative_k.nii", pixdim_k=-6.0), "every voxel size must be positive"),
    "NIfTI truncated": (lambda f: _truncated(f, "cut.nii"), "truncated or corrupt"),
    "NIfTI truncated inside gzip": (_truncated_nifti_gz, "truncated or corrupt"),
    "NIfTI int16 truncated": (lambda f: _truncated(f, "cut16.nii", sitk.sitkInt16), "truncated or corrupt"),
    "NIfTI int16 truncated inside gzip": (lambda f: _truncated_nifti_gz(f, sitk.sitkInt16), "truncated or corrupt"),
    "NIfTI gzip cut": (_cut_gzip, "truncated or corrupt"),
    "NIfTI garbage": (lambda f: _garbage(f, "garbage.nii.gz"), "could not be read"),
    "NRRD truncated": (lambda f: _truncated(f, "cut.nrrd"), "could not be read"),
    "NRRD garbage": (lambda f: _garbage(f, "garbage.nrrd"), "could not be read"),
    "NRRD voxel size 0": (lambda f: _nrrd_header(f, "zero.nrrd", "(0,0,6)", "(0,0,0)"), "could not be read"),
    "NRRD sheared axes": (lambda f: _nrrd_header(f, "sheared.nrrd", "(0,1.2,0)", "(0.8,1.2,0)"), "at 56.3 degrees, not 90: a sheared grid"),
    "MHA truncated": (lambda f: _truncated(f, "cut.mha"), "could not be read"),
    "MHA garbage": (lambda f: _garbage(f, "garbage.mha"), "could not be read"),
    "huge volume": (_huge, "more than this machine's"),
    "4-D where 3-D is needed": (_four_d, "is a 4-D image"),
    "DICOM missing slice": (_dicom_missing_slice, "unevenly spaced slices (8.00 mm after slice 4, 4.00 mm elsewhere)"),
    "DICOM two series": (_dicom_two_series, "holds 2 DICOM series"),
}
BAD_FILES = list(BUILDERS)


def bad_file(case: str, folder: Path) -> tuple[Path, str]:
    """(the file or folder of ``case``, written under ``folder``; words its refusal must contain)."""
    build, message = BUILDERS[case]
    return build(folder), message
