"""Trainer package: samples and flags, augmentation, semi-supervised wiring, checkpoint choice."""

import numpy as np
import pytest
import torch

from crossmodal.datasets import discover_mscmrseg
from crossmodal.nets.mmsdnet import MMSDNetConfig
from crossmodal.pairing import PairingConfig
from crossmodal.reproduce.cardiac_baselines import DualStreamMethod, PairedUNetMethod, UNetMethod
from crossmodal.training.cardiac_data import Augmentation, balanced_batches, build_samples, load_patient
from crossmodal.training.evaluation import predict_patient, score_common_grid, score_native, validation_score
from crossmodal.training.methods import MMSDNetMethod
from crossmodal.training.trainer import Schedule, train

GRID = PairingConfig(spacing_mm=2.5, size=64)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def patients(phantom_mscmrseg):
    cases = {c.patient: c for c in discover_mscmrseg(phantom_mscmrseg)}
    return {p: load_patient(cases[p], GRID) for p in (1, 2, 8)}


def test_patients_are_paired_normalised_and_masked(patients):
    p = patients[1]
    assert p.lge.shape == p.cine.shape == p.lge_mask.shape == (len(p.stack.slices), 64, 64)
    assert 0 <= p.lge.min() and p.lge.max() <= 1
    assert set(np.unique(p.lge_mask)) <= {0, 1, 2} and (p.lge_mask == 1).any() and (p.lge_mask == 2).any()
    assert patients[8].lge_mask is None and patients[8].lge_reference is None and patients[8].cine_mask is not None


def test_only_chosen_patients_contribute_lge_masks(patients):
    samples = build_samples(list(patients.values()), {2})
    n1, n2 = len(patients[1].lge), len(patients[2].lge)
    assert samples.has_lge_mask.tolist() == [False] * n1 + [True] * n2 + [False] * len(patients[8].lge)
    assert samples.lge_mask[:n1].sum() == 0 and samples.lge_mask[n1 : n1 + n2].sum() > 0
    with pytest.raises(ValueError, match="patient 8 has no LGE mask"):
        build_samples([patients[8]], {8})


def test_augmentation_moves_image_and_mask_together():
    mask = torch.zeros(4, 32, 32, dtype=torch.long)
    mask[:, 10:20, 12:24] = 2
    image = mask[:, None].float() / 2
    (warped, warped_mask), (twin, twin_mask) = Augmentation()((image, mask), (image * 3, mask), generator=torch.Generator().manual_seed(1))
    agreement = ((warped[:, 0] > 0.5) == (warped_mask == 2)).float().mean()
    assert agreement > 0.98 and not torch.equal(warped_mask, mask)
    assert torch.equal(twin_mask, warped_mask) and torch.allclose(twin, warped * 3)  # a pair shares its draw
    [(same, same_mask)] = Augmentation(0, 0, 0)((image, mask), generator=torch.Generator())
    assert torch.equal(same_mask, mask) and torch.allclose(same, image, atol=1e-5)


