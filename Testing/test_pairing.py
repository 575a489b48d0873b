"""Pairing cine and LGE in physical space, and writing predictions back onto each original grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import rotation

from crossmodal.errors import InputError
from crossmodal.geometry import Grid
from crossmodal.metrics import dice
from crossmodal.pairing import PairingConfig, heart_centre, pair_volumes, write_back

DIRECTION = rotation((0.3, -1.0, 0.6), 52.0)
HEART = np.array([10.0, -20.0, 35.0])  # LPS mm


def rasterise(size, spacing, origin, shift=(0.0, 0.0, 0.0), direction=DIRECTION):
    """An ellipsoid 'heart' (value 500 inside a 200 shell) sampled at a grid's voxel centres."""
    grid = Grid(size, origin, spacing, tuple(direction.ravel()))
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    points = grid.index_to_point(np.stack([i, j, k], -1)) - HEART - np.asarray(shift)
    local = points @ direction  # heart axes follow the stack's axes
    r = np.sqrt((local[..., 0] / 30) ** 2 + (local[..., 1] / 25) ** 2 + (local[..., 2] / 40) ** 2)
    labels = np.where(r < 0.7, 500, np.where(r < 1.0, 200, 0)).astype(np.int16)
    mask = grid.image(labels)
    image = grid.image((labels / 5 + 10).astype(np.float32))
    return image, mask


def stack_origin(size, spacing, centre_offset=(0.0, 0.0, 0.0)):
    """Origin that centres a stack on the heart (plus an offset along the stack axes)."""
    half = (np.asarray(size) - 1) / 2 * np.asarray(spacing)
    return tuple(HEART + DIRECTION @ (np.asarray(centre_offset) - half))


@pytest.fixture
def lge():
    size, spacing = (160, 150, 14), (0.75, 0.75, 5.0)
    return rasterise(size, spacing, stack_origin(size, spacing, (3.1, -2.2, 1.3)))


@pytest.fixture
def cine():
    size, spacing = (100, 96, 12), (1.25, 1.25, 8.0)
    return rasterise(size, spacing, stack_origin(size, spacing, (-4.0, 5.5, -2.0)), shift=(4.0, -3.0, 0.0))


def test_reference_round_trip_is_exact_at_native_spacing(lge, cine):
    image, mask = lge
    config = PairingConfig(spacing_mm=0.75, size=128)
    stack = pair_volumes(image, cine[0], config, reference_mask=mask)
    assert stack.images["LGE"].shape == (14, 128, 128)
    back = sitk.GetArrayFromImage(write_back(stack, stack.masks["LGE"], "LGE"))
    covered = sitk.GetArrayFromImage(write_back(stack, np.ones_like(stack.masks["LGE"], np.uint8), "LGE")) > 0
    original = sitk.GetArrayFromImage(mask)
    assert (original[~covered] == 0).all(), "the heart must lie inside the crop"
    np.testing.assert_array_equal(back[covered], original[covered])


def test_write_back_lands_in_physical_space(lge, cine):
    image, mask = lge
    stack = pair_volumes(image, cine[0])
    # One pixel set on the common grid must come back at the LGE voxel nearest to its physical point.
    sample, row, col = 6, 70, 81
    prediction = np.zeros(stack.images["LGE"].shape, np.uint8)
    prediction[sample, row, col] = 1
    grid = stack.slices[sample].grids["LGE"]
    point = grid.index_to_point([col, row, 0])
    back = write_back(stack, prediction, "LGE")
    expected = np.round(Grid.of(image).point_to_index(point)).astype(int)
    hits = np.argwhere(sitk.GetArrayFromImage(back) > 0)[:, ::-1]  # (i, j, k)
    assert len(hits) >= 1
    assert (np.abs(hits - expected).max(axis=1) <= 1).all()  # a 1.5 mm pixel covers ~2 LGE voxels
    assert hits.mean(axis=0) == pytest.approx(expected, abs=1.0)


