"""Model bundles (hash, safe loading, bad files) and MMSDNet inference back in physical space."""

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from crossmodal.bundles import LGE_UNET, ModelCard, load_bundle, read_card, round_to_float16, save_bundle
from crossmodal.cardiac_inference import OUTPUTS, displacement_transform, segment_cardiac
from crossmodal.errors import InputError
from crossmodal.geometry import Grid
from crossmodal.labels import CARDIAC_MYO_LV
from crossmodal.nets.blocks import UNet
from crossmodal.nets.ensemble import LGEEnsemble
from crossmodal.nets.mmsdnet import MMSDNet, MMSDNetConfig
from crossmodal.phantoms import cardiac_pair

CONFIG = MMSDNetConfig(filters=4)


def card() -> ModelCard:
    return ModelCard(
        id="test-mmsdnet", version="0", architecture="MMSDNet", hyperparameters=CONFIG.as_dict(), modalities=["cine", "LGE"],
        preprocessing={"size": 64, "spacing_mm": 2.5, "normalisation": "percentile 0.5-99.5 per slice"},
        labels=ModelCard.label_entries(CARDIAC_MYO_LV),
    )


@pytest.fixture
def bundle(tmp_path):
    torch.manual_seed(0)
    save_bundle(tmp_path / "model", MMSDNet(CONFIG), card())
    return tmp_path / "model"


def test_a_saved_bundle_loads_into_the_same_network(bundle):
    loaded_card, network = load_bundle(bundle)
    assert len(loaded_card.sha256) == 64 and not network.training
    torch.manual_seed(0)
    reference = MMSDNet(CONFIG)
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), network.state_dict().values()))


def test_a_float16_bundle_is_half_the_size_and_loads_exactly_the_rounded_network(tmp_path):
    """Storing in float16 must not change what was measured: only a network already rounded may be stored so."""
    torch.manual_seed(0)
    network = MMSDNet(CONFIG)
    with pytest.raises(ValueError, match="round_to_float16"):
        save_bundle(tmp_path / "unrounded", network, card(), float16=True)
    assert not (tmp_path / "unrounded").exists()
    save_bundle(tmp_path / "full", network, card())
    written = save_bundle(tmp_path / "half", round_to_float16(network), card(), float16=True)
    loaded_card, loaded = load_bundle(tmp_path / "half")
    assert written.weights_dtype == loaded_card.weights_dtype == "float16" and read_card(tmp_path / "full").weights_dtype == "float32"
    assert all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(network.state_dict().values(), loaded.state_dict().values()))
    assert (tmp_path / "half" / "model.pt").stat().st_size < 0.6 * (tmp_path / "full" / "model.pt").stat().st_size


def test_a_tampered_weights_file_is_refused_before_it_is_read(bundle):
    weights = bundle / "model.pt"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="does not match the sha256 in its card"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: (b / "card.json").unlink(), "card.json is missing"),
        (lambda b: (b / "model.pt").unlink(), "model.pt is missing"),
        (lambda b: (b / "card.json").write_text("{not json"), "is not a valid model card"),
        (lambda b: _edit_card(b, architecture="Nope"), "unknown architecture 'Nope'"),
        (lambda b: _edit_card(b, hyperparameters={**CONFIG.as_dict(), "filters": 8}), "does not fit the MMSDNet"),
        # The card promises an LGE U-Net that the weights do not hold, or one the network cannot be built with.
        (lambda b: _edit_card(b, hyperparameters={**CONFIG.as_dict(), LGE_UNET: {"filters": 4, "depth": 4}}), "does not fit the MMSDNet"),
        (lambda b: _edit_card(b, hyperparameters={**CONFIG.as_dict(), LGE_UNET: {"width": 4}}), "card.json: .*unexpected keyword argument 'width'"),
        # A card of the first design (per-modality modality encoders and decoders) recorded no design.
        (lambda b: _edit_card(b, hyperparameters={k: v for k, v in CONFIG.as_dict().items() if k not in ("design", "segmentor_filters")}),
         r"card.json: MMSDNet design 1 is not this version's \(2\): train the model again"),
    ],
)
def test_broken_bundles_get_clear_errors(bundle, damage, message):
    damage(bundle)
    with pytest.raises(InputError, match=message):
        load_bundle(bundle)


