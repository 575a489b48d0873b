"""Abdominal preprocessing (2 mm body crop, normalisation) and inference back onto the input grid."""

import copy

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from crossmodal.abdominal import Preparation, labels_on_source, looks_like, prepare_volume
from crossmodal.abdominal_inference import predict_probabilities
from crossmodal.bundles import MEMBERS, load_bundle, round_to_float16
from crossmodal.catalog import find_model
from crossmodal.errors import InputError
from crossmodal.geometry import Grid, resample
from crossmodal.nets.ensemble import DualStreamEnsemble
from crossmodal.nets.residual_fcn import DualStreamFCN, ResidualFCNConfig
from crossmodal.phantoms import abdominal_volume


@pytest.fixture(scope="module", params=["CT", "MR"])
def volume(request):
    return request.param, *abdominal_volume(request.param, seed=3)


def test_preparation_keeps_organ_volumes_and_physical_position(volume):
    modality, image, labels = volume
    prepared = prepare_volume(image, modality, labels)
    assert prepared.grid.spacing == (2.0, 2.0, 2.0) and prepared.image.dtype == np.float32
    native = sitk.GetArrayFromImage(labels)
    voxel = np.prod(image.GetSpacing())
    for organ in (1, 2, 3, 4):
        assert (prepared.labels == organ).sum() * 8 == pytest.approx((native == organ).sum() * voxel, rel=0.05)
        # the organ's centroid stays where it was, in mm
        centre = lambda grid, mask: grid.index_to_point(np.argwhere(mask).mean(axis=0)[::-1])  # noqa: E731
        assert np.linalg.norm(centre(prepared.grid, prepared.labels == organ) - centre(Grid.of(labels), native == organ)) < 1.5
    assert prepared.image.size < np.prod(image.GetSize()) * voxel / 8  # cropped to the body


def test_a_perfect_prediction_comes_back_on_the_input_grid(volume):
    modality, image, labels = volume
    prepared = prepare_volume(image, modality, labels)
    perfect = np.stack([(prepared.labels == c).astype(np.float32) for c in range(5)])
    back = labels_on_source(prepared, perfect)
    assert Grid.of(back) == Grid.of(image)
    native = sitk.GetArrayFromImage(labels)
    found = sitk.GetArrayFromImage(back)
    for organ in (1, 2, 3, 4):
        overlap = 2 * ((found == organ) & (native == organ)).sum() / ((found == organ).sum() + (native == organ).sum())
        assert overlap > 0.9, organ


def test_blank_border_slices_are_outside_the_field_of_view(volume):
    """Scanners and converters fill slices they did not acquire with one value (a trailing zero slice in most CHAOS
    T2 volumes): the network sees the acquired slices exactly as if those were absent, and its labels there are
    background on the input's own grid."""
    modality, image, labels = volume
    filled = -3024 if modality == "CT" else 0
    array = sitk.GetArrayFromImage(image)
    array[-2:], array[:, :1] = filled, filled  # two superior slices and one anterior row never acquired
    blanked = sitk.GetImageFromArray(array)
    blanked.CopyInformation(image)
    acquired = image[:, 1:, :-2]
    trimmed = Preparation(trim_blank_borders=True)
    a, b = prepare_volume(blanked, modality, preparation=trimmed), prepare_volume(acquired, modality, preparation=trimmed)
    assert a.grid == b.grid and np.array_equal(a.image, b.image)
    assert a.source == Grid.of(image)
    everywhere_liver = np.zeros((5, *a.image.shape), np.float32)
    everywhere_liver[1] = 1
    back = sitk.GetArrayFromImage(labels_on_source(a, everywhere_liver))
    assert not back[-2:].any() and not back[:, :1].any() and back[: -2, 1:].mean() > 0.3


def test_sliding_window_inference_covers_the_volume_with_probabilities():
    image, _ = abdominal_volume("CT", seed=1)
    prepared = prepare_volume(image, "CT")
    net = DualStreamFCN(ResidualFCNConfig(filters=(2, 4, 4, 8, 8), units_per_scale=1))
    probabilities = predict_probabilities(net, 1, prepared, window=32, overlap=0.25)
    assert probabilities.shape == (5, *prepared.image.shape) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=0), 1, atol=1e-4)


