"""The balanced feature pyramid and its non-local block, against hand computations."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from workbench.modeling.balanced_pyramid import BalancedFeaturePyramid, NonLocalBlock, drop_subnormal


def pyramid(channels=3, sizes=((12, 10), (6, 5), (3, 3), (2, 2)), batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return OrderedDict((str(i), torch.randn(batch, channels, h, w, generator=g)) for i, (h, w) in enumerate(sizes))


@pytest.mark.parametrize("refine_type", ["non_local", "conv", "none"])
@pytest.mark.parametrize("refine_level", [0, 1, 3])
def test_names_order_and_shapes_are_kept(refine_type, refine_level):
    features = pyramid()
    features["pool"] = features.pop("3")
    out = BalancedFeaturePyramid(3, 4, refine_level, refine_type)(features)
    assert list(out) == ["0", "1", "2", "pool"]
    for name in out:
        assert out[name].shape == features[name].shape


def test_zero_refine_adds_the_integrated_average_resized_back_by_hand():
    # one channel, levels 4x4, 2x2, 1x1; refine level 1 (2x2)
    p0 = torch.arange(16.0).view(1, 1, 4, 4)
    p1 = torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]]])
    p2 = torch.tensor([[[[3.0]]]])
    bfp = BalancedFeaturePyramid(1, 3, refine_level=1, refine_type="non_local")
    nn.init.zeros_(bfp.refine.out.weight)  # the block becomes the identity
    nn.init.zeros_(bfp.refine.out.bias)
    out = bfp(OrderedDict([("a", p0), ("b", p1), ("c", p2)]))
    # p0 max-pooled 2x2 -> [[5, 7], [13, 15]]; p2 nearest -> all 3
    avg = (torch.tensor([[5.0, 7.0], [13.0, 15.0]]) + p1[0, 0] + 3.0) / 3
    assert torch.allclose(bfp.integrate([p0, p1, p2])[0, 0], avg)
    expected_a = p0[0, 0] + avg.repeat_interleave(2, 0).repeat_interleave(2, 1)  # nearest up
    assert torch.allclose(out["a"][0, 0], expected_a)
    assert torch.allclose(out["b"][0, 0], p1[0, 0] + avg)
    assert torch.allclose(out["c"][0, 0], p2[0, 0] + avg.max())  # max-pooled down to 1x1


def test_zero_conv_refine_leaves_the_levels_unchanged():
    bfp = BalancedFeaturePyramid(3, 4, refine_level=2, refine_type="conv")
    nn.init.zeros_(bfp.refine.conv.weight)
    features = pyramid()
    out = bfp(features)
    for name in features:
        assert torch.equal(out[name], features[name])


def test_non_local_block_matches_the_definition():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    block = NonLocalBlock(3, reduction=1, use_scale=False).double()
    for conv in (block.theta, block.phi, block.g, block.out):
        with torch.no_grad():
            conv.weight.copy_(torch.eye(3, dtype=torch.float64).view(3, 3, 1, 1))
            conv.bias.zero_()
    out = block(x)
    for n in range(2):
        flat = x[n].reshape(3, -1).T  # (HW, C)
        for i in range(flat.shape[0]):
            weights = torch.softmax(flat @ flat[i], dim=0)
            y = (weights[:, None] * flat).sum(0)
            assert torch.allclose(out[n].reshape(3, -1).T[i], flat[i] + y)
    scaled = NonLocalBlock(4, reduction=2, use_scale=True)
    assert scaled.inner_channels == 2 and scaled(torch.randn(1, 4, 3, 3)).shape == (1, 4, 3, 3)


def test_subnormal_values_are_dropped_from_the_weights_and_the_affinities_gradient(monkeypatch):
    import workbench.modeling.balanced_pyramid as bfp

    seen = []
    monkeypatch.setattr(bfp, "drop_subnormal", lambda values: seen.append(tuple(values.shape)) or values)
    block = NonLocalBlock(4)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = block(x)
    assert seen == [(2, 9, 9)]  # the softmax weights
    out.sum().backward()
    assert seen == [(2, 9, 9), (2, 9, 9)]  # and the affinities' gradient
    with torch.no_grad():
        block(x)
    assert len(seen) == 3  # no gradient, no hook


def test_subnormal_attention_weights_are_dropped_without_changing_the_block():
    """A peaked softmax (large affinities, as a trained block's) has weights below float32's
    smallest normal number; they become 0, every other weight is kept, and the block's output and
    gradients equal those of the plain computation (in float64, where nothing is subnormal)."""
    tiny = torch.finfo(torch.float32).tiny
    w = torch.tensor([0.5, tiny, tiny / 4, 0.0, 1e-30, -tiny / 4, -0.5])
    assert torch.equal(drop_subnormal(w), torch.tensor([0.5, tiny, 0.0, 0.0, 1e-30, 0.0, -0.5]))

    torch.manual_seed(0)
    block = NonLocalBlock(16)
    with torch.no_grad():
        block.theta.weight.mul_(12.0)  # affinities in the hundreds: a peaked softmax
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    theta = block.theta(x).flatten(2).transpose(1, 2)
    softmax = torch.bmm(theta, block.phi(x).flatten(2)).softmax(dim=-1)
    assert ((softmax > 0) & (softmax < tiny)).any()  # the case the block guards against

    out = block(x)
    (grad_x,) = torch.autograd.grad(out.square().sum(), x)
    block64 = NonLocalBlock(16).double()
    block64.load_state_dict({k: v.double() for k, v in block.state_dict().items()})
    x64 = x.detach().double().requires_grad_(True)
    out64 = block64(x64)
    (grad64,) = torch.autograd.grad(out64.square().sum(), x64)
    assert torch.allclose(out.double(), out64, rtol=1e-4, atol=1e-4)
    assert torch.allclose(grad_x.double(), grad64, rtol=1e-3, atol=1e-3)


def test_xavier_initialisation():
    bfp = BalancedFeaturePyramid(16, 4, refine_type="non_local")
    w = bfp.refine.theta.weight.detach()
    bound = (6.0 / (16 + 16)) ** 0.5  # xavier uniform, fan_in = fan_out = 16 for a 1x1 conv
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.5 * bound
    assert float(bfp.refine.theta.bias.detach().abs().max()) == 0.0


@pytest.mark.parametrize("refine_type", ["non_local", "conv"])
def test_gradient_flows_to_every_level_and_the_refine_block(refine_type):
    features = OrderedDict((k, v.requires_grad_(True)) for k, v in pyramid().items())
    bfp = BalancedFeaturePyramid(3, 4, refine_level=1, refine_type=refine_type)
    sum(v.square().sum() for v in bfp(features).values()).backward()
    for v in features.values():
        assert v.grad is not None and float(v.grad.abs().sum()) > 0
    for p in bfp.parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="refine_level"):
        BalancedFeaturePyramid(3, 4, refine_level=4)
    with pytest.raises(ValueError, match="refine_type"):
        BalancedFeaturePyramid(3, 4, refine_type="gaussian")
    with pytest.raises(ValueError, match="4 levels"):
        BalancedFeaturePyramid(3, 4)(OrderedDict(list(pyramid().items())[:3]))
