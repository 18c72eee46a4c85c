"""The convBayes layer: its moments against the slide's formulas evaluated by hand, eq. (1) in
training (recomputed from the same seeded draws), the mean in evaluation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from workbench.modeling.conv_bayes import ConvBayes


def _layer(**kwargs) -> ConvBayes:
    torch.manual_seed(0)
    args = dict(lam=0.5, num_samples=4)
    args.update(kwargs)
    return ConvBayes(3, 2, 3, padding=1, **args)


def test_moments_of_a_1x1_layer_by_hand():
    layer = ConvBayes(2, 1, 1, lam=0.25, num_samples=1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([2.0, -3.0]).view(1, 2, 1, 1))
        layer.bias.fill_(0.5)
    x = torch.tensor([1.0, 4.0]).view(1, 2, 1, 1)
    with torch.no_grad():
        mu, sigma = layer.moments(x)
    # mu = 1 * 2 + 4 * (-3) + 0.5; sigma^2 = 0.25 * (1 * 4 + 16 * 9)
    assert float(mu) == pytest.approx(2.0 - 12.0 + 0.5)
    assert float(sigma) == pytest.approx(math.sqrt(0.25 * (4.0 + 144.0)))


def test_moments_equal_the_slide_formulas():
    layer = _layer(stride=2)
    x = torch.randn(2, 3, 9, 8)
    mu, sigma = layer.moments(x)
    k = layer.weight
    torch.testing.assert_close(mu, F.conv2d(x, k, layer.bias, stride=2, padding=1))
    torch.testing.assert_close(sigma, torch.sqrt(F.conv2d(x**2, 0.5 * k**2, stride=2, padding=1)))
    assert mu.shape == sigma.shape == F.conv2d(x, k, stride=2, padding=1).shape
    assert (sigma >= 0).all()


def test_training_forward_is_the_mean_of_num_samples_draws():
    layer = _layer(num_samples=5).train()
    x = torch.randn(2, 3, 6, 7)
    torch.manual_seed(123)
    y = layer(x)
    mu, sigma = layer.moments(x)
    torch.manual_seed(123)
    eps = torch.randn((5, *mu.shape))
    torch.testing.assert_close(y, (mu + eps * sigma).mean(dim=0))


def test_evaluation_forward_is_mu():
    layer = _layer().eval()
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(layer(x), layer.moments(x)[0])


def test_the_training_output_is_distributed_as_eq_1():
    """Over many calls the output at one element has mean mu and std sigma / sqrt(K)."""
    layer = _layer(num_samples=4).train()
    x = torch.randn(1, 3, 4, 4)
    torch.manual_seed(1)
    draws = torch.stack([layer(x) for _ in range(4000)])
    mu, sigma = layer.moments(x)
    torch.testing.assert_close(draws.mean(0), mu, atol=4 * float(sigma.max()) / math.sqrt(4 * 4000), rtol=0)
    torch.testing.assert_close(draws.std(0), sigma / 2, rtol=0.08, atol=1e-4)


def test_gradients_are_finite_where_the_receptive_field_is_zero():
    layer = _layer().train()
    x = torch.zeros(1, 3, 6, 6)
    x[:, :, :2, :2] = 1.0  # most outputs see only zeros: sigma = 0 there
    y = layer(x)
    assert (layer.moments(x)[1] == 0).any()
    y.sum().backward()
    assert torch.isfinite(layer.weight.grad).all() and torch.isfinite(layer.bias.grad).all()


def test_lam_is_a_fixed_buffer_or_a_learned_parameter():
    fixed = _layer(lam=0.3)
    assert "log_lam" in dict(fixed.named_buffers()) and "log_lam" not in dict(fixed.named_parameters())
    torch.testing.assert_close(fixed.lam, torch.tensor([0.3]))
    learned = _layer(lam=0.3, learn_lam=True)
    assert dict(learned.named_parameters())["log_lam"].shape == (2,)
    torch.testing.assert_close(learned.lam, torch.full((2,), 0.3))
    x = torch.randn(1, 3, 5, 5)
    learned.train()(x).pow(2).sum().backward()
    assert learned.log_lam.grad is not None and torch.isfinite(learned.log_lam.grad).all()


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="lam"):
        ConvBayes(3, 2, 1, lam=0.0, num_samples=1)
    with pytest.raises(ValueError, match="num_samples"):
        ConvBayes(3, 2, 1, lam=1.0, num_samples=0)


def test_public_name():
    from workbench.modeling import ConvBayes as public

    assert public is ConvBayes
    layer = public(4, 2, 3, stride=2, padding=1, lam=1.0, num_samples=3)
    assert layer.stride == (2, 2) and layer.padding == (1, 1) and layer.num_samples == 3