def test_on_a_cpu_the_network_runs_channels_last_with_the_same_probabilities(monkeypatch):
    """oneDNN's 3-D convolutions are faster channels-last on a CPU (:func:`crossmodal.devices.volume_layout`): the
    trainer's weights are laid out so, and inference's, and the layout changes the speed only."""
    from crossmodal import abdominal_inference
    from crossmodal.training.abdominal_training import DualStreamTrainer

    config = ResidualFCNConfig(variant="V4", filters=(2, 4, 4, 8, 8), units_per_scale=1)
    weights = [p for p in DualStreamTrainer(config, torch.device("cpu")).module.parameters() if p.dim() == 5]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in weights)
    prepared = prepare_volume(abdominal_volume("CT", seed=1)[0], "CT")
    torch.manual_seed(0)
    network = DualStreamFCN(config)
    laid_out = predict_probabilities(copy.deepcopy(network), 1, prepared, window=32, overlap=0.25)
    monkeypatch.setattr(abdominal_inference, "volume_layout", lambda device: torch.contiguous_format)
    assert np.allclose(laid_out, predict_probabilities(network, 1, prepared, window=32, overlap=0.25), atol=1e-5)


def test_the_wrong_modality_is_noticed_and_bad_volumes_refused():
    ct, _ = abdominal_volume("CT", seed=2)
    mr, _ = abdominal_volume("MR", seed=2)
    assert looks_like(sitk.GetArrayViewFromImage(ct)) == "CT" and looks_like(sitk.GetArrayViewFromImage(mr)) == "MR"
    with pytest.warns(UserWarning, match="look like CT, but it was given as MR"):
        prepare_volume(ct, "MR", source="ct.nii.gz")
    nan = sitk.Cast(mr, sitk.sitkFloat32)
    nan[10, 10, 10] = float("nan")
    with pytest.raises(InputError, match="scan.nii.gz: contains NaN"):
        prepare_volume(nan, "MR", source="scan.nii.gz")
    with pytest.raises(InputError, match="is 2-D"):
        prepare_volume(mr[:, :, 0], "MR")
    with pytest.raises(ValueError, match="modality must be one of"):
        prepare_volume(mr, "PET")


def test_patches_are_class_balanced_and_batches_alternate_modalities():
    from crossmodal.training.abdominal_training import DualStreamTrainer, PatchSampler, alternating_batches
    from crossmodal.training.trainer import Schedule, train

    volumes = {}
    for stream, modality in enumerate(("MR", "CT")):
        image, labels = abdominal_volume(modality, seed=5)
        volumes[stream] = prepare_volume(image, modality, labels)
    samplers = {s: PatchSampler([v], patch=16, classes=5) for s, v in volumes.items()}
    generator = torch.Generator().manual_seed(0)
    images, labels = samplers[1].draw(40, generator)
    assert images.shape == (40, 1, 16, 16, 16) and labels.shape == (40, 16, 16, 16)
    centres = labels[:, 8, 8, 8]
    assert all((centres == organ).sum() >= 3 for organ in (1, 2, 3, 4))  # ~1/5 each, not ~1 % as uniform draws give
    draw = alternating_batches(samplers, 2)
    assert [draw(generator).stream for _ in range(4)] == [0, 1, 0, 1]
    trainer = DualStreamTrainer(ResidualFCNConfig(variant="V4", filters=(2, 4, 4, 8, 8), units_per_scale=1), torch.device("cpu"))
    before = {k: v.clone() for k, v in trainer.state_dict().items()}
    result = train(trainer, alternating_batches({1: samplers[1]}, 2), Schedule(2))
    assert len(result.history) == 2 and all(e["stream"] == 1 for e in result.history)
    changed = {k for k, v in trainer.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("stem.1") for k in changed) and not any(k.startswith("stem.0") for k in changed)


def test_volumes_stored_with_flipped_axes_are_prepared_the_same_way_up():
    """CHAOS stores MR with its y axis flipped relative to BTCV CT; the networks must not see that."""
    image, labels = abdominal_volume("MR", seed=4)
    flipped_image, flipped_labels = sitk.Flip(image, [False, True, False]), sitk.Flip(labels, [False, True, False])
    assert flipped_image.GetDirection()[4] == -1  # same anatomy, stored the other way up
    a, b = prepare_volume(image, "MR", labels), prepare_volume(flipped_image, "MR", flipped_labels)
    assert a.grid.direction == b.grid.direction == tuple(np.eye(3).ravel())
    assert a.image.shape == b.image.shape
    assert (a.labels != b.labels).mean() < 1e-3  # nearest-neighbour ties may break either way
    assert np.abs(a.image - b.image).mean() < 1e-3


def oblique_copy(image: sitk.Image, labels: sitk.Image, degrees: float = 25.0) -> tuple[sitk.Image, sitk.Image]:
    """The same anatomy on an oblique, anisotropic grid (rotated about the patient's left-right axis)."""
    from conftest import rotation

    source = Grid.of(image)
    grid = Grid((150, 130, 40), tuple(source.centre - rotation((1, 0, 0), degrees) @ ((np.array([150, 130, 40]) - 1) / 2 * [2.1, 2.1, 4.5])),
                (2.1, 2.1, 4.5), tuple(rotation((1, 0, 0), degrees).ravel()))
    background = float(np.min(sitk.GetArrayViewFromImage(image)))
    return resample(image, grid, default=background), resample(labels, grid, label=True)