def test_copy_mask_matches_direct_resampling(lge, cine):
    """Cine mask via the common grid onto the LGE == cine mask resampled directly in 3-D (nearest)."""
    (image, mask), (cine_image, cine_mask) = lge, cine
    stack = pair_volumes(image, cine_image, PairingConfig(spacing_mm=0.75, size=160), reference_mask=mask, other_mask=cine_mask)
    via_pairing = sitk.GetArrayFromImage(write_back(stack, (stack.masks["cine"] // 100).astype(np.uint8), "LGE"))
    direct = sitk.GetArrayFromImage(sitk.Resample(cine_mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) // 100
    scores = dice(via_pairing, direct, [2, 5])
    assert scores[2] > 0.97 and scores[5] > 0.97
    # The misalignment is real: copying the cine mask does not reproduce the LGE mask.
    lge_mask = sitk.GetArrayFromImage(mask) // 100
    assert dice(direct, lge_mask, [2])[2] < 0.9


def test_other_volume_round_trip(lge, cine):
    (image, _), (cine_image, cine_mask) = lge, cine
    stack = pair_volumes(image, cine_image, other_mask=cine_mask)
    back = sitk.GetArrayFromImage(write_back(stack, (stack.masks["cine"] // 100).astype(np.uint8), "cine"))
    original = sitk.GetArrayFromImage(cine_mask) // 100
    written = sorted({s.source_slices["cine"] for s in stack.slices if s.paired})
    assert dice(back[written], original[written], [2, 5])[5] > 0.95
    unwritten = sorted(set(range(cine_image.GetDepth())) - set(written))
    assert unwritten and not back[unwritten].any(), "cine slices beyond the LGE stack stay empty"


def test_nearest_slice_pairing_records_offsets(lge, cine):
    (image, _), (cine_image, _) = lge, cine
    stack = pair_volumes(image, cine_image)
    assert stack.paired.all()
    for sample in stack.slices:
        assert abs(sample.through_plane_mm) <= 4.0 + 1e-3
        a, b = sample.grids["LGE"], sample.grids["cine"]
        # Same in-plane lattice, shifted only along the slice normal by the recorded offset.
        delta = np.asarray(b.origin) - np.asarray(a.origin)
        np.testing.assert_allclose(delta, Grid.of(cine_image).normal * sample.through_plane_mm, atol=1e-6)


def test_probability_write_back_matches_labels_on_coarse_grid(lge, cine):
    image, mask = lge
    stack = pair_volumes(image, cine[0], reference_mask=mask)
    labels = (stack.masks["LGE"] // 100).astype(np.int64)
    classes = np.zeros_like(labels)
    classes[labels == 2], classes[labels == 5] = 1, 2
    one_hot = np.stack([classes == c for c in range(3)]).astype(np.float32)
    soft = sitk.GetArrayFromImage(write_back(stack, one_hot, "LGE", probabilities=True))
    hard = sitk.GetArrayFromImage(write_back(stack, classes.astype(np.uint8), "LGE"))
    truth = sitk.GetArrayFromImage(mask) // 100
    truth = np.select([truth == 2, truth == 5], [1, 2], 0)
    soft_dice, hard_dice = dice(soft, truth, [1, 2]), dice(hard, truth, [1, 2])
    assert soft_dice[1] > 0.93 and soft_dice[1] >= hard_dice[1] - 0.005


def test_unpaired_slices_are_kept(lge):
    image, mask = lge
    size, spacing = (100, 96, 4), (1.25, 1.25, 8.0)  # a short cine covering only part of the LGE stack
    short, _ = rasterise(size, spacing, stack_origin(size, spacing))
    stack = pair_volumes(image, short)
    assert len(stack.slices) == image.GetDepth()
    assert 0 < stack.paired.sum() < len(stack.slices)
    unpaired = ~stack.paired
    assert not stack.images["cine"][unpaired].any()


def test_heart_centre_is_label_free_midpoint(lge, cine):
    centre = heart_centre(lge[0], cine[0])
    np.testing.assert_allclose(centre, (Grid.of(lge[0]).centre + Grid.of(cine[0]).centre) / 2)


def test_volumes_that_do_not_overlap(lge, cine):
    image = lge[0]
    far = sitk.Image(cine[0])
    far.SetOrigin(tuple(np.asarray(far.GetOrigin()) + DIRECTION[:, 2] * 500.0))
    with pytest.raises(InputError, match="LGE and cine: do not overlap in physical space"):
        pair_volumes(image, far)
    beside = sitk.Image(cine[0])
    beside.SetOrigin(tuple(np.asarray(beside.GetOrigin()) + DIRECTION[:, 0] * 400.0))
    with pytest.raises(InputError, match="do not overlap"):
        pair_volumes(image, beside, centre=Grid.of(image).centre)


def test_non_parallel_stacks_are_refused(lge, cine):
    tilted = sitk.Image(cine[0])
    tilted.SetDirection(tuple((rotation(DIRECTION[:, 0], 20.0) @ DIRECTION).ravel()))
    with pytest.raises(InputError, match="slice planes differ by 20.0 degrees"):
        pair_volumes(lge[0], tilted)


def test_mask_on_another_grid_is_refused(lge, cine):
    with pytest.raises(InputError, match="LGE mask: does not lie on the LGE image's voxel grid"):
        pair_volumes(lge[0], cine[0], reference_mask=cine[1])


def test_phantom_pair_round_trip_and_copy_mask():
    """On a synthetic cine/LGE pair: LGE labels come back on the same voxels; carrying the cine mask
    through the common grid equals resampling it directly onto the LGE in physical space."""
    from crossmodal.phantoms import cardiac_pair

    pair = cardiac_pair(3)
    native = PairingConfig(spacing_mm=pair.lge.GetSpacing()[0], size=256)
    stack = pair_volumes(pair.lge, pair.cine, native, reference_mask=pair.lge_mask, other_mask=pair.cine_mask)
    covered = sitk.GetArrayFromImage(write_back(stack, np.ones(stack.masks["LGE"].shape, np.uint8), "LGE")) > 0
    original = sitk.GetArrayFromImage(pair.lge_mask)
    assert (original[~covered] == 0).all()
    back = sitk.GetArrayFromImage(write_back(stack, stack.masks["LGE"], "LGE"))
    np.testing.assert_array_equal(back, np.where(covered, original, 0))
    carried = sitk.GetArrayFromImage(write_back(stack, stack.masks["cine"], "LGE"))
    direct = sitk.GetArrayFromImage(sitk.Resample(pair.cine_mask, pair.lge_mask, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    assert min(dice(carried, direct, [200, 500, 600]).values()) > 0.97


def test_a_cine_sampled_with_a_shift_shows_what_lay_there_and_its_masks_go_back_where_they_came_from(lge, cine):
    """Pre-alignment: sampling a moved cine that far away gives the samples of the unmoved one, and a mask
    written back onto the moved cine lands on its voxels (the grids record where each sample came from)."""
    image, mask = cine
    shift = DIRECTION[:, :2] @ np.array([11.0, -7.0])  # in the slice plane
    moved_image, moved_mask = (sitk.Image(x) for x in cine)
    for x in (moved_image, moved_mask):
        x.SetOrigin(tuple(np.asarray(x.GetOrigin()) + shift))
    config = PairingConfig(spacing_mm=1.5, size=96)
    centre = heart_centre(lge[0], image)
    plain = pair_volumes(lge[0], image, config, other_mask=mask, centre=centre)
    pre = pair_volumes(lge[0], moved_image, config, other_mask=moved_mask, centre=centre, other_shift_mm=shift)
    np.testing.assert_array_equal(pre.paired, plain.paired)
    np.testing.assert_allclose(pre.images["cine"], plain.images["cine"], atol=1e-3)
    assert (pre.masks["cine"] == plain.masks["cine"]).mean() > 0.999
    back = sitk.GetArrayFromImage(write_back(pre, pre.masks["cine"], "cine"))
    covered = sitk.GetArrayFromImage(write_back(pre, np.ones_like(pre.masks["cine"]), "cine")) > 0
    assert min(dice(np.where(covered, back, 0), np.where(covered, sitk.GetArrayFromImage(moved_mask), 0), [200, 500]).values()) > 0.97
