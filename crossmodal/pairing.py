"""Pairing a cine and an LGE volume of one patient on one common 2-D grid, in physical space.

The two stacks share patient space and orientation but not their voxel grids (in-plane size and
spacing, slice spacing and count differ), and the heart moves between breath-holds. Pairing by
slice index is therefore wrong; we pair by position:

* every *reference* slice (LGE by default: the modality we segment) gets a square in-plane grid of
  ``size`` x ``size`` pixels at ``spacing`` mm, lying in that slice's own plane, centred on a
  label-free heart estimate;
* the *other* volume (cine) contributes its nearest slice along the common slice normal, sampled
  in-plane onto the same lattice. Taking the nearest slice instead of interpolating between slices
  8 mm apart avoids ghosted double contours; the through-plane offset is kept per sample.

Each sample keeps, per modality, the grid it was sampled on *in that modality's own slice plane*,
so :func:`write_back` can put a prediction made on the common grid back onto either original
volume exactly, by resampling in physical space with no transform to invert.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from crossmodal.errors import InputError
from crossmodal.geometry import Grid, angle_between_degrees, anti_alias, resample

PARALLEL_TOLERANCE_DEGREES = 2.0
"""Largest angle between the two slice normals accepted for nearest-slice pairing."""


@dataclass(frozen=True)
class PairingConfig:
    """The common grid. 144 px at 1.5 mm (216 mm) holds the heart of both breath-holds on MS-CMRSeg."""

    spacing_mm: float = 1.5
    size: int = 144
    max_through_plane_mm: float | None = None
    """Farthest the other volume's nearest slice may lie from a reference slice; default: half its slice spacing."""


@dataclass(frozen=True)
class PairedSlice:
    """Where sample ``i`` of a stack came from, in each modality."""

    grids: dict[str, Grid]
    """Per modality: the one-slice grid the sample was drawn on, in that modality's slice plane."""
    source_slices: dict[str, int]
    """Per modality: the slice index in the original volume."""
    through_plane_mm: float
    """Signed distance from the reference slice plane to the other modality's slice plane."""
    coverage: float
    """Fraction of the sample's pixels inside the other volume's field of view (0 when unpaired)."""

    @property
    def paired(self) -> bool:
        return len(self.source_slices) == 2


@dataclass
class PairedStack:
    """Paired 2-D samples on one common grid, as arrays of shape (slices, size, size)."""

    reference: str
    other: str
    images: dict[str, np.ndarray]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    slices: list[PairedSlice] = field(default_factory=list)
    source_grids: dict[str, Grid] = field(default_factory=dict)

    @property
    def paired(self) -> np.ndarray:
        """Boolean per sample: does the other modality have a slice for it."""
        return np.array([s.paired for s in self.slices])

    @property
    def common_grid(self) -> Grid:
        """The samples' reference planes as one regular 3-D grid (they are parallel and equally spaced)."""
        return stack_grid([s.grids[self.reference] for s in self.slices])


def stack_grid(planes: list[Grid]) -> Grid:
    first = planes[0]
    return Grid((first.size[0], first.size[1], len(planes)), first.origin, first.spacing, first.direction)


def heart_centre(reference: sitk.Image, other: sitk.Image) -> np.ndarray:
    """Label-free crop centre: the midpoint of the two fields of view (LPS, mm).

    Cardiac short-axis stacks are planned around the heart, so each field of view is centred near
    it; the midpoint keeps both breath-hold positions of the heart inside the crop. On the 15
    labelled MS-CMRSeg LGE volumes the LGE heart centroid lies 4-28 mm (in-plane) from this point.
    """
    return (Grid.of(reference).centre + Grid.of(other).centre) / 2