def test_an_oblique_anisotropic_volume_is_prepared_axis_aligned_and_predictions_go_back_onto_it():
    image, labels = oblique_copy(*abdominal_volume("CT", seed=6))
    prepared = prepare_volume(image, "CT", labels)
    assert prepared.grid.direction == tuple(np.eye(3).ravel()) and prepared.grid.spacing == (2.0, 2.0, 2.0)
    perfect = np.stack([(prepared.labels == c).astype(np.float32) for c in range(5)])
    back = labels_on_source(prepared, perfect)
    assert Grid.of(back) == Grid.of(image)
    found, truth = sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(labels)
    for organ in (1, 2, 3, 4):
        assert 2 * ((found == organ) & (truth == organ)).sum() / ((found == organ).sum() + (truth == organ).sum()) > 0.85, organ


def test_a_volume_smaller_than_one_window_is_segmented_onto_its_own_grid():
    from crossmodal.abdominal_inference import segment_abdominal
    from crossmodal.bundles import ModelCard
    from crossmodal.labels import ABDOMEN

    image, _ = abdominal_volume("MR", seed=2)
    small = image[100:130, 90:112, 10:14]  # 37 x 27 x 31 mm: far less than a 96-voxel window or a 48-voxel patch
    config = ResidualFCNConfig(filters=(2, 4, 4, 8, 8), units_per_scale=1)
    card = ModelCard("tiny", "0", "DualStreamFCN", config.as_dict(), ["MR", "CT"], {"spacing_mm": 2.0}, ModelCard.label_entries(ABDOMEN))
    result = segment_abdominal(DualStreamFCN(config), card, small)
    assert Grid.of(result.labels) == Grid.of(small) and result.modality == "MR" and result.modality_from == "intensities"
    assert set(np.unique(sitk.GetArrayViewFromImage(result.labels))) <= {0, 1, 2, 3, 4}


def test_raw_ct_meets_a_model_trained_on_windowed_ct_with_the_same_statistics():
    raw, _ = abdominal_volume("CT", seed=4)
    stored = sitk.Clamp(raw, raw.GetPixelID(), -125, 275)  # how BTCV's training copy is stored
    windowed = Preparation(ct_window=(-125, 275))
    a = prepare_volume(raw, "CT", preparation=windowed)
    b = prepare_volume(stored, "CT", preparation=windowed)
    assert a.image.shape == b.image.shape and np.abs(a.image - b.image).max() < 1e-4
    without = prepare_volume(raw, "CT").image  # without the window, the body and its statistics differ
    assert without.shape != a.image.shape or np.abs(without - a.image).max() > 0.5


def test_spatially_augmented_patches_keep_image_and_labels_together_and_vary():
    """Rotated, scaled, sometimes deformed: each patch's labels still lie on its organs' voxels, patches differ from
    the unaugmented ones, and the same generator seed gives the same patches (a training resumes exactly)."""
    from crossmodal.training.abdominal_training import PatchSampler, SpatialAugmentation

    image, labels = abdominal_volume("CT", seed=7)
    volume = prepare_volume(image, "CT", labels)
    volume = type(volume)(volume.modality, volume.labels.astype(np.float32) * 10.0, volume.grid, volume.source, volume.labels)  # image = 10 x class
    spatial = SpatialAugmentation(elastic_probability=0.5)
    augmented, plain = PatchSampler([volume], 24, 5, spatial), PatchSampler([volume], 24, 5)
    images, classes = augmented.draw(12, torch.Generator().manual_seed(3))
    assert images.shape == (12, 1, 24, 24, 24) and classes.shape == (12, 24, 24, 24) and set(classes.unique().tolist()) <= {0, 1, 2, 3, 4}
    interior = (images[:, 0] % 10 == 0)  # bilinear mixes values only at organ edges
    assert (images[:, 0][interior] / 10 == classes[interior]).float().mean() > 0.98
    again, _ = augmented.draw(12, torch.Generator().manual_seed(3))
    assert torch.equal(images, again)
    unaugmented, _ = plain.draw(12, torch.Generator().manual_seed(3))
    assert not torch.equal(images, unaugmented)
    assert spatial.context(24) > 24 and augmented.box == spatial.context(24) and plain.box == 24