def test_without_lge_masks_the_lge_encoder_still_learns_through_the_cine_masks(patients):
    """The semi-supervised path: at 0 % LGE masks, cine-supervised warped and fused anatomies train E_a2."""
    method = MMSDNetMethod(MMSDNetConfig(filters=4), CPU)
    samples = build_samples([patients[1], patients[8]], set())
    assert not samples.has_lge_mask.any()
    before = [p.detach().clone() for p in method.network.anatomy[1].parameters()]
    losses = method.train_step(samples.batch(torch.arange(4)), torch.Generator().manual_seed(0))
    assert all(np.isfinite(v) for v in losses.values()) and losses["dice"] > 0
    after = list(method.network.anatomy[1].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_methods_that_need_lge_masks_refuse_to_train_without_them(patients):
    samples = build_samples([patients[1]], set())
    single, both = UNetMethod(3, 4, 4, CPU, both=False), UNetMethod(3, 4, 4, CPU, both=True)
    with pytest.raises(ValueError, match="UNet-single: no training sample has the masks"):
        balanced_batches(samples, single.usable(samples), 4, single.name)
    train(both, balanced_batches(samples, both.usable(samples), 4, both.name), Schedule(1))  # the cine masks suffice


def test_the_paired_unet_reads_the_cine_only_where_a_slice_has_one(patients):
    method = PairedUNetMethod(3, 4, 4, CPU, learning_rate=1e-3)
    samples = build_samples([patients[1], patients[2]], {2})
    assert torch.equal(method.usable(samples), samples.has_lge_mask)  # it learns from LGE masks only
    train(method, method.batches(samples, 4), Schedule(2))
    cine, lge = samples.cine[:4], samples.lge[:4]
    paired = torch.tensor([True, True, False, False])
    base = method.predict(cine, lge, paired)["UNet-paired"]
    other = method.predict(torch.rand_like(cine), lge, paired)["UNet-paired"]
    assert not torch.allclose(base[:2], other[:2]) and torch.equal(base[2:], other[2:])
    assert base.shape == (4, 3, 64, 64) and torch.allclose(base.sum(1), torch.ones(4, 64, 64))


def test_batches_are_half_lge_labelled_when_few_samples_are(patients):
    samples = build_samples([patients[1], patients[2], patients[8]], {2})
    draw = balanced_batches(samples, samples.has_cine, 8, "test")
    generator = torch.Generator().manual_seed(0)
    assert all(draw(generator).has_lge_mask[:4].all() for _ in range(5))


def test_training_keeps_the_best_validated_weights(patients):
    method = DualStreamMethod(3, 4, 4, CPU)
    scores = iter([0.2, 0.9, 0.1])
    kept = {}

    def validate(m):
        score = next(scores)
        kept[score] = {k: v.clone() for k, v in m.state_dict().items()}
        return score

    samples = build_samples([patients[1]], {1})
    batches = balanced_batches(samples, method.usable(samples), 2, method.name)
    result = train(method, batches, Schedule(3, validate_every=1), validate=validate)
    assert (result.best_step, result.best_score) == (2, 0.9)
    assert all(torch.equal(v, kept[0.9][k]) for k, v in method.state_dict().items())


def test_a_perfect_prediction_scores_near_one_on_the_native_lge_grid(patients):
    """Geometry through write-back: the LGE mask on the common grid, put back, matches the native mask."""
    p = patients[2]
    perfect = np.stack([(p.lge_mask == c).astype(np.float32) for c in range(3)])
    scores = score_native(p, perfect)
    assert scores["volume"]["left ventricle"] > 0.9 and scores["volume"]["myocardium"] > 0.75  # 2.5 mm grid vs ~0.75 mm voxels
    assert score_common_grid(p, perfect) == 1.0


class _Fixed(UNetMethod):
    """A method whose outputs are given probabilities: here only the checkpoint score is under test."""

    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        super().__init__(3, 4, 2, CPU, both=False)
        self.fixed = outputs
        self.outputs = tuple(outputs)

    def predict(self, cine, lge, paired):
        return {name: torch.from_numpy(probs).permute(1, 0, 2, 3) for name, probs in self.fixed.items()}


def test_checkpoints_are_chosen_for_every_output_of_a_method(patients):
    """A perfect fused result beside a collapsed LGE-only one must not score as perfect."""
    p = patients[2]
    perfect = np.stack([(p.lge_mask == c).astype(np.float32) for c in range(3)])
    collapsed = np.stack([np.ones_like(perfect[0]), np.zeros_like(perfect[0]), np.zeros_like(perfect[0])])
    assert validation_score(_Fixed({"fused": perfect}), [p]) == 1.0
    assert validation_score(_Fixed({"single": collapsed, "fused": perfect}), [p]) == pytest.approx(0.5)


def test_predictions_cover_every_lge_slice_for_every_output(patients):
    method = MMSDNetMethod(MMSDNetConfig(filters=4), CPU)
    probs = predict_patient(method, patients[1], batch_size=5)
    assert set(probs) == {"MMSDNet-single", "MMSDNet-multi"}
    for p in probs.values():
        assert p.shape == (3, len(patients[1].lge), 64, 64)
        assert np.allclose(p.sum(axis=0), 1, atol=1e-5)


def test_a_recipe_starts_from_the_same_weights_every_time(phantom_mscmrseg, tmp_path):
    """The initial weights belong to the recipe (its seed), so that a training is reproducible."""
    from crossmodal.phantoms import write_nnunet_phantoms
    from crossmodal.training.recipes import DualStreamRecipe, MMSDNetRecipe

    recipes = [MMSDNetRecipe(size=32, spacing_mm=6.0, filters=4, validation=[1], data={"mscmrseg": str(phantom_mscmrseg)}),
               DualStreamRecipe(filters=[2, 4, 4, 8, 8], patch=16, validation={"CT": 1},
                                data={"CT": str(write_nnunet_phantoms(tmp_path / "ct", "CT", 2))})]
    for recipe in recipes:
        torch.manual_seed(1)  # whatever the global stream was before: the recipe's seed decides
        first = recipe.prepare(CPU, lambda *a: None).network.state_dict()
        torch.manual_seed(2)
        second = recipe.prepare(CPU, lambda *a: None).network.state_dict()
        assert all(torch.equal(first[k], second[k]) for k in first), type(recipe).__name__


@pytest.mark.parametrize("native", [False, True])
def test_a_bfloat16_recipe_autocasts_only_where_the_device_computes_bfloat16(phantom_mscmrseg, tmp_path, monkeypatch, native):
    """Emulated bfloat16 made an MMSDNet step 35x slower than float32 on a CPU without AVX512-BF16."""
    from crossmodal.phantoms import write_nnunet_phantoms
    from crossmodal.training import recipes

    monkeypatch.setattr(recipes, "fast_bfloat16", lambda device: native)
    for recipe in (recipes.MMSDNetRecipe(size=32, spacing_mm=6.0, filters=4, validation=[1], bfloat16=True,
                                         data={"mscmrseg": str(phantom_mscmrseg)}),
                   recipes.DualStreamRecipe(filters=[2, 4, 4, 8, 8], patch=16, validation={"CT": 1}, bfloat16=True,
                                            data={"CT": str(write_nnunet_phantoms(tmp_path / "ct", "CT", 2))})):
        assert recipe.prepare(CPU, lambda *a: None).trainable.bfloat16 is native, type(recipe).__name__


def test_the_z_reconstruction_trains_only_the_decoder_and_the_modality_encoder(patients):
    """As in the authors' separate z-regression step: it never reaches the anatomy encoders or the alignment."""
    method = MMSDNetMethod(MMSDNetConfig(filters=4), CPU)
    net = method.network.train()
    samples = build_samples([patients[1]], {1})
    batch = samples.batch(torch.arange(2))
    out = net(batch.cine, batch.lge, reconstructions=True)
    (out["z_estimate"] - out["z_prior"]).abs().mean().backward()
    touched = {name.split(".")[0] for name, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert touched == {"modality", "decoder"}


def test_the_alignment_learns_from_images_alone(patients):
    """With no mask term at all, the cross-reconstructions still train the TPS (own-image reconstruction cannot)."""
    from crossmodal.training.methods import LossWeights

    torch.manual_seed(0)
    method = MMSDNetMethod(MMSDNetConfig(filters=4), CPU, weights=LossWeights(dice=0.0, adversarial=0.0))
    samples = build_samples([patients[1], patients[8]], set())
    before = method.network.localisation.offsets.weight.detach().clone()
    losses = method.train_step(samples.batch(torch.arange(4)), torch.Generator().manual_seed(0))
    assert {"kl", "reconstruction", "z_reconstruction", "dice", "adversarial", "discriminator"} <= losses.keys()
    assert not torch.equal(before, method.network.localisation.offsets.weight)


@pytest.fixture
def without_cine(phantom_mscmrseg, tmp_path):
    """The phantom folder with patient 2's cine removed: an LGE-only labelled patient, as MS-CMRSeg 36-45."""
    import shutil

    folder = tmp_path / "mscmrseg"
    shutil.copytree(phantom_mscmrseg, folder)
    for path in folder.glob("patient2_C0*"):
        path.unlink()
    return folder


def test_lge_only_patients_train_the_lge_branch_in_batches_of_their_own(without_cine):
    cases = {c.patient: c for c in discover_mscmrseg(without_cine)}
    alone = load_patient(cases[2], GRID)
    assert not alone.paired.any() and alone.lge_mask is not None and not alone.cine.any()
    samples = build_samples([load_patient(cases[1], GRID), alone], {1, 2})
    method = MMSDNetMethod(MMSDNetConfig(filters=4), CPU)
    draw, generator = method.batches(samples, 4), torch.Generator().manual_seed(0)
    batches = [draw(generator) for _ in range(40)]
    assert all(b.has_cine.all() or not b.has_cine.any() for b in batches)  # never mixed
    lge_only = [b for b in batches if not b.has_cine.any()]
    assert 0 < len(lge_only) < len(batches) and all(b.has_lge_mask.all() for b in lge_only)
    cine_encoder = [p.detach().clone() for p in method.network.anatomy[0].parameters()]
    lge_encoder = [p.detach().clone() for p in method.network.anatomy[1].parameters()]
    losses = method.train_step(lge_only[0], generator)
    assert losses["dice"] > 0 and all(np.isfinite(v) for v in losses.values())
    assert all(torch.equal(a, b) for a, b in zip(cine_encoder, method.network.anatomy[0].parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(lge_encoder, method.network.anatomy[1].parameters()))


def test_the_recipe_trains_on_lge_only_patients_and_validates_on_pairs(without_cine):
    from crossmodal.training.recipes import MMSDNetRecipe

    recipe = MMSDNetRecipe(size=32, spacing_mm=6.0, filters=4, validation=1, data={"mscmrseg": str(without_cine)})
    job = recipe.prepare(CPU, lambda *a: None)
    card = job.card(train(job.trainable, job.batches, Schedule(2, validate_every=2), validate=job.validate))
    assert 2 in card.training["patients"] and 2 in card.training["lge_labelled"]
    assert 2 not in card.validation["patients"]


def test_the_learning_rate_warms_up_decays_and_resumes_where_it_was(patients, tmp_path):
    from crossmodal.training.trainer import Checkpointing, TrainingStopped

    schedule = Schedule(8, validate_every=100, warmup_steps=2, final_learning_rate=0.1)
    assert [round(schedule.learning_rate_factor(s), 3) for s in (1, 2, 5, 8)] == [0.5, 1.0, 0.55, 0.1]
    assert Schedule(8).learning_rate_factor(5) == 1.0  # constant by default

    def run(stop_at=None, resume=False):
        torch.manual_seed(0)
        method = DualStreamMethod(3, 4, 4, CPU, learning_rate=1e-3)
        samples = build_samples([patients[1]], {1})
        seen = []
        try:
            train(method, method.batches(samples, 2), schedule, log=lambda e: seen.append((e["step"], method.optimiser.param_groups[0]["lr"])),
                  checkpointing=Checkpointing(tmp_path / "run.pt", every=100), resume=resume, should_stop=lambda s: s == stop_at)
        except TrainingStopped:
            pass
        return seen

    whole = run()
    assert [round(lr, 6) for _, lr in whole] == [round(1e-3 * schedule.learning_rate_factor(s), 6) for s in range(1, 9)]
    assert run(stop_at=3)[-1][0] == 3 and run(resume=True) == whole[3:]