def pair_volumes(
    reference: sitk.Image,
    other: sitk.Image | None,
    config: PairingConfig = PairingConfig(),
    *,
    names: tuple[str, str] = ("LGE", "cine"),
    reference_mask: sitk.Image | None = None,
    other_mask: sitk.Image | None = None,
    centre: np.ndarray | None = None,
    other_shift_mm: np.ndarray | None = None,
) -> PairedStack:
    """Build one paired sample per reference slice (see the module docstring).

    Reference slices with no other slice within ``max_through_plane_mm`` are kept, unpaired (their
    other-modality pixels are 0), so that single-input inference still covers the whole reference.
    ``other=None`` gives the reference's samples alone (single-modality inference), centred on its
    field of view. ``centre`` (LPS mm) overrides the label-free crop centre, e.g. with a point the
    user placed. ``other_shift_mm`` (LPS mm, in the reference's slice plane) pre-aligns the other volume:
    it is sampled that far away, so that what lay there appears on the common lattice; its grids record
    where it was sampled, so :func:`write_back` and the alignment stay exact.
    """
    ref_name, other_name = names
    if other is None:
        return _single_stack(reference, config, ref_name, other_name, reference_mask, centre)
    ref_grid, other_grid = Grid.of(reference), Grid.of(other)
    _check_masks(reference, reference_mask, ref_name)
    _check_masks(other, other_mask, other_name)
    angle = angle_between_degrees(ref_grid.normal, other_grid.normal)
    if angle > PARALLEL_TOLERANCE_DEGREES:
        raise InputError(
            f"{ref_name} and {other_name}",
            f"slice planes differ by {angle:.1f} degrees (at most {PARALLEL_TOLERANCE_DEGREES} for pairing by slice); "
            "reformat one onto the other's orientation first",
        )
    centre = heart_centre(reference, other) if centre is None else np.asarray(centre, float)
    max_distance = config.max_through_plane_mm
    if max_distance is None:
        max_distance = other_grid.spacing[2] / 2 + 1e-3

    ref_planes = [_plane_grid(ref_grid, k, centre, config) for k in range(ref_grid.size[2])]
    # Position of every reference slice along the other volume's slice axis (continuous index).
    other_k = other_grid.point_to_index([g.index_to_point([0, 0, 0]) for g in ref_planes])[:, 2]
    nearest = np.clip(np.round(other_k), 0, other_grid.size[2] - 1).astype(int)
    offsets = (nearest - other_k) * other_grid.spacing[2]

    # Blur once per volume (anti-aliasing for the coarser common grid), then sample slice by slice.
    common = stack_grid(ref_planes)
    reference_smooth, other_smooth = anti_alias(reference, common), anti_alias(other, common)
    samples, mask_samples, slices = [], [], []
    for k, plane in enumerate(ref_planes):
        sample = {ref_name: _sample(reference_smooth, plane)}
        mask_sample = {} if reference_mask is None else {ref_name: _sample(reference_mask, plane, label=True)}
        grids, sources, coverage = {ref_name: plane}, {ref_name: k}, 0.0
        if abs(offsets[k]) <= max_distance:
            kc = int(nearest[k])
            other_plane = _shifted(plane, other_grid.normal * offsets[k] + (0 if other_shift_mm is None else np.asarray(other_shift_mm, float)))
            sample[other_name] = _sample(_slice_through(other_smooth, other_plane), other_plane)
            coverage = float(_sample(_ones(other[:, :, kc : kc + 1]), other_plane, label=True).mean())
            if other_mask is not None:
                mask_sample[other_name] = _sample(other_mask[:, :, kc : kc + 1], other_plane, label=True)
            grids[other_name], sources[other_name] = other_plane, kc
        samples.append(sample)
        mask_samples.append(mask_sample)
        slices.append(PairedSlice(grids, sources, float(offsets[k]), coverage))

    if not any(s.paired and s.coverage > 0 for s in slices):
        raise InputError(
            f"{ref_name} and {other_name}",
            "do not overlap in physical space (no slice of one lies within "
            f"{max_distance:.1f} mm of a slice of the other inside the {config.size * config.spacing_mm:.0f} mm crop)",
        )
    return PairedStack(
        ref_name,
        other_name,
        _stack(samples, (ref_name, other_name), np.float32, config.size),
        _stack(mask_samples, [n for n, m in ((ref_name, reference_mask), (other_name, other_mask)) if m is not None], None, config.size),
        slices,
        {ref_name: ref_grid, other_name: other_grid},
    )


def _single_stack(
    image: sitk.Image, config: PairingConfig, name: str, other_name: str, mask: sitk.Image | None, centre: np.ndarray | None
) -> PairedStack:
    grid = Grid.of(image)
    _check_masks(image, mask, name)
    centre = grid.centre if centre is None else np.asarray(centre, float)
    planes = [_plane_grid(grid, k, centre, config) for k in range(grid.size[2])]
    smooth = anti_alias(image, stack_grid(planes))
    images = {name: np.stack([_sample(smooth, plane) for plane in planes]).astype(np.float32)}
    masks = {} if mask is None else {name: np.stack([_sample(mask, plane, label=True) for plane in planes])}
    slices = [PairedSlice({name: plane}, {name: k}, 0.0, 0.0) for k, plane in enumerate(planes)]
    return PairedStack(name, other_name, images, masks, slices, {name: grid})