def test_a_bfloat16_training_step_runs_in_bfloat16_and_learns():
    from crossmodal.training.abdominal_training import DualStreamTrainer, PatchBatch

    config = ResidualFCNConfig(variant="V4", filters=(2, 4, 4, 8, 8), units_per_scale=1)
    batch = PatchBatch(1, torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0)), torch.randint(5, (2, 16, 16, 16)))
    losses, seen = {}, []
    for bfloat16 in (False, True):
        torch.manual_seed(0)
        trainer = DualStreamTrainer(config, torch.device("cpu"), bfloat16=bfloat16)
        hook = trainer.network.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
        before = {k: v.clone() for k, v in trainer.state_dict().items()}
        losses[bfloat16] = trainer.train_step(batch, torch.Generator().manual_seed(1))["loss"]
        hook.remove()
        assert np.isfinite(losses[bfloat16]) and any(not torch.equal(v, before[k]) for k, v in trainer.state_dict().items())
    assert seen == [torch.float32, torch.bfloat16]
    assert losses[True] == pytest.approx(losses[False], abs=0.02) and losses[True] != losses[False]


def test_cross_entropy_teaches_background_where_the_dice_loss_is_blind_to_it():
    """On a patch with no organ, Dice over the organs scores 'kidney everywhere' as well as 'background
    everywhere' (both ~1): nothing taught the bundled network that background far from the organs is
    background. A recipe with ``cross_entropy`` trains with Dice plus voxel-wise cross-entropy, which tells them apart."""
    from crossmodal.training.abdominal_training import DualStreamTrainer
    from crossmodal.training.losses import dice_loss

    labels = torch.zeros(2, 8, 8, 8, dtype=torch.long)
    background, kidney = torch.zeros(2, 5, 8, 8, 8), torch.zeros(2, 5, 8, 8, 8)
    background[:, 0], kidney[:, 2] = 8.0, 8.0
    assert dice_loss(background, labels).item() == pytest.approx(dice_loss(kidney, labels).item(), abs=0.01)
    config = ResidualFCNConfig(variant="V4", filters=(2, 4, 4, 8, 8), units_per_scale=1)
    trainer = DualStreamTrainer(config, torch.device("cpu"), cross_entropy=True)
    assert trainer.loss(kidney, labels) - trainer.loss(background, labels) > 5.0
    assert DualStreamTrainer(config, torch.device("cpu")).loss is dice_loss  # the paper's loss unless asked


def test_a_dual_stream_recipe_reads_its_cross_entropy_key(tmp_path):
    import json

    from crossmodal.training.recipes import read_recipe

    config = tmp_path / "recipe.json"
    config.write_text(json.dumps({"architecture": "DualStreamFCN", "id": "v4-ce", "cross_entropy": True, "data": {"MR": str(tmp_path)}}))
    assert read_recipe(config).cross_entropy is True


def test_a_recipe_scales_its_spatially_augmented_patches_as_far_as_it_says(tmp_path):
    """Patch samplers take the recipe's ``spatial_scale`` (the bundle's training and every tables run alike); a scale
    that would flip or collapse an axis is refused with the key named."""
    import json

    from crossmodal.training.abdominal_training import SpatialAugmentation
    from crossmodal.training.recipes import Subject, read_recipe

    image, labels = abdominal_volume("MR", seed=5)
    subjects = {"MR": [Subject("phantom", "MR", prepare_volume(image, "MR", labels), sitk.GetArrayFromImage(labels))]}
    config = tmp_path / "recipe.json"
    for scale, context in ((None, SpatialAugmentation().context(16)), (0.3, int(np.ceil(16 * 1.3 * 1.3)))):
        config.write_text(json.dumps({"architecture": "DualStreamFCN", "id": "v4", "spatial_augmentation": True, "data": {"MR": str(tmp_path)},
                                      **({"spatial_scale": scale} if scale else {})}))
        recipe = read_recipe(config)
        sampler = recipe.patch_samplers(ResidualFCNConfig(filters=(2, 4, 4, 8, 8)), subjects, 16)[0]
        assert sampler.spatial.scale == (scale or SpatialAugmentation.scale) and sampler.box == context
    config.write_text(json.dumps({"architecture": "DualStreamFCN", "id": "v4", "spatial_augmentation": True, "spatial_scale": 1.2,
                                  "data": {"MR": str(tmp_path)}}))
    with pytest.raises(InputError, match="spatial_scale"):
        read_recipe(config).patch_samplers(ResidualFCNConfig(filters=(2, 4, 4, 8, 8)), subjects, 16)


