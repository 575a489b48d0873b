"""Dual-stream residual FCN: shapes, what each variant shares, the residual unit and upscore pieces."""

import pytest
import torch

from crossmodal.nets.ensemble import DualStreamEnsemble
from crossmodal.nets.residual_fcn import (
    VARIANTS,
    DualStreamFCN,
    ResidualFCNConfig,
    ResidualUnit,
    Upscore,
    bilinear_kernel,
)

SMALL = {"filters": (2, 4, 4, 8, 8), "units_per_scale": 1}


def parameters(module) -> set[int]:
    return {id(p) for p in module.parameters()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_maps_a_patch_to_class_scores_at_input_resolution(variant):
    net = DualStreamFCN(ResidualFCNConfig(variant=variant, **SMALL)).eval()
    for stream in (0, 1):
        assert net(torch.rand(1, 1, 16, 24, 8), stream).shape == (1, 5, 16, 24, 8)


@pytest.mark.parametrize(
    "variant, separate",
    [
        ("Individual", {"stem", 0, 1, 2, 3, 4, "decoder"}),
        ("Joint", set()),
        ("V1", {"stem", 0, 1, 2, 3, 4}),
        ("V2", {"stem", 0}),
        ("V3", {"decoder"}),
        ("V4", {"stem", 0, 1, 2, 3, "decoder"}),
    ],
)
def test_each_variant_shares_exactly_the_parts_the_paper_says(variant, separate):
    net = DualStreamFCN(ResidualFCNConfig(variant=variant, **SMALL))
    parts = {"stem": net.stem, "decoder": net.decoder, **dict(enumerate(net.scales))}
    assert {name for name, copies in parts.items() if len(copies) == 2} == separate
    assert all(len(copies) == 1 for name, copies in parts.items() if name not in separate)


def test_streams_of_a_shared_part_use_the_same_weights():
    net = DualStreamFCN(ResidualFCNConfig(variant="V4", **SMALL))
    x = torch.rand(1, 1, 16, 16, 16, requires_grad=False)
    net(x, 1).sum().backward()
    assert all(p.grad is None for p in net.stem[0].parameters())  # MR stem untouched by a CT batch
    assert all(p.grad is not None for p in net.scales[4][0].parameters())  # the shared last scale learns from both


@pytest.mark.parametrize("variant", ["Joint", "V4"])
def test_a_shared_part_normalises_each_stream_with_that_streams_statistics(variant):
    """Training batches hold one modality each; inference must use that modality's statistics, not a mix of both."""
    torch.manual_seed(0)
    net = DualStreamFCN(ResidualFCNConfig(variant=variant, **SMALL))
    mr, ct = torch.randn(2, 1, 16, 16, 16), 4 * torch.randn(2, 1, 16, 16, 16) + 3
    with torch.no_grad():
        net.train()
        for _ in range(5):  # alternating batches
            net(mr, 0)
            net(ct, 1)
        ct_before = net.eval()(ct, 1)
        net.train()
        for _ in range(5):
            net(3 * mr - 2, 0)  # more MR, of other statistics
        assert torch.equal(net.eval()(ct, 1), ct_before)  # CT inference untouched by MR batches


def test_a_model_saved_with_one_average_for_both_streams_loads_as_it_ran():
    net = DualStreamFCN(ResidualFCNConfig(variant="V4", **SMALL))
    state = net.state_dict()
    norm = "scales.4.0.0.bn1"
    for key in ("stream_mean", "stream_var"):
        state.pop(f"{norm}.{key}")
    state.update({f"{norm}.running_mean": torch.full((8,), 2.0), f"{norm}.running_var": torch.full((8,), 3.0),
                  f"{norm}.num_batches_tracked": torch.tensor(7)})
    net.load_state_dict(state)
    loaded = net.scales[4][0][0].bn1
    assert torch.equal(loaded.stream_mean, torch.full((2, 8), 2.0)) and torch.equal(loaded.stream_var, torch.full((2, 8), 3.0))


def test_a_residual_unit_strides_with_its_shortcut_and_pads_or_projects_channels():
    grow = ResidualUnit(4, 8, stride=2)
    assert grow(torch.rand(1, 4, 8, 8, 8)).shape == (1, 8, 4, 4, 4) and grow.shrink is None
    assert grow.conv1.kernel_size == (4, 4, 4) and grow.conv1.stride == (2, 2, 2)
    shrink = ResidualUnit(8, 4)
    assert shrink(torch.rand(1, 8, 4, 4, 4)).shape == (1, 4, 4, 4, 4) and shrink.shrink is not None


def test_upscore_upsamples_smoothly_by_fixed_trilinear_weights():
    up = Upscore(3, 2, classes=3, stride=2).eval()
    with torch.no_grad():
        up.project.weight.copy_(torch.eye(3).view(3, 3, 1, 1, 1))
        up.project.bias.zero_()
        for p in up.skip.parameters():
            p.zero_()
    coarse = torch.ones(1, 3, 4, 4, 4)
    out = up(coarse, torch.zeros(1, 2, 8, 8, 8))
    assert out.shape == (1, 3, 8, 8, 8)
    assert torch.allclose(out[..., 1:-1, 1:-1, 1:-1], torch.ones(1, 3, 6, 6, 6))  # a constant stays constant inside
    assert bilinear_kernel(2).sum() == pytest.approx(8.0)  # 2^3: each output gets unit weight
    assert not any(p.requires_grad for n, p in up.named_buffers())


@pytest.mark.parametrize(
    "shape, message",
    [((1, 2, 16, 16, 16), r"MR: expected a \(batch, 1, depth, height, width\)"), ((1, 1, 16, 16), "expected"), ((1, 1, 12, 16, 16), "multiples of 8")],
)
def test_bad_input_is_refused(shape, message):
    with pytest.raises(ValueError, match=message):
        DualStreamFCN(ResidualFCNConfig(**SMALL))(torch.rand(*shape), 0)
    with pytest.raises(ValueError, match="unknown dual-stream variant 'V5'"):
        ResidualFCNConfig(variant="V5")


def test_a_seed_ensemble_returns_logits_of_its_members_mean_probabilities():
    torch.manual_seed(0)
    members = [DualStreamFCN(ResidualFCNConfig(**SMALL)).eval() for _ in range(2)]
    ensemble = DualStreamEnsemble(members).eval()
    image = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        for stream in (0, 1):
            mean = sum(torch.softmax(m(image, stream), dim=1) for m in members) / 2
            torch.testing.assert_close(torch.softmax(ensemble(image, stream), dim=1), mean)
    assert ensemble.config == members[0].config
    with pytest.raises(ValueError, match="two members"):
        DualStreamEnsemble(members[:1])
    with pytest.raises(ValueError, match="one dual-stream configuration"):
        DualStreamEnsemble([members[0], DualStreamFCN(ResidualFCNConfig(variant="V1", **SMALL))])