def test_a_pickled_object_in_place_of_weights_is_not_executed(bundle, tmp_path):
    """weights_only=True: a bundle cannot run code, even with a matching hash."""
    import hashlib

    torch.save({"payload": Exploit()}, bundle / "model.pt")
    _edit_card(bundle, sha256=hashlib.sha256((bundle / "model.pt").read_bytes()).hexdigest())
    with pytest.raises(InputError, match="could not be read as PyTorch weights"):
        load_bundle(bundle)
    assert not (tmp_path / "pwned").exists()


class Exploit:
    def __reduce__(self):
        import os

        return (os.mkdir, ("pwned",))


def _edit_card(bundle, **changes):
    data = json.loads((bundle / "card.json").read_text())
    data.update(changes)
    (bundle / "card.json").write_text(json.dumps(data))


@pytest.fixture(scope="module")
def pair():
    return cardiac_pair(seed=4)


def test_an_ensemble_bundle_averages_its_lge_unet_into_the_lge_results_only(tmp_path, pair):
    """The LGE alone and the fused LGE become the mean of MMSDNet's and the U-Net's probabilities; the cine's
    results, the cine warped onto the LGE and the alignment stay MMSDNet's; inference reads it as an MMSDNet."""
    torch.manual_seed(0)
    mmsdnet, unet = MMSDNet(CONFIG).eval(), UNet(1, CONFIG.classes, 4, 4).eval()
    ensemble_card = replace(card(), hyperparameters={**CONFIG.as_dict(), LGE_UNET: {"filters": 4, "depth": 4}})
    save_bundle(tmp_path / "ensemble", LGEEnsemble(mmsdnet, unet), ensemble_card)
    loaded_card, network = load_bundle(tmp_path / "ensemble")
    assert isinstance(network, LGEEnsemble)
    cine, lge = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        own, joined, from_unet = mmsdnet(cine, lge), network(cine, lge), torch.softmax(unet(lge), dim=1)
        lge_only = network(None, lge)
    for key in ("logits_anatomy2", "logits_fused2"):
        assert torch.allclose(torch.softmax(joined[key], dim=1), (torch.softmax(own[key], dim=1) + from_unet) / 2, atol=1e-6), key
    assert torch.allclose(lge_only["logits_anatomy2"], joined["logits_anatomy2"], atol=1e-6)
    for key in ("logits_anatomy1", "logits_warped1", "logits_fused1", "logits_warped2", "offsets12", "anatomy2"):
        assert torch.equal(joined[key], own[key]), key
    result = segment_cardiac(network, loaded_card, lge=pair.lge, cine=pair.cine)
    assert set(result.masks) == set(OUTPUTS) and Grid.of(result.masks["fused LGE"]) == Grid.of(pair.lge)


def test_pair_inference_returns_every_output_on_its_own_modality_grid(pair):
    torch.manual_seed(0)
    result = segment_cardiac(MMSDNet(CONFIG), card(), lge=pair.lge, cine=pair.cine)
    assert set(result.masks) == set(OUTPUTS)
    for name, (_, modality) in OUTPUTS.items():
        reference = pair.lge if modality == "LGE" else pair.cine
        assert Grid.of(result.masks[name]) == Grid.of(reference), name
        assert set(np.unique(sitk.GetArrayFromImage(result.masks[name]))) <= {0, 200, 500}
    assert Grid.of(result.anatomy["cine"]) == Grid.of(pair.cine)
    assert result.control_points.shape == (len(result.stack.slices), 25, 2, 3)