def test_contrast_augmentation_moves_and_squeezes_the_tissues_of_a_patch_as_another_body_make_up_would(tmp_path):
    """The default noise and offsets keep the gap between two tissues; a recipe with ``contrast_augmentation`` varies
    it (contrast, gamma) and shifts both further, as an MR whose body mask holds much fluid does (CHAOST2_036); the
    gamma keeps each patch's mean and spread."""
    import json

    from crossmodal.training.abdominal_training import IntensityAugmentation
    from crossmodal.training.recipes import read_recipe

    patch = torch.full((1, 1, 16, 16, 16), -0.8)
    patch[..., 8:] = 2.0  # liver-like half, fluid-like half (z-scores)
    generator = torch.Generator().manual_seed(0)

    def gaps_and_shifts(augment: IntensityAugmentation) -> tuple[np.ndarray, np.ndarray]:
        out = [augment(patch, generator)[0, 0] for _ in range(200)]
        return (np.array([(o[..., 8:].mean() - o[..., :8].mean()).item() for o in out]) / 2.8,
                np.array([o[..., :8].mean().item() + 0.8 for o in out]))

    gaps, shifts = gaps_and_shifts(IntensityAugmentation())
    assert np.allclose(gaps, 1, atol=0.01) and np.abs(shifts).max() <= 0.11
    gaps, shifts = gaps_and_shifts(IntensityAugmentation.varied_contrast())
    assert gaps.min() < 0.8 and gaps.max() > 1.15 and np.abs(shifts).max() > 0.4

    ramp = torch.linspace(-2, 3, 4096).reshape(1, 1, 16, 16, 16)
    bent = IntensityAugmentation._gamma(ramp, torch.full((1, 1, 1, 1, 1), 1.5))
    assert bent.mean().item() == pytest.approx(ramp.mean().item(), abs=1e-4) and bent.std().item() == pytest.approx(ramp.std().item(), rel=1e-4)
    assert (bent - ramp).abs().max() > 0.1

    config = tmp_path / "recipe.json"
    config.write_text(json.dumps({"architecture": "DualStreamFCN", "id": "v4-contrast", "contrast_augmentation": True, "data": {"MR": "."}}))
    assert read_recipe(config).intensity_augmentation() == IntensityAugmentation.varied_contrast()


def test_a_weight_averaging_trainer_delivers_the_moving_average_and_resumes_it_exactly(tmp_path):
    """With ``weight_average`` the trainer delivers (validation, best checkpoint, bundle) the moving average of its weights
    and batch-norm statistics, not the last step's weights; a stopped run resumes the average where it was."""
    import json

    from crossmodal.training.abdominal_training import PatchBatch
    from crossmodal.training.recipes import read_recipe
    from crossmodal.training.trainer import Checkpointing, Schedule, TrainingStopped, train

    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"architecture": "DualStreamFCN", "id": "v4-average", "weight_average": 0.6, "data": {"MR": "."}}))
    recipe = read_recipe(path)
    config = ResidualFCNConfig(variant="V4", filters=(2, 4, 4, 8, 8), units_per_scale=1)

    def batch(generator: torch.Generator) -> PatchBatch:
        stream = int(torch.randint(2, (), generator=generator))
        return PatchBatch(stream, torch.randn(2, 1, 16, 16, 16, generator=generator), torch.randint(5, (2, 16, 16, 16), generator=generator))

    def run(stop_at=None, resume=False):
        torch.manual_seed(0)
        trainer = recipe.trainer(config, torch.device("cpu"), 1e-2)
        raw = []
        try:
            train(trainer, batch, Schedule(6), checkpointing=Checkpointing(tmp_path / "run.pt", every=100), resume=resume,
                  should_stop=lambda step: step == stop_at, log=lambda _: raw.append({k: v.clone() for k, v in trainer.module.state_dict().items()}))
        except TrainingStopped:
            pass
        return trainer, raw

    trainer, raw = run()
    name = "stem.1.weight"
    expected = raw[0][name]
    for n, weights in enumerate(raw[1:], 1):
        expected = expected.lerp(weights[name], 1 - min(0.6, (1 + n) / (10 + n)))
    assert torch.allclose(trainer.state_dict()[name], expected, atol=1e-6)
    assert not torch.allclose(trainer.state_dict()[name], raw[-1][name], atol=1e-3)  # the average, not the last step
    means = [k for k in trainer.state_dict() if k.endswith("stream_mean")]
    assert means and not torch.equal(trainer.state_dict()[means[0]], raw[-1][means[0]])  # batch-norm statistics averaged too
    assert run(stop_at=3)[0].average.n_averaged.item() == 3
    resumed, _ = run(resume=True)
    assert all(torch.equal(v, trainer.state_dict()[k]) for k, v in resumed.state_dict().items())

    recipe.weight_average = 1.5  # a typo for 0.995 would extrapolate instead of average
    with pytest.raises(InputError, match="weight_average must lie between 0 and 1"):
        recipe.trainer(config, torch.device("cpu"), 1e-2)


