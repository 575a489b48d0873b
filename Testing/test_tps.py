"""Thin-plate spline: interpolation, identity, affine reproduction, direction of the warp."""

import numpy as np
import pytest
import torch

from crossmodal.nets.tps import ThinPlateSpline, control_lattice, pixel_lattice


def test_zero_offsets_give_the_identity():
    tps = ThinPlateSpline(5)
    grid = tps.sampling_grid(torch.zeros(2, 25, 2), 24, 32)
    expected = pixel_lattice(24, 32).float().reshape(24, 32, 2)
    assert torch.allclose(grid, expected.expand(2, -1, -1, -1), atol=1e-5)
    image = torch.rand(2, 3, 24, 32)
    assert torch.allclose(tps(image, torch.zeros(2, 25, 2)), image, atol=1e-5)


def test_the_spline_passes_through_the_control_points():
    tps = ThinPlateSpline(5)
    offsets = 0.2 * torch.randn(1, 25, 2, generator=torch.Generator().manual_seed(0))
    grid = tps.sampling_grid(offsets, 17, 17)  # pixels at multiples of 1/8: control points every 4th pixel
    at_controls = grid[0, ::4, ::4].reshape(25, 2)
    assert torch.allclose(at_controls, control_lattice(5).float() + offsets[0], atol=1e-4)


def test_an_affine_map_is_reproduced_exactly_everywhere():
    """A TPS has an affine part and minimal bending: targets from an affine map give that map."""
    matrix, shift = torch.tensor([[1.1, 0.2], [-0.15, 0.9]]), torch.tensor([0.05, -0.1])
    centres = control_lattice(5).float()
    offsets = (centres @ matrix.T + shift - centres)[None]
    grid = ThinPlateSpline(5).sampling_grid(offsets, 20, 28)
    points = pixel_lattice(20, 28).float()
    assert torch.allclose(grid[0].reshape(-1, 2), points @ matrix.T + shift, atol=1e-4)


def test_a_positive_x_offset_samples_to_the_right_so_content_moves_left():
    image = torch.zeros(1, 1, 33, 33)
    image[0, 0, 16, 20] = 1.0
    shift = torch.zeros(1, 25, 2)
    shift[..., 0] = 4 * 2 / 32  # four pixels in normalised units (align_corners=True)
    warped = ThinPlateSpline(5)(image, shift)
    assert np.unravel_index(int(warped.argmax()), (33, 33)) == (16, 16)


def test_offsets_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"offsets: expected \(batch, 25, 2\)"):
        ThinPlateSpline(5).sampling_grid(torch.zeros(1, 16, 2), 8, 8)
