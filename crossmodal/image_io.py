"""Reading and writing images with their physical geometry, and refusing the ones we cannot use.

SimpleITK keeps origin, spacing and direction (LPS) with the voxels, so every reader returns a
``SimpleITK.Image``. Checks happen here, at the edge, so that the rest of the engine can trust its
inputs: a missing file, an unknown format, a truncated file, the wrong dimensionality, NaN voxels, a
grid with zero, negative or sheared axes, a volume too large for this machine's memory, or a DICOM
series with missing slices are reported with the file's name instead of surfacing later as a shape
error, a silent NaN loss, a wrong geometry or an out-of-memory kill.

ITK's NIfTI reader hides three of these (it turns NaN into 0, reads a truncated file as if it were
whole, and replaces a zero voxel size by 1 mm), so NIfTI headers and data are also checked with
nibabel, which reports them.
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


def read_image(path: PathLike, *, dimension: int | None = 3, series_id: str | None = None, components: int = 1) -> sitk.Image:
    """Read a NIfTI/NRRD/MHA file or a DICOM series folder, geometry kept.

    ``dimension`` is the dimensionality the caller needs (None accepts any); a 2-D slice where a
    volume is needed, or a 4-D cine where one frame is needed, is refused here with a hint.
    ``components`` per voxel: 1 for images and masks, 3 for a displacement field.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    image = _read_dicom_series(path, series_id) if path.is_dir() else _read_file(path)
    check_grid(image, path)
    if dimension is not None and image.GetDimension() != dimension:
        hint = " (a time series: read one frame with read_cine_frame)" if image.GetDimension() == 4 else ""
        raise InputError(path, f"is a {image.GetDimension()}-D image{hint}; a {dimension}-D image is needed")
    if image.GetNumberOfComponentsPerPixel() != components:
        needed = "a scalar image" if components == 1 else f"{components} (a vector image)"
        raise InputError(path, f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; {needed} is needed")
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
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        _refuse_non_finite(sitk.GetArrayViewFromImage(image), source)


def _refuse_non_finite(array: np.ndarray, source: PathLike) -> None:
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InputError(source, f"has {bad} NaN or infinite voxel(s) of {array.size}")


def check_grid(image: sitk.Image, source: PathLike) -> None:
    """Refuse a voxel grid that is not a grid: a zero, negative or non-finite voxel size, or axes that are not
    perpendicular (a sheared header); every resampling here assumes an orthonormal direction."""
    spacing = np.asarray(image.GetSpacing(), float)
    if not np.all(np.isfinite(spacing) & (spacing > 0)):
        raise InputError(source, f"has voxel size {tuple(round(float(s), 4) for s in spacing)} mm; every voxel size must be positive")
    n = image.GetDimension()
    direction = np.asarray(image.GetDirection(), float).reshape(n, n)
    gram = direction.T @ direction
    if not np.allclose(gram, np.eye(n), atol=1e-3):
        i, j = np.unravel_index(np.argmax(np.abs(gram - np.eye(n))), gram.shape)
        angle = np.degrees(np.arccos(np.clip(gram[i, j] / np.sqrt(gram[i, i] * gram[j, j]), -1, 1)))
        raise InputError(source, f"has voxel axes {'IJKT'[i]} and {'IJKT'[j]} at {angle:.1f} degrees, not 90: a sheared grid, which cannot be "
                                 "resampled faithfully; reformat it onto a rectilinear grid first")


def require_signal(image: sitk.Image, source: PathLike) -> None:
    """Refuse an intensity image with one value everywhere (a blank or failed export): a model would still
    "find" structures on it."""
    array = sitk.GetArrayViewFromImage(image)
    if array.size == 0 or float(array.min()) == float(array.max()):
        value = f" {float(array.flat[0]):g}" if array.size else ""
        raise InputError(source, f"is blank: every voxel has the same value{value}; a blank or failed export cannot be segmented")


MEMORY_PER_VOXEL = 48
"""Bytes of working memory per input voxel that segmenting or training needs at most (float copies of the
image, class probabilities resampled back, labels): the basis of refusing a volume before reading it."""


def physical_memory() -> int:
    """This machine's RAM in bytes (a volume is refused when working on it would need more)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a workstation
        return 16 * 2**30


def require_memory(size: tuple[int, ...], source: PathLike) -> None:
    """Refuse, from its header alone, a volume whose processing would need more memory than the machine has."""
    voxels = int(np.prod(size, dtype=np.int64))
    needed, available = voxels * MEMORY_PER_VOXEL, physical_memory()
    if needed > available:
        raise InputError(source, f"has {voxels:,} voxels ({' x '.join(map(str, size))}); working on it needs about {needed / 2**30:.0f} GiB, "
                                 f"more than this machine's {available / 2**30:.0f} GiB. Crop or downsample it first")


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
    suffix = image_suffix(path)
    if suffix is None:
        raise InputError(path, f"unsupported format; expected one of {', '.join(IMAGE_SUFFIXES)} or a DICOM folder")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        require_memory(reader.GetSize(), path)
        if suffix in (".nii", ".nii.gz"):
            _check_nifti(path)
        return reader.Execute()
    except RuntimeError as error:
        raise InputError(path, f"could not be read as an image ({error_line(error)})") from None


def _check_nifti(path: Path) -> None:
    """What ITK's NIfTI reader does not say: a truncated file, a voxel size of 0 or less, NaN or infinite voxels.

    Float data is read in full (NaN can only be found that way); integer data only when the stored size
    disagrees with the header's (the file's size, or a gzip stream's recorded length), which keeps the
    common integer NIfTI at the cost of one header read.
    """
    import nibabel

    try:
        nifti = nibabel.load(path)
        with nibabel.openers.ImageOpener(path) as file:  # the header as written: nibabel's load repairs a zero voxel size
            header = type(nifti.header).from_fileobj(file, check=False)
        pixdim = header["pixdim"][1 : 1 + min(3, len(nifti.shape))]
        if np.any(pixdim <= 0):
            raise InputError(path, f"has voxel size {tuple(float(p) for p in pixdim)} mm in its NIfTI header; every voxel size must be positive")
        dtype = nifti.get_data_dtype()
        expected = int(header["vox_offset"]) + int(np.prod(nifti.shape, dtype=np.int64)) * dtype.itemsize
        if dtype.kind == "f" or _stored_size(path) != expected % (2**32 if path.name.lower().endswith(".gz") else 2**64):
            data = np.asanyarray(nifti.dataobj)  # raises on a short file; a multi-member gzip whose last length misleads passes here
            if data.dtype.kind == "f":
                _refuse_non_finite(data, path)
    except InputError:
        raise
    except (OSError, EOFError, ValueError, nibabel.filebasedimages.ImageFileError) as error:
        raise InputError(path, f"is truncated or corrupt ({error_line(error)})") from None


def _stored_size(path: Path) -> int:
    """Bytes of a .nii file, or the uncompressed length (mod 2**32) a .nii.gz records in its last 4 bytes."""
    if not path.name.lower().endswith(".gz"):
        return path.stat().st_size
    with open(path, "rb") as file:
        file.seek(-4, os.SEEK_END)
        return int.from_bytes(file.read(4), "little")


def dicom_series_files(folder: PathLike, series_id: str | None = None) -> tuple[str, ...]:
    """The files of the folder's (only, or chosen) DICOM series, in the slice order the volume has."""
    folder = Path(folder)
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(folder, "is a folder without a DICOM series")
    if series_id is None:
        if len(series) > 1:
            raise InputError(folder, f"holds {len(series)} DICOM series ({', '.join(series)}); choose one")
        series_id = series[0]
    elif series_id not in series:
        raise InputError(folder, f"has no DICOM series {series_id}; it has {', '.join(series)}")
    return sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id)