def test_a_second_seed_can_train_on_the_split_of_the_first():
    """``seed`` draws the initial weights and, unless ``validation_seed`` is set, the held-out subjects too: with it, two
    seeds hold out the same subjects, so their difference is the noise of a training, not of a split."""
    from crossmodal.training.recipes import DualStreamRecipe, Subject

    subjects = {"MR": [Subject(f"MR_{i:02d}", "MR", None, None) for i in range(15)], "CT": [Subject(f"CT_{i}", "CT", None, None) for i in range(4)]}

    def held(**keys) -> list[str]:
        return [s.case_id for s in DualStreamRecipe(**keys).validation_split(subjects)[0]]

    assert len(held(seed=0)) == 4 and held(seed=0) != held(seed=1)
    assert held(seed=1, validation_seed=0) == held(seed=0) == held(seed=0, validation_seed=0)
    held_out, training = DualStreamRecipe(seed=1, validation_seed=0).validation_split(subjects)
    assert sorted(s.case_id for s in held_out + training["MR"] + training["CT"]) == sorted(s.case_id for v in subjects.values() for s in v)


def test_validation_grades_what_segment_delivers():
    """The checkpoint choice, the card and the tables score the product's output (one piece per organ, kidneys by side),
    not the network's raw arg-max: a card must not promise other figures than `segment` gives."""
    from crossmodal.abdominal_inference import segment_abdominal
    from crossmodal.bundles import ModelCard
    from crossmodal.labels import ABDOMEN
    from crossmodal.scoring import structure_dice
    from crossmodal.training.recipes import Subject, subject_dice

    image, labels = abdominal_volume("MR", seed=6)
    config = ResidualFCNConfig(filters=(2, 4, 4, 8, 8), units_per_scale=1)
    card = ModelCard("tiny", "0", "DualStreamFCN", config.as_dict(), ["MR", "CT"], {"spacing_mm": 2.0}, ModelCard.label_entries(ABDOMEN))
    torch.manual_seed(3)
    network = DualStreamFCN(config).eval()
    reference = sitk.GetArrayFromImage(labels)
    subject = Subject("phantom", "MR", prepare_volume(image, "MR", labels), reference)
    delivered = structure_dice(sitk.GetArrayFromImage(segment_abdominal(network, card, image, "MR").labels), reference, ABDOMEN)
    raw = structure_dice(sitk.GetArrayFromImage(segment_abdominal(network, card, image, "MR", keep_components=False).labels), reference, ABDOMEN)
    assert delivered != raw  # an untrained network's organs come in pieces
    assert subject_dice(network, subject, torch.device("cpu")) == pytest.approx(delivered)


def test_mirrored_patches_keep_each_kidney_named_after_the_side_it_lies_on():
    """Half the patches come flipped left-right; a flipped right kidney lies on the left and is labelled the left kidney,
    so the labels always follow the side of the body (the last axis points to the patient's left), never the appearance."""
    from crossmodal.abdominal import PreparedVolume
    from crossmodal.labels import ABDOMEN, CARDIAC_MYO_LV
    from crossmodal.training.abdominal_training import PatchSampler

    assert ABDOMEN.mirrored_classes().tolist() == [0, 1, 3, 2, 4]  # kidneys swap; liver and spleen keep their names
    assert CARDIAC_MYO_LV.mirrored_classes().tolist() == [0, 1, 2]
    side = np.broadcast_to(np.arange(16, dtype=np.float32), (16, 16, 16))  # intensity = x: tells a flipped patch
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[4:12, 4:12, 2:6], labels[4:12, 4:12, 10:14] = 2, 3  # right kidney on the right (low x), left on the left
    volume = PreparedVolume("CT", side.copy(), None, None, labels)
    images, classes = PatchSampler([volume], 16, 5, mirror=ABDOMEN.mirrored_classes()).draw(24, torch.Generator().manual_seed(0))
    flipped = images[:, 0, 0, 0, 0] > images[:, 0, 0, 0, -1]
    assert 4 <= int(flipped.sum()) <= 20  # about half
    x = torch.arange(16).float()
    for kidneys in classes:
        assert x.expand(16, 16, 16)[kidneys == 2].mean() < 8 < x.expand(16, 16, 16)[kidneys == 3].mean()
    plain, _ = PatchSampler([volume], 16, 5).draw(24, torch.Generator().manual_seed(0))
    assert not (plain[:, 0, 0, 0, 0] > plain[:, 0, 0, 0, -1]).any()


class SideAwareNetwork(torch.nn.Module):
    """Calls bright voxels on the patient's right (low x) the right kidney and on the left the left kidney, as a network
    trained on mirrored patches learns to: flipping its input flips its answer with the kidneys' names swapped."""

    def forward(self, windows: torch.Tensor, stream: int) -> torch.Tensor:
        intensity = windows[:, 0]
        towards_left = torch.linspace(0, 1, intensity.shape[-1])
        zeros = torch.zeros_like(intensity)
        return torch.stack([1 - intensity, zeros, 8 * intensity * (1 - towards_left), 8 * intensity * towards_left, zeros], dim=1)


