"""MMSDNet: factor shapes and one-hotness, identity alignment at start, shared reconstruction, inference modes, bad input."""

import pytest
import torch

from crossmodal.nets.mmsdnet import ANATOMY_KEYS, MaskDiscriminator, MMSDNet, MMSDNetConfig, one_hot_straight_through

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
    rebuilt = net.reconstruct(out["warped1"], lge)  # a cross-reconstruction: the cine's anatomy, the LGE's modality
    assert rebuilt["mean"].shape == rebuilt["log_variance"].shape == (2, SMALL.z_dim)
    assert rebuilt["reconstruction"].shape == lge.shape
    assert 0 <= rebuilt["reconstruction"].min().item() and rebuilt["reconstruction"].max().item() <= 1


def test_anatomy_factors_are_one_hot_from_the_start(net):
    """Every pixel has exactly one channel on, even untrained (rounding ~1/8 per channel gave an empty anatomy)."""
    anatomy = net(None, torch.rand(1, 1, 32, 32))["anatomy2"]
    assert set(anatomy.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(anatomy.sum(dim=1) == 1)


def test_the_arg_max_passes_gradients_straight_through():
    p = torch.tensor([[0.3, 0.45, 0.25]], requires_grad=True)[:, :, None, None]
    p.retain_grad()
    hard = one_hot_straight_through(p)
    hard.mul(torch.tensor([2.0, 3.0, 4.0])[None, :, None, None]).sum().backward()
    assert hard.flatten().tolist() == [0.0, 1.0, 0.0]
    assert p.grad.flatten().tolist() == [2.0, 3.0, 4.0]


def test_one_modality_encoder_and_one_decoder_serve_both_modalities(net):
    assert not hasattr(net.modality, "__getitem__") and not hasattr(net.decoder, "__getitem__")
    with pytest.raises(ValueError, match="design 1 is not this version's"):
        MMSDNetConfig(design=1)


def test_the_critic_sees_foreground_channels_and_is_spectrally_normalised():
    torch.manual_seed(0)
    critic = MaskDiscriminator(channels=2)
    assert critic(torch.rand(3, 2, 64, 64)).shape == (3,) and critic(torch.rand(1, 2, 96, 96)).shape == (1,)
    with pytest.raises(RuntimeError):
        critic(torch.rand(1, 3, 64, 64))  # the background channel is not for it
    for conv in (m for m in critic.modules() if isinstance(m, torch.nn.Conv2d)):
        assert torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2) < 1.05
    assert sum(p.numel() for p in critic.parameters()) < 30_000


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
    rebuilt = net.reconstruct(out["fused1"], torch.rand(2, 1, 32, 32))
    loss = out["logits_fused2"].square().mean() + rebuilt["reconstruction"].mean() + rebuilt["mean"].sum()
    loss.backward()
    for name in ("anatomy.0", "anatomy.1", "modality", "decoder", "segmentor", "localisation"):
        assert has_gradient(net, name), name


def test_the_spatial_transformer_learns_without_masks_from_a_cross_reconstruction():
    """Rebuilding the LGE from the cine's warped anatomy is label-free and reaches the alignment."""
    torch.manual_seed(0)
    net = MMSDNet(SMALL).train()
    cine, lge = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    out = net(cine, lge)
    (net.reconstruct(out["warped1"], lge)["reconstruction"] - lge).abs().mean().backward()
    assert has_gradient(net, "localisation.offsets") and has_gradient(net, "anatomy.0")


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


def test_an_unknown_segmentor_is_refused_by_name():
    with pytest.raises(ValueError, match="segmentor 'unet' is not one of anatomy, soft-anatomy, anatomy\\+image, features"):
        MMSDNetConfig(segmentor="unet")


def test_a_soft_anatomy_reaches_the_segmentor_and_its_one_hot_the_decoder():
    torch.manual_seed(0)
    net = MMSDNet(MMSDNetConfig(filters=4, segmentor="soft-anatomy")).eval()
    cine, lge = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    out = net(cine, lge)
    anatomy = out["anatomy2"]
    assert torch.allclose(anatomy.sum(dim=1), torch.ones(2, 32, 32)) and not set(anatomy.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(out["logits_anatomy2"], net.segmentor(anatomy))
    hard = one_hot_straight_through(anatomy)
    assert torch.equal(net.reconstruct(anatomy, lge)["reconstruction"], net.reconstruct(hard, lge)["reconstruction"])


def moving_alignment(segmentor: str) -> tuple[MMSDNet, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """A small MMSDNet with this segmentor whose alignment moves things, a random pair and its outputs."""
    torch.manual_seed(0)
    net = MMSDNet(MMSDNetConfig(filters=4, segmentor=segmentor)).eval()
    torch.nn.init.normal_(net.localisation.offsets.bias, std=0.1)
    cine, lge = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    return net, cine, lge, net(cine, lge)


def test_the_feature_segmentor_reads_each_encoders_maps_warped_and_fused_as_its_anatomy():
    net, cine, lge, out = moving_alignment("features")
    maps = {"anatomy1": net.anatomy[0].unet.features(cine), "anatomy2": net.anatomy[1].unet.features(lge)}
    maps["warped1"], maps["warped2"] = net.tps(maps["anatomy1"], out["offsets12"]), net.tps(maps["anatomy2"], out["offsets21"])
    maps["fused2"], maps["fused1"] = torch.maximum(maps["warped1"], maps["anatomy2"]), torch.maximum(maps["warped2"], maps["anatomy1"])
    assert not torch.allclose(maps["fused2"], maps["anatomy2"])
    for key in ANATOMY_KEYS:
        assert torch.allclose(out[f"logits_{key}"], net.segmentor(maps[key]), atol=1e-5), key
    assert torch.equal(out["anatomy2"], one_hot_straight_through(torch.softmax(net.anatomy[1].unet(lge), dim=1)))  # the anatomy is still read from them
    assert torch.allclose(net(None, lge)["logits_anatomy2"], out["logits_anatomy2"], atol=1e-5)
    net.train()
    out = net(cine, lge, reconstructions=True)
    (out["logits_fused2"].square().mean() + out["rebuilt"].mean()).backward()
    for name in ("anatomy.0", "anatomy.1", "segmentor", "localisation"):
        assert has_gradient(net, name), name


def test_the_image_segmentor_reads_each_anatomy_beside_the_image_it_came_from():
    net, cine, lge, out = moving_alignment("anatomy+image")
    warped_cine = net.tps(cine, out["offsets12"])
    assert not torch.allclose(warped_cine, cine)
    for key, image in (("anatomy1", cine), ("anatomy2", lge), ("warped1", warped_cine), ("fused2", lge), ("fused1", cine)):
        assert torch.allclose(out[f"logits_{key}"], net.segmentor(out[key], image), atol=1e-5), key
    assert torch.allclose(net(None, lge)["logits_anatomy2"], out["logits_anatomy2"], atol=1e-5)  # LGE alone: the same masks
    net.train()  # training normalises every anatomy's input in one batch, as inference's running statistics do
    out = net(cine, lge, reconstructions=True)
    stacked = torch.cat([out[k] for k in ANATOMY_KEYS]), torch.cat([cine, lge, net.tps(cine, out["offsets12"]), net.tps(lge, out["offsets21"]), cine, lge])
    assert torch.allclose(torch.cat([out[f"logits_{k}"] for k in ANATOMY_KEYS]), net.segmentor(*stacked), atol=1e-5)
    (out["logits_fused2"].square().mean() + out["rebuilt"].mean()).backward()
    for name in ("anatomy.0", "anatomy.1", "segmentor", "localisation"):
        assert has_gradient(net, name), name