def _read_dicom_series(folder: Path, series_id: str | None) -> sitk.Image:
    files = dicom_series_files(folder, series_id)
    try:
        _check_slice_positions(files, folder)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        image = reader.Execute()
        _keep_series_tags(image, files[0])
        return image
    except RuntimeError as error:
        raise InputError(folder, f"DICOM series could not be read ({error_line(error)})") from None


SERIES_TAGS = ("0008|0060", "0018|0015", "0008|103e", "0018|0020", "0018|0082")
"""DICOM tags copied from a series' first slice onto the volume: Modality (which stream), Body Part Examined,
Scanning Sequence and Inversion Time (plausibility) and Series Description (what a message calls it). ITK's
series reader keeps none."""


def _keep_series_tags(image: sitk.Image, first_slice: str) -> None:
    header = sitk.ImageFileReader()
    header.SetFileName(first_slice)
    header.ReadImageInformation()
    for tag in SERIES_TAGS:
        if header.HasMetaDataKey(tag):
            image.SetMetaData(tag, header.GetMetaData(tag))


def _check_slice_positions(files: tuple[str, ...], folder: Path) -> None:
    """Refuse a series whose slices are not evenly spaced along their normal (a missing slice, or two at one
    position): ITK would read it with one average spacing, and every structure beyond the gap would be misplaced."""
    if len(files) < 3:
        return
    header = sitk.ImageFileReader()
    positions, normal = [], None
    for name in files:
        header.SetFileName(name)
        header.ReadImageInformation()
        if not (header.HasMetaDataKey("0020|0032") and header.HasMetaDataKey("0020|0037")):
            return  # no patient geometry per slice (e.g. a secondary capture): nothing to check against
        if normal is None:
            row, column = np.array(header.GetMetaData("0020|0037").split("\\"), float).reshape(2, 3)
            normal = np.cross(row, column)
        positions.append(float(np.dot(normal, np.array(header.GetMetaData("0020|0032").split("\\"), float))))
    steps = np.diff(np.sort(positions))
    step = float(np.median(steps))
    uneven = np.abs(steps - step) > max(0.01, 0.05 * step)
    if step <= 0 or uneven.any():
        where = int(np.argmax(uneven)) if uneven.any() else 0
        raise InputError(folder, f"DICOM series has unevenly spaced slices ({steps[where]:.2f} mm after slice {where + 1}, "
                                 f"{step:.2f} mm elsewhere): a slice is missing or repeated; export the complete series")


def error_line(error: Exception) -> str:
    """The telling line of an error message (ITK puts it last, after its source location)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