def test_test_time_mirroring_averages_the_flipped_prediction_with_the_kidneys_swapped_back():
    from crossmodal.abdominal import PreparedVolume
    from crossmodal.labels import ABDOMEN

    image = np.zeros((8, 8, 8), np.float32)
    image[2:6, 2:6, 1:3] = image[2:6, 2:6, 5:7] = 1.0  # one kidney on each side
    prepared = PreparedVolume("MR", image, None, None)
    plain = predict_probabilities(SideAwareNetwork(), 0, prepared, window=8)
    done = []
    mirrored = predict_probabilities(SideAwareNetwork(), 0, prepared, window=8, mirror=ABDOMEN.mirrored_classes(),
                                     progress=lambda d, t: done.append((d, t)))
    assert np.allclose(mirrored, plain, atol=1e-6)  # a consistent network: the flipped guess agrees once swapped back
    assert plain[2, 3, 3, 1] > 0.9 and plain[3, 3, 3, 6] > 0.9 and done[-1] == (2, 2)  # two passes of one window
    unswapped = predict_probabilities(SideAwareNetwork(), 0, prepared, window=8, mirror=np.arange(5))
    assert unswapped[2, 3, 3, 1] < 0.6  # without the swap the two guesses contradict each other


def test_test_time_mirroring_is_refused_for_a_model_not_trained_for_it():
    from crossmodal.abdominal_inference import segment_abdominal
    from crossmodal.bundles import MIRRORED_PATCHES, ModelCard
    from crossmodal.labels import ABDOMEN

    image, _ = abdominal_volume("MR", seed=6)
    config = ResidualFCNConfig(filters=(2, 4, 4, 8, 8), units_per_scale=1)
    card = ModelCard("plain", "0", "DualStreamFCN", config.as_dict(), ["MR", "CT"], {"spacing_mm": 2.0}, ModelCard.label_entries(ABDOMEN))
    with pytest.raises(InputError, match="not trained on mirrored patches"):
        segment_abdominal(DualStreamFCN(config).eval(), card, image, "MR", mirror=True)
    card.training[MIRRORED_PATCHES] = True
    result = segment_abdominal(DualStreamFCN(config).eval(), card, image, "MR", mirror=True)
    assert result.labels.GetSize() == image.GetSize()


