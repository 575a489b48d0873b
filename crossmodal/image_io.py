"""Reading and writing images with their physical geometry, and refusing the ones we cannot use.

SimpleITK keeps origin, spacing and direction (LPS) with the voxels, so every reader returns a
``SimpleITK.Image``. Checks happen here, at the edge, so that the rest of the engine can trust its
inputs: a missing file, an unknown format, the wrong dimensionality or NaN voxels are reported with
the file's name instead of surfacing later as a shape error or a silent NaN loss.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from crossmodal.errors import InputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
"""Formats read; a folder is read as a DICOM series."""
WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
"""Formats written: single files only, so that one rename makes a write atomic."""

PathLike = str | os.PathLike[str]


def image_suffix(path: PathLike) -> str | None:
    """The recognised image suffix of ``path`` (``.nii.gz`` counts as one), or None."""
    name = Path(path).name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), None)


def read_image(path: PathLike, *, dimension: int | None = 3, series_id: str | None = None) -> sitk.Image:
    """Read a NIfTI/NRRD/MHA file or a DICOM series folder, geometry kept.

    ``dimension`` is the dimensionality the caller needs (None accepts any); a 2-D slice where a
    volume is needed, or a 4-D cine where one frame is needed, is refused here with a hint.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    image = _read_dicom_series(path, series_id) if path.is_dir() else _read_file(path)
    if dimension is not None and image.GetDimension() != dimension:
        hint = " (a time series: read one frame with read_cine_frame)" if image.GetDimension() == 4 else ""
        raise InputError(path, f"is a {image.GetDimension()}-D image{hint}; a {dimension}-D image is needed")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; a scalar image is needed")
    check_finite(image, path)
    return image


def read_cine_frame(path: PathLike, frame: int = 0) -> sitk.Image:
    """One 3-D frame of a cine: a 4-D (x, y, z, t) file, or a 3-D file that is already one frame."""
    image = read_image(path, dimension=None)
    if image.GetDimension() == 3:
        if frame != 0:
            raise InputError(path, f"is a single 3-D frame; frame {frame} does not exist")
        return image
    if image.GetDimension() != 4:
        raise InputError(path, f"is a {image.GetDimension()}-D image; a 3-D volume or 4-D cine is needed")
    frames = image.GetSize()[3]
    if not 0 <= frame < frames:
        raise InputError(path, f"has {frames} time frames (0..{frames - 1}); frame {frame} does not exist")
    size = list(image.GetSize())
    size[3] = 0  # Extract with a zero-size axis collapses it, keeping the 3-D geometry.
    return sitk.Extract(image, size, [0, 0, 0, frame])


def check_finite(image: sitk.Image, source: PathLike) -> None:
    """Refuse NaN or infinite voxels: they poison normalisation and losses without an error."""
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return
    array = sitk.GetArrayViewFromImage(image)
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InputError(source, f"has {bad} NaN or infinite voxel(s) of {array.size}")


def write_image(image: sitk.Image, path: PathLike, *, compress: bool = True) -> Path:
    """Write atomically: a reader never sees a half-written file, and a failed write leaves the old one."""
    path = check_writable(path)
    with atomic_output(path) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=compress)
    return path


def check_writable(path: PathLike) -> Path:
    """Refuse, before any work, an output in a format we cannot write or in a folder that does not exist."""
    path = Path(path)
    if not path.name.lower().endswith(WRITABLE_SUFFIXES):
        raise InputError(path, f"cannot write this format; use one of {', '.join(WRITABLE_SUFFIXES)}")
    if not path.parent.is_dir():
        raise InputError(path.parent, "output folder does not exist")
    return path


def writable_folder(folder: PathLike) -> Path:
    """Create ``folder`` (with its parents) if needed, and refuse, before any work, one that cannot be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(folder, f"output folder cannot be created ({error.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise InputError(folder, "output folder is not writable")
    return folder


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (same suffix) that replaces ``path`` only if the block succeeds.

    The name has no dot before its random part: Slicer's volume writer stages its files in
    ``TempWrite<name up to the first dot>``, so a dotted name would make writes share that folder.
    """
    fd, name = tempfile.mkstemp(prefix="partial-", suffix=f"-{path.name}", dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())  # mkstemp makes it private; the output should not be
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _read_file(path: Path) -> sitk.Image:
    if image_suffix(path) is None:
        raise InputError(path, f"unsupported format; expected one of {', '.join(IMAGE_SUFFIXES)} or a DICOM folder")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(path, f"could not be read as an image ({_first_line(error)})") from None


def _read_dicom_series(folder: Path, series_id: str | None) -> sitk.Image:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(folder, "is a folder without a DICOM series")
    if series_id is None:
        if len(series) > 1:
            raise InputError(folder, f"holds {len(series)} DICOM series ({', '.join(series)}); choose one")
        series_id = series[0]
    elif series_id not in series:
        raise InputError(folder, f"has no DICOM series {series_id}; it has {', '.join(series)}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id))
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise InputError(folder, f"DICOM series {series_id} could not be read ({_first_line(error)})") from None


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
