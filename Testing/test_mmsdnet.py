"""MMSDNet: factor shapes and binarity, identity alignment at start, inference modes, bad input."""

import pytest
import torch

from crossmodal.nets.mmsdnet import ANATOMY_KEYS, MMSDNet, MMSDNetConfig, binarise

SMALL = MMSDNetConfig(filters=4)


@pytest.fixture(scope="module")
def net() -> MMSDNet:
    torch.manual_seed(0)
    return MMSDNet(SMALL).eval()


def test_outputs_of_a_pair(net):
    cine, lge = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    out = net(cine, lge)
    for key in ANATOMY_KEYS:
        assert out[key].shape == (2, SMALL.anatomy_channels, 32, 32)
        assert out[f"logits_{key}"].shape == (2, SMALL.classes, 32, 32)
    assert out["offsets12"].shape == out["offsets21"].shape == (2, 25, 2)
    assert out["z2"].shape == (2, SMALL.z_dim)
    assert out["reconstruction2"].shape == lge.shape
    assert 0 <= out["reconstruction2"].min().item() and out["reconstruction2"].max().item() <= 1


def test_anatomy_factors_are_binary_one_hot(net):
    anatomy = net(None, torch.rand(1, 1, 32, 32))["anatomy2"]
    assert set(anatomy.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(anatomy.sum(dim=1) <= 1)


def test_rounding_passes_gradients_straight_through():
    p = torch.tensor([0.3, 0.7], requires_grad=True)
    binarise(p).mul(torch.tensor([2.0, 3.0])).sum().backward()
    assert binarise(p).tolist() == [0.0, 1.0]
    assert p.grad.tolist() == [2.0, 3.0]


def test_alignment_starts_as_the_identity_and_fusion_is_the_maximum(net):
    out = net(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))
    assert torch.equal(out["offsets12"], torch.zeros_like(out["offsets12"]))
    assert torch.allclose(out["warped1"], out["anatomy1"], atol=1e-5)
    assert torch.equal(out["fused2"], torch.maximum(out["warped1"], out["anatomy2"]))


def test_single_modality_inference_has_no_alignment(net):
    out = net(torch.rand(1, 1, 32, 32), None)
    assert "anatomy1" in out and "logits_anatomy1" in out
    assert not {"anatomy2", "warped1", "fused2", "offsets12"} & out.keys()


def test_every_part_learns_from_the_losses():
    net = MMSDNet(SMALL).train()
    out = net(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))
    loss = out["logits_fused2"].square().mean() + out["reconstruction1"].mean() + out["mean2"].sum()
    loss.backward()
    for name in ("anatomy.0", "anatomy.1", "modality.1", "decoder.0", "segmentor"):
        assert has_gradient(net, name), name


def test_the_spatial_transformer_learns_from_warped_anatomies():
    """At the start the rounded anatomies are all zero (softmax ~1/8 per channel), so this uses one-hot ones."""
    net = MMSDNet(SMALL).train()
    channels = torch.randint(0, SMALL.anatomy_channels, (2, 2, 32, 32))
    moving, fixed = (torch.nn.functional.one_hot(c, SMALL.anatomy_channels).permute(0, 3, 1, 2).float() for c in channels)
    warped, _ = net.align(moving, fixed)
    (warped - fixed).abs().mean().backward()
    assert has_gradient(net, "localisation.offsets")


def has_gradient(net, prefix):
    grads = [p.grad for n, p in net.named_parameters() if n.startswith(prefix) and p.grad is not None]
    return bool(grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(
    "cine, lge, message",
    [
        (None, None, "needs a cine image, an LGE image or both"),
        (None, torch.rand(1, 2, 32, 32), r"LGE: expected a \(batch, 1, height, width\) tensor"),
        (torch.rand(1, 32, 32), None, r"cine: expected a \(batch, 1, height, width\) tensor"),
        (None, torch.rand(1, 1, 40, 40), "multiples of 16"),
        (None, torch.full((1, 1, 32, 32), float("nan")), "LGE: contains NaN"),
        (torch.rand(1, 1, 32, 32), torch.rand(1, 1, 48, 48), "one shape"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(net, cine, lge, message):
    with pytest.raises(ValueError, match=message):
        net(cine, lge)


def test_bounded_control_point_offsets_stay_within_the_bound_and_are_the_identity_near_zero():
    from crossmodal.nets.mmsdnet import LocalisationNet

    torch.manual_seed(0)
    net = LocalisationNet(anatomy_channels=8, control_points=5, max_offset=0.3).eval()
    torch.nn.init.normal_(net.offsets.weight, std=10.0)  # a localisation net gone wild
    anatomy = torch.rand(2, 8, 32, 32)
    assert net(anatomy, anatomy).abs().max() <= 0.3
    torch.nn.init.normal_(net.offsets.weight, std=1e-4)
    free = LocalisationNet(anatomy_channels=8, control_points=5).eval()
    free.load_state_dict(net.state_dict())
    assert torch.allclose(net(anatomy, anatomy), free(anatomy, anatomy), atol=1e-5)  # small offsets pass unchanged