def test_a_recipe_trained_on_mirrored_patches_says_so_and_segment_mirrors_for_it(models, tmp_path):
    """``"mirror": true`` (the tiny test recipe has it) trains on flipped patches too; the card records it with
    validation both ways, and ``segment --mirror`` runs for it, its output on the input's grid."""
    import json

    from crossmodal.bundles import read_card
    from crossmodal.cli import main as crossmodal
    from crossmodal.image_io import read_image, write_image

    card = read_card(models["abdominal"])
    assert card.trained_mirrored
    assert card.validation["dice_native_mirrored"].keys() == card.validation["dice_native"].keys()
    assert card.validation["average_mirrored"].keys() == {"CT", "MR"}
    image = write_image(abdominal_volume("MR", seed=2)[0], tmp_path / "mr.nii.gz")
    assert crossmodal(["segment", "--image", str(image), "--model", str(models["abdominal"]), "--mirror", "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "segment.json").read_text())
    assert summary["test_time_mirroring"] is True
    organs, source = read_image(summary["outputs"]["organs"]), read_image(image)
    assert organs.GetSize() == source.GetSize() and organs.GetOrigin() == source.GetOrigin()


def with_bright_fluid(image: sitk.Image, labels: sitk.Image, times: float) -> sitk.Image:
    """``image`` with a fluid pocket beside the organs ``times`` as bright as the liver, as in a T2 MR whose fluid far
    outshines its soft tissue (CHAOS T2 036)."""
    array, organs = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels)
    z, y, x = np.indices(array.shape) / np.array(array.shape)[:, None, None, None]
    pocket = (((x - 0.78) / 0.12) ** 2 + ((y - 0.35) / 0.12) ** 2 + ((z - 0.5) / 0.3) ** 2 < 1) & (organs == 0)
    array[pocket] = times * np.median(array[organs == 1])
    fluid = sitk.GetImageFromArray(array)
    fluid.CopyInformation(image)
    return fluid


def test_bright_fluid_does_not_throw_the_body_threshold_off_the_body():
    """Otsu split CHAOS T2 036's fluid from everything else: the organs were normalised to about -5 (and cropped
    away). Li's threshold finds the body whatever its fluid; a model's card says which one it was trained with."""
    image, labels = abdominal_volume("MR", seed=3)
    fluid = with_bright_fluid(image, labels, times=8)

    def liver_level(volume: sitk.Image, method: str) -> float:
        prepared = prepare_volume(volume, "MR", labels, preparation=Preparation(body_threshold=method))
        assert np.bincount(prepared.labels.ravel(), minlength=5)[1:].min() > 0  # every organ inside the crop
        return float(prepared.image[prepared.labels == 1].mean())

    assert abs(liver_level(fluid, "li") - liver_level(image, "li")) < 0.5
    assert abs(liver_level(fluid, "otsu") - liver_level(image, "otsu")) > 3  # the fault the choice exists for
    with pytest.raises(ValueError, match="body_threshold"):
        prepare_volume(image, "MR", preparation=Preparation(body_threshold="mean"))


def test_segment_finds_the_body_as_the_model_was_trained_to(tmp_path):
    import json

    from crossmodal.abdominal_inference import segment_abdominal
    from crossmodal.bundles import ModelCard
    from crossmodal.labels import ABDOMEN
    from crossmodal.training.recipes import read_recipe

    config = tmp_path / "recipe.json"
    config.write_text(json.dumps({"architecture": "DualStreamFCN", "id": "v4-li", "body_threshold": "li", "data": {"MR": str(tmp_path)}}))
    assert read_recipe(config).body_threshold == "li"
    image, _ = abdominal_volume("MR", seed=6)
    net = ResidualFCNConfig(filters=(2, 4, 4, 8, 8), units_per_scale=1)
    card = ModelCard("v4", "0", "DualStreamFCN", net.as_dict(), ["MR", "CT"], {"spacing_mm": 2.0, "body_threshold": "li"},
                     ModelCard.label_entries(ABDOMEN))
    assert segment_abdominal(DualStreamFCN(net).eval(), card, image, "MR").labels.GetSize() == image.GetSize()
    card.preprocessing["body_threshold"] = "mean"  # a card edited by hand
    with pytest.raises(InputError, match="body_threshold 'mean'"):
        segment_abdominal(DualStreamFCN(net).eval(), card, image, "MR")


def test_a_recipe_prepares_as_it_says_and_its_card_makes_inference_prepare_alike(tmp_path):
    import json

    from crossmodal.abdominal_inference import segment_abdominal
    from crossmodal.bundles import ModelCard
    from crossmodal.labels import ABDOMEN
    from crossmodal.training.recipes import read_recipe

    config = tmp_path / "recipe.json"
    config.write_text(json.dumps({"architecture": "DualStreamFCN", "id": "v4", "ct_window": [-125, 275], "body_threshold": "li",
                                  "trim_blank_borders": True, "data": {"MR": str(tmp_path)}}))
    preparation = read_recipe(config).preparation
    assert preparation == Preparation(2.0, (-125, 275), "li", True)
    entries = preparation.card_entries()
    assert Preparation.of_card(entries, "card") == preparation
    assert Preparation.of_card({"spacing_mm": 2.0}, "card") == Preparation()  # a card from before the choices: as it was trained

    image, _ = abdominal_volume("MR", seed=6)
    array = sitk.GetArrayFromImage(image)
    array[-3:] = 0
    blanked = sitk.GetImageFromArray(array)
    blanked.CopyInformation(image)
    net = ResidualFCNConfig(filters=(2, 4, 4, 8, 8), units_per_scale=1)
    card = ModelCard("v4", "0", "DualStreamFCN", net.as_dict(), ["MR", "CT"], entries, ModelCard.label_entries(ABDOMEN))
    torch.manual_seed(0)
    with torch.no_grad():
        network = DualStreamFCN(net).eval()
        network.decoder[0].last.bias[1:] += 50.0  # an untrained network that calls every voxel an organ
        labels = sitk.GetArrayFromImage(segment_abdominal(network, card, blanked, "MR", keep_components=False).labels)
    assert labels[:-3].any() and not labels[-3:].any()


def test_the_single_network_is_the_default_abdominal_model_and_its_seed_ensemble_is_offered_beside_it():
    """The ensemble bundle averages the default model and a second training of its recipe: its first member is
    exactly the default's weights (rounded to float16), prepared alike and validated on the same volumes."""
    default = find_model(None, "abdominal")
    assert default.name == "dualstream-v4-abdomen"
    single_card, single = load_bundle(default)
    card, ensemble = load_bundle(find_model("dualstream-v4x2-abdomen", "abdominal"))
    assert isinstance(ensemble, DualStreamEnsemble) and card.hyperparameters[MEMBERS] == len(ensemble.members) == 2
    assert [m["recipe"]["seed"] for m in card.training["members"]] == [0, 1] and card.weights_dtype == "float16"
    assert Preparation.of_card(card.preprocessing, "ensemble") == Preparation.of_card(single_card.preprocessing, "single")
    assert card.validation["subjects"] == single_card.validation["subjects"]
    rounded = round_to_float16(single).state_dict()
    assert all(torch.equal(rounded[k], v) for k, v in ensemble.members[0].state_dict().items())
