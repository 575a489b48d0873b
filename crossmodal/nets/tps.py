"""Thin-plate-spline warping on a fixed grid of control points.

The control points sit on a regular ``n`` x ``n`` lattice of the *output* image; a network predicts
where each of them should sample the *input* (an offset per point). Because the lattice is fixed,
the TPS system matrix is constant, so the dense backward sampling map is a fixed linear function of
the control-point targets: ``map = M @ targets``. ``M`` is computed once per image size; a warp then
costs one matrix product and one ``grid_sample``.

(kornia's ``get_tps_transform`` builds its kernel matrix between source and target points rather than
between the centres themselves, which is not the thin-plate spline through fixed centres that the
MMSDNet spatial transformer uses; hence this small implementation.)

Coordinates are ``grid_sample``'s normalised (x, y) in [-1, 1] with ``align_corners=True``: -1 and
+1 are the centres of the first and last pixels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def tps_kernel(squared_distance: torch.Tensor) -> torch.Tensor:
    """U(r) = r^2 log r^2, with U(0) = 0."""
    safe = squared_distance.clamp_min(1e-12)
    return torch.where(squared_distance > 0, squared_distance * safe.log(), torch.zeros_like(squared_distance))


def control_lattice(n: int) -> torch.Tensor:
    """(n*n, 2) control points (x, y) on a regular lattice spanning [-1, 1], row-major (y slowest)."""
    axis = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)


def pixel_lattice(height: int, width: int) -> torch.Tensor:
    """(height*width, 2) normalised (x, y) of every pixel centre, row-major."""
    y, x = torch.meshgrid(
        torch.linspace(-1.0, 1.0, height, dtype=torch.float64),
        torch.linspace(-1.0, 1.0, width, dtype=torch.float64),
        indexing="ij",
    )
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)


def interpolation_matrix(centres: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(points, centres) matrix M such that ``M @ values`` is the TPS through ``(centres, values)`` at ``points``.

    Solves [[K, P], [P^T, 0]] [w; a] = [values; 0] symbolically: the solution is linear in ``values``.
    """
    k = len(centres)
    affine = torch.cat([torch.ones(k, 1, dtype=centres.dtype), centres], dim=1)
    system = torch.zeros(k + 3, k + 3, dtype=centres.dtype)
    system[:k, :k] = tps_kernel(torch.cdist(centres, centres) ** 2)
    system[:k, k:] = affine
    system[k:, :k] = affine.T
    inverse = torch.linalg.inv(system)[:, :k]  # maps values (k) to [w; a] (k + 3)
    basis = torch.cat(
        [tps_kernel(torch.cdist(points, centres) ** 2), torch.ones(len(points), 1, dtype=points.dtype), points], dim=1
    )
    return basis @ inverse


class ThinPlateSpline(nn.Module):
    """Dense backward sampling maps from control-point offsets on an ``n`` x ``n`` lattice."""

    def __init__(self, control_points: int = 5) -> None:
        super().__init__()
        self.control_points = control_points
        self.register_buffer("centres", control_lattice(control_points).float(), persistent=False)
        self._matrices: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    @property
    def count(self) -> int:
        return len(self.centres)

    def _matrix(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        key = (height, width, device)
        if key not in self._matrices:
            matrix = interpolation_matrix(control_lattice(self.control_points), pixel_lattice(height, width))
            self._matrices[key] = matrix.float().to(device)
        return self._matrices[key]

    def sampling_grid(self, offsets: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(batch, height, width, 2) normalised input coordinates for every output pixel.

        ``offsets`` is (batch, points, 2): how far (normalised x, y) each control point samples from
        its own position; zero gives the identity.
        """
        if offsets.ndim != 3 or offsets.shape[1:] != (self.count, 2):
            raise ValueError(f"offsets: expected (batch, {self.count}, 2), got {tuple(offsets.shape)}")
        targets = self.centres.unsqueeze(0) + offsets.float()
        with torch.autocast(offsets.device.type, enabled=False):  # bf16 would put samples a quarter pixel off at 128 px
            grid = torch.einsum("pk,bkc->bpc", self._matrix(height, width, offsets.device), targets)
        return grid.reshape(len(offsets), height, width, 2)

    def forward(self, image: torch.Tensor, offsets: torch.Tensor, *, mode: str = "bilinear") -> torch.Tensor:
        """Warp ``image`` (batch, channels, height, width): output pixel p takes the input at ``grid(p)``."""
        grid = self.sampling_grid(offsets, *image.shape[-2:])
        return F.grid_sample(image.float(), grid, mode=mode, padding_mode="border", align_corners=True)
