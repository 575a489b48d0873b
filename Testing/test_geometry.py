"""Grids and resampling in physical space: to a target spacing and back onto the input's own grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import oblique_volume

from crossmodal.geometry import Grid, angle_between_degrees, resample, resample_back, resample_to_spacing


def test_grid_matches_simpleitk(oblique):
    grid = Grid.of(oblique)
    for index in [(0, 0, 0), (36, 28, 10), (5, 17, 3)]:
        np.testing.assert_allclose(grid.index_to_point(index), oblique.TransformIndexToPhysicalPoint(index), atol=1e-9)
    point = (1.0, 2.0, 3.0)
    np.testing.assert_allclose(grid.point_to_index(point), oblique.TransformPhysicalPointToContinuousIndex(point), atol=1e-9)
    image = grid.image(sitk.GetArrayFromImage(oblique))
    assert Grid.of(image) == grid
    assert grid.slice(4).index_to_point([3, 2, 0]) == pytest.approx(grid.index_to_point([3, 2, 4]))


def test_angle_between_axes_ignores_sign():
    assert angle_between_degrees(np.array([0, 0, 1.0]), np.array([0, 0, -2.0])) == pytest.approx(0.0)
    assert angle_between_degrees(np.array([1.0, 0, 0]), np.array([1.0, 1.0, 0])) == pytest.approx(45.0)


def labels_volume():
    """A labelled ellipsoid on an oblique, anisotropic grid."""
    image = oblique_volume(size=(60, 50, 24), spacing=(0.8, 0.9, 3.0), dtype=np.uint8)
    k, j, i = np.meshgrid(*(np.arange(n) for n in image.GetSize()[::-1]), indexing="ij")
    r = ((i - 30) / 20) ** 2 + ((j - 25) / 15) ** 2 + ((k - 12) / 6) ** 2
    labels = sitk.GetImageFromArray(np.where(r < 0.4, 2, np.where(r < 1, 1, 0)).astype(np.uint8))
    labels.CopyInformation(image)
    return labels


def test_resample_to_spacing_keeps_extent_and_centre():
    labels = labels_volume()
    coarse = resample_to_spacing(labels, (2.0, 2.0, 2.0), label=True)
    assert coarse.GetSize() == (24, 22, 36)
    assert coarse.GetDirection() == labels.GetDirection()
    np.testing.assert_allclose(Grid.of(coarse).centre, Grid.of(labels).centre, atol=1.01)  # within half a voxel
    volume = lambda im: (sitk.GetArrayFromImage(im) > 0).sum() * np.prod(im.GetSpacing())  # noqa: E731
    assert volume(coarse) == pytest.approx(volume(labels), rel=0.05)


def test_resample_back_onto_the_input_grid():
    labels = labels_volume()
    back = resample_back(resample_to_spacing(labels, (2.0, 2.0, 2.0), label=True), labels)
    assert Grid.of(back) == Grid.of(labels)
    a, b = sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(labels)
    for value in (1, 2):
        overlap = 2 * ((a == value) & (b == value)).sum() / ((a == value).sum() + (b == value).sum())
        assert overlap > 0.85


def test_intensity_resampling_anti_aliases():
    # A 1-voxel checkerboard has no content at a 4x coarser spacing: it must come out flat.
    image = sitk.GetImageFromArray((np.indices((8, 64, 64)).sum(0) % 2 * 100).astype(np.float32))
    coarse_grid = Grid((16, 16, 8), (2.0, 2.0, 0.0), (4.0, 4.0, 1.0), tuple(np.eye(3).ravel()))
    smooth = sitk.GetArrayFromImage(resample(image, coarse_grid))
    aliased = sitk.GetArrayFromImage(resample(image, coarse_grid, anti_aliasing=False))
    assert smooth[:, 2:-2, 2:-2].std() < 5 < aliased.std()


def test_disjoint_fields_of_view_are_told_and_overlapping_ones_never(oblique):
    grid = Grid.of(oblique)
    assert not grid.disjoint(grid)
    for shift in (0.45, -0.45):  # still sharing a sliver along each axis
        for axis in range(3):
            moved = sitk.Image(oblique)
            moved.SetOrigin(tuple(grid.index_to_point(np.eye(3)[axis] * shift * np.asarray(grid.size))))
            assert not grid.disjoint(Grid.of(moved)), (axis, shift)
    far = sitk.Image(oblique)
    far.SetOrigin(tuple(np.asarray(grid.origin) + 500 * grid.normal))
    assert grid.disjoint(Grid.of(far)) and Grid.of(far).disjoint(grid)