def test_an_untrained_alignment_is_the_identity_up_to_the_cine_slice_offset(pair):
    """Zero TPS offsets: each LGE point shows the cine point straight through-plane, on the cine's nearest slice."""
    result = segment_cardiac(MMSDNet(CONFIG), card(), lge=pair.lge, cine=pair.cine, prealign_mm=None)
    field = sitk.GetArrayFromImage(result.displacement)  # (slices, rows, cols, 3)
    normal = Grid.of(pair.lge).normal
    for i, sample in enumerate(result.stack.slices):
        if sample.paired:
            expected = normal * sample.through_plane_mm
            assert np.allclose(field[i], expected, atol=1e-3), i
    assert Grid.of(result.displacement) == result.stack.common_grid
    shifts = result.control_points[:, :, 1] - result.control_points[:, :, 0]
    assert all(np.allclose(shifts[i], normal * s.through_plane_mm, atol=1e-3) for i, s in enumerate(result.stack.slices) if s.paired)
    transform = displacement_transform(result)
    point = result.stack.common_grid.index_to_point([10, 20, 3])
    assert np.allclose(transform.TransformPoint(point), point + field[3, 20, 10], atol=1e-3)


def test_single_modality_inference_gives_only_that_modality(pair):
    result = segment_cardiac(MMSDNet(CONFIG), card(), lge=pair.lge)
    assert set(result.masks) == {"LGE"} and result.displacement is None
    assert Grid.of(result.masks["LGE"]) == Grid.of(pair.lge)
    with pytest.raises(ValueError, match="single modality"):
        displacement_transform(result)
    only_cine = segment_cardiac(MMSDNet(CONFIG), card(), cine=pair.cine)
    assert set(only_cine.masks) == {"cine"} and Grid.of(only_cine.masks["cine"]) == Grid.of(pair.cine)
    with pytest.raises(ValueError, match="needs an LGE image, a cine image or both"):
        segment_cardiac(MMSDNet(CONFIG), card())


def test_a_pair_that_does_not_overlap_is_refused(pair):
    far = sitk.Image(pair.cine)
    far.SetOrigin(tuple(np.array(pair.cine.GetOrigin()) + 500 * Grid.of(pair.cine).normal))
    with pytest.raises(InputError, match="do not overlap"):
        segment_cardiac(MMSDNet(CONFIG), card(), lge=pair.lge, cine=far)


def logits_of(stack_mask: np.ndarray) -> torch.Tensor:
    """A common-grid mask (file values) as the logits of a network that predicts it exactly."""
    classes = torch.from_numpy(CARDIAC_MYO_LV.to_classes(stack_mask, ignore=(600,)).astype(np.int64))
    return torch.nn.functional.one_hot(classes, 3).permute(0, 3, 1, 2).float()


def test_the_cine_left_ventricle_offset_is_measured_in_the_lge_plane_and_undone_by_sampling_the_cine_there():
    from crossmodal.cardiac_inference import lv_offset_mm
    from crossmodal.pairing import PairingConfig, heart_centre, pair_volumes

    pair = cardiac_pair(seed=3, misalignment_mm=0, rotation_degrees=0, deformation_mm=0)
    direction = np.asarray(pair.cine.GetDirection()).reshape(3, 3)
    shift = direction[:, :2] @ np.array([14.0, -9.0])
    image, mask = (sitk.Image(x) for x in (pair.cine, pair.cine_mask))
    for x in (image, mask):
        x.SetOrigin(tuple(np.asarray(x.GetOrigin()) + shift))
    config, centre = PairingConfig(spacing_mm=1.5, size=128), heart_centre(pair.lge, image)

    def offset(**pre):
        stack = pair_volumes(pair.lge, image, config, reference_mask=pair.lge_mask, other_mask=mask, centre=centre, **pre)
        return lv_offset_mm(stack, logits_of(stack.masks["LGE"]), logits_of(stack.masks["cine"]))

    measured = offset()
    np.testing.assert_allclose(measured, shift, atol=1.5)
    np.testing.assert_allclose(offset(other_shift_mm=measured), 0, atol=1.5)
