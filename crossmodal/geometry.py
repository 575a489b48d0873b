"""Voxel grids in physical space and resampling between them.

A :class:`Grid` is the geometry of an image without its voxels (size, origin, spacing, direction in
LPS, as ITK keeps them). It is small and picklable, so it can travel with training samples and be
used later to put a prediction back exactly where its input came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Grid:
    """A 3-D voxel grid in physical (LPS) space."""

    size: tuple[int, int, int]
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]  # row-major 3x3, columns are the i, j, k axes

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        return cls(tuple(image.GetSize()), tuple(image.GetOrigin()), tuple(image.GetSpacing()), tuple(image.GetDirection()))

    @property
    def matrix(self) -> np.ndarray:
        """3x3 direction matrix (columns: unit vectors of the index axes)."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def normal(self) -> np.ndarray:
        """Unit vector of the slice axis (k)."""
        return self.matrix[:, 2]

    def index_to_point(self, index: np.ndarray) -> np.ndarray:
        """Continuous (i, j, k) indices, shape (..., 3), to physical points."""
        return np.asarray(self.origin) + (np.asarray(index, float) * np.asarray(self.spacing)) @ self.matrix.T

    def point_to_index(self, point: np.ndarray) -> np.ndarray:
        """Physical points, shape (..., 3), to continuous (i, j, k) indices."""
        return ((np.asarray(point, float) - np.asarray(self.origin)) @ self.matrix) / np.asarray(self.spacing)

    @property
    def centre(self) -> np.ndarray:
        """Physical centre of the field of view."""
        return self.index_to_point((np.asarray(self.size) - 1) / 2)

    def corners(self) -> np.ndarray:
        """The 8 outer corners (voxel edges, not centres) of the field of view, shape (8, 3), in mm."""
        edges = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in self.size], indexing="ij")).reshape(3, -1).T
        return self.index_to_point(edges)

    def disjoint(self, other: Grid) -> bool:
        """True when the two fields of view certainly share no point: along one grid's axes, the other's corners all lie
        beyond its extent (a separating plane). Never true of boxes that overlap; a corner-to-corner miss of two
        oblique boxes may go unnoticed, which the pairing's own check then reports."""
        return any(np.any(np.all(b.point_to_index(a.corners()) < -0.5, axis=0) | np.all(b.point_to_index(a.corners()) > np.asarray(b.size) - 0.5, axis=0))
                   for a, b in ((self, other), (other, self)))

    def axis_aligned(self, spacing: float) -> Grid:
        """The grid along the LPS axes, at isotropic ``spacing``, that covers this field of view, centred on it.

        Resampling an oblique or permuted volume onto it gives a network one orientation to learn.
        """
        points = self.corners()
        low, high = points.min(axis=0), points.max(axis=0)
        size = np.maximum(1, np.round((high - low) / spacing)).astype(int)
        origin = (low + high) / 2 - (size - 1) / 2 * spacing
        return Grid(tuple(int(n) for n in size), tuple(float(x) for x in origin), (float(spacing),) * 3, tuple(np.eye(3).ravel().tolist()))

    def slice(self, k: int) -> Grid:
        """The one-slice grid of slice ``k``."""
        return Grid((self.size[0], self.size[1], 1), tuple(self.index_to_point([0, 0, k])), self.spacing, self.direction)

    def image(self, array: np.ndarray | None = None, dtype: type = np.uint8) -> sitk.Image:
        """An image on this grid: from an array in SimpleITK order (k, j, i), or zeros."""
        if array is None:
            array = np.zeros(self.size[::-1], dtype=dtype)
        image = sitk.GetImageFromArray(np.ascontiguousarray(array).reshape(self.size[::-1]))
        image.SetOrigin(self.origin)
        image.SetSpacing(self.spacing)
        image.SetDirection(self.direction)
        return image


def angle_between_degrees(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two axes (orientation-free: a and -a count as the same axis)."""
    cosine = abs(float(np.dot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.degrees(np.arccos(min(1.0, cosine))))


def resample(
    image: sitk.Image,
    grid: Grid,
    *,
    label: bool = False,
    default: float = 0.0,
    anti_aliasing: bool = True,
) -> sitk.Image:
    """Resample ``image`` onto ``grid`` in physical space.

    Intensities are interpolated linearly, after a Gaussian blur along the axes that ``grid``
    samples more coarsely (otherwise downsampling a 0.7 mm LGE to 1.5 mm aliases); labels use
    nearest neighbour. Points outside ``image`` get ``default``.
    """
    if not label and anti_aliasing:
        image = anti_alias(image, grid)
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    pixel = image.GetPixelID() if label else sitk.sitkFloat32
    return sitk.Resample(image, grid.image(), sitk.Transform(), interpolator, default, pixel)


def resample_to_spacing(image: sitk.Image, spacing: tuple[float, float, float], *, label: bool = False) -> sitk.Image:
    """The same physical extent at a new spacing (e.g. 2 mm for the dual-stream FCN)."""
    old = Grid.of(image)
    extent = np.asarray(old.size) * np.asarray(old.spacing)
    size = tuple(int(n) for n in np.maximum(1, np.round(extent / np.asarray(spacing))))
    # Keep the field of view centred: the first voxel centre moves by half the spacing change.
    shift = (np.asarray(spacing) - np.asarray(old.spacing)) / 2
    origin = tuple(old.index_to_point(shift / np.asarray(old.spacing)))
    return resample(image, Grid(size, origin, tuple(float(s) for s in spacing), old.direction), label=label)


def resample_back(prediction: sitk.Image, reference: sitk.Image, *, label: bool = True) -> sitk.Image:
    """Put a prediction made on another grid back onto ``reference``'s own grid."""
    return resample(prediction, Grid.of(reference), label=label, anti_aliasing=False)


def anti_alias(image: sitk.Image, grid: Grid) -> sitk.Image:
    """Blur ``image`` before sampling it on the coarser ``grid``.

    Gaussian with sigma = half the target spacing (mm) along each source axis that ``grid``
    samples more coarsely; other axes are left alone. Only the part of ``image`` that ``grid``
    reaches (plus the kernel's reach) is blurred, which is what makes a heart crop of a large
    LGE volume cheap.
    """
    source = Grid.of(image)
    target_steps = np.abs(source.matrix.T @ grid.matrix) @ np.asarray(grid.spacing)
    sigma = np.where(target_steps > 1.01 * np.asarray(source.spacing), target_steps / 2, 0.0)
    if not sigma.any() or image.GetDimension() != 3:
        return image
    margin = np.ceil(3 * sigma / np.asarray(source.spacing)).astype(int) + 1
    image = crop_to(image, grid, margin)
    variance = [float(s**2) for s in sigma]
    return sitk.DiscreteGaussian(sitk.Cast(image, sitk.sitkFloat32), variance, 32, 0.01, True)


def crop_to(image: sitk.Image, grid: Grid, margin: np.ndarray | int = 1) -> sitk.Image:
    """The part of ``image`` whose voxels lie within ``grid``'s bounding box, plus ``margin`` voxels.

    Geometry is kept (slicing a SimpleITK image moves its origin); if ``grid`` misses ``image``
    entirely, ``image`` is returned whole and the caller's own overlap check reports it.
    """
    index = Grid.of(image).point_to_index(grid.corners())
    size = np.asarray(image.GetSize())
    low = np.clip(np.floor(index.min(axis=0)).astype(int) - margin, 0, size)
    high = np.clip(np.ceil(index.max(axis=0)).astype(int) + margin + 1, 0, size)
    if (high <= low).any():
        return image
    return image[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