def write_back(
    stack: PairedStack,
    prediction: np.ndarray,
    modality: str,
    *,
    probabilities: bool = False,
) -> sitk.Image:
    """Put a prediction on the common grid back onto ``modality``'s original volume grid.

    ``prediction`` is (slices, size, size) integer labels (their dtype is kept), or with ``probabilities`` (classes,
    slices, size, size) soft scores: these are interpolated linearly and then arg-maxed, which
    gives smoother boundaries on a finer target grid than nearest-neighbour labels. Target slices
    that no sample came from (cine slices beyond the LGE stack) stay 0. Where several samples came
    from one target slice, the one whose plane was nearest is used.
    """
    grid = stack.source_grids[modality]
    expected = (len(stack.slices), *stack.images[stack.reference].shape[1:])
    shape = prediction.shape[1:] if probabilities else prediction.shape
    if tuple(shape) != expected:
        raise ValueError(f"prediction has shape {prediction.shape}; the stack needs {'(classes, ) + ' if probabilities else ''}{expected}")
    chosen: dict[int, int] = {}
    for i, sample in enumerate(stack.slices):
        k = sample.source_slices.get(modality)
        if k is None:
            continue
        if k not in chosen or abs(sample.through_plane_mm) < abs(stack.slices[chosen[k]].through_plane_mm):
            chosen[k] = i
    if not probabilities and not np.issubdtype(prediction.dtype, np.integer):
        raise ValueError(f"label predictions must be integers, not {prediction.dtype}; pass probabilities=True for scores")
    out = np.zeros(grid.size[::-1], dtype=np.uint8 if probabilities else prediction.dtype)
    for k, i in chosen.items():
        source = stack.slices[i].grids[modality]
        target = grid.slice(k)
        if probabilities:
            scores = [
                sitk.GetArrayFromImage(resample(source.image(p.astype(np.float32)), target, anti_aliasing=False))[0]
                for p in prediction[:, i]
            ]
            out[k] = np.argmax(np.stack(scores), axis=0)
        else:
            labels = source.image(prediction[i])
            out[k] = sitk.GetArrayFromImage(resample(labels, target, label=True))[0]
    return grid.image(out)


def _plane_grid(ref: Grid, k: int, centre: np.ndarray, config: PairingConfig) -> Grid:
    """Square grid in reference slice ``k``'s plane, centred on ``centre`` snapped to a reference voxel.

    Snapping makes the common lattice pass through reference voxel centres, so a grid at the
    reference's own spacing maps voxels one to one (no half-voxel nearest-neighbour ties).
    """
    index = np.round(ref.point_to_index(centre)[:2])
    middle = ref.index_to_point([index[0], index[1], k])
    half = config.size // 2
    spacing = (config.spacing_mm, config.spacing_mm, ref.spacing[2])
    origin = middle - ref.matrix[:, :2] @ (np.array([half, half]) * config.spacing_mm)
    return Grid((config.size, config.size, 1), tuple(origin), spacing, ref.direction)


def _slice_through(image: sitk.Image, plane: Grid) -> sitk.Image:
    """The one-slice image of ``image`` (possibly a cropped part of a volume) that ``plane`` lies in."""
    k = int(round(Grid.of(image).point_to_index(plane.origin)[2]))
    return image[:, :, k : k + 1]


def _shifted(grid: Grid, offset: np.ndarray) -> Grid:
    return Grid(grid.size, tuple(np.asarray(grid.origin) + offset), grid.spacing, grid.direction)


def _sample(image: sitk.Image, grid: Grid, *, label: bool = False) -> np.ndarray:
    return sitk.GetArrayFromImage(resample(image, grid, label=label, anti_aliasing=False))[0]


def _stack(rows: list[dict[str, np.ndarray]], names, dtype, size: int) -> dict[str, np.ndarray]:
    """Per modality, the samples stacked along axis 0; samples a modality lacks are zeros."""
    stacked = {}
    for name in names:
        present = next(row[name] for row in rows if name in row)
        blank = np.zeros((size, size), dtype or present.dtype)
        stacked[name] = np.stack([row.get(name, blank) for row in rows]).astype(dtype or present.dtype, copy=False)
    return stacked


def _ones(image: sitk.Image) -> sitk.Image:
    ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(image)
    return ones


def _check_masks(image: sitk.Image, mask: sitk.Image | None, name: str) -> None:
    if mask is None:
        return
    if mask.GetSize() != image.GetSize() or not np.allclose(
        np.r_[mask.GetOrigin(), mask.GetSpacing(), mask.GetDirection()],
        np.r_[image.GetOrigin(), image.GetSpacing(), image.GetDirection()],
        atol=1e-3,
    ):
        raise InputError(f"{name} mask", f"does not lie on the {name} image's voxel grid (size, origin, spacing or direction differ)")
