"""Balanced L1 loss against the paper's equations (Pang et al., CVPR 2019, eqs. 7-9)."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.losses import balanced_l1, smooth_l1
from workbench.losses.balanced_l1 import balanced_l1_b

B = math.exp(3.0) - 1.0  # alpha 0.5, gamma 1.5


def paper_eq8(x: float, alpha: float = 0.5, gamma: float = 1.5) -> float:
    b = math.exp(gamma / alpha) - 1
    x = abs(x)
    if x < 1:
        return alpha / b * (b * x + 1) * math.log(b * x + 1) - alpha * x
    return gamma * x + gamma / b - alpha


def test_b_solves_eq9():
    assert balanced_l1_b(0.5, 1.5) == pytest.approx(19.085536923187668)
    for alpha, gamma in [(0.2, 1.0), (0.3, 1.0), (0.5, 1.0), (0.5, 2.0)]:
        assert alpha * math.log(balanced_l1_b(alpha, gamma) + 1) == pytest.approx(gamma)


def test_values_by_hand_at_the_default_setting():
    pred = torch.tensor([0.0, 0.5, -0.5, 0.1, 1.0, 2.0, -3.0], dtype=torch.float64)
    loss = balanced_l1(pred, torch.zeros_like(pred))
    # 0.5: 0.5/B * (B/2 + 1) * ln(B/2 + 1) - 0.25 = 0.276198 * 2.355440 - 0.25
    assert loss[1].item() == pytest.approx(0.400568, abs=1e-6)
    assert loss[2].item() == loss[1].item()  # symmetric
    # 2.0: 1.5 * 2 + 1.5 / B - 0.5 = 2.5 + 0.078594
    assert loss[5].item() == pytest.approx(2.578594, abs=1e-6)
    expected = [paper_eq8(x) for x in pred.tolist()]
    assert loss.tolist() == pytest.approx(expected, abs=1e-12)
    assert loss[0].item() == 0.0


@pytest.mark.parametrize("alpha,gamma", [(0.2, 1.0), (0.3, 1.0), (0.5, 1.0), (0.5, 1.5), (0.5, 2.0)])
def test_the_papers_grid_follows_eq8(alpha, gamma):
    x = torch.linspace(-2.5, 2.5, 41, dtype=torch.float64)
    loss = balanced_l1(x, torch.zeros_like(x), alpha=alpha, gamma=gamma)
    assert loss.tolist() == pytest.approx([paper_eq8(v, alpha, gamma) for v in x.tolist()], abs=1e-12)


def test_target_is_subtracted_and_shapes_broadcast():
    pred = torch.tensor([[1.2, 0.3], [0.0, -0.4]])
    target = torch.tensor([0.2, 0.1])
    loss = balanced_l1(pred, target)
    assert loss.shape == (2, 2)
    assert torch.allclose(loss, balanced_l1(pred - target, torch.zeros(())))


@pytest.mark.parametrize("beta", [1.0, 0.11, 2.0])
def test_continuous_with_matching_gradient_at_the_knee(beta):
    alpha, gamma = 0.5, 1.5
    eps = 1e-7
    below = torch.tensor([beta - eps], dtype=torch.float64, requires_grad=True)
    above = torch.tensor([beta + eps], dtype=torch.float64, requires_grad=True)
    lb = balanced_l1(below, torch.zeros(1, dtype=torch.float64), alpha=alpha, gamma=gamma, beta=beta)
    la = balanced_l1(above, torch.zeros(1, dtype=torch.float64), alpha=alpha, gamma=gamma, beta=beta)
    assert lb.item() == pytest.approx(la.item(), abs=1e-6)
    (gb,) = torch.autograd.grad(lb.sum(), below)
    (ga,) = torch.autograd.grad(la.sum(), above)
    assert gb.item() == pytest.approx(gamma, abs=1e-5) and ga.item() == pytest.approx(gamma, abs=1e-12)


@pytest.mark.parametrize("beta", [1.0, 0.11])
def test_gradient_is_eq7(beta):
    alpha, gamma = 0.5, 1.5
    b = balanced_l1_b(alpha, gamma)
    x = torch.tensor([-0.9, -0.3, 0.02, 0.05, 0.3, 0.9, 1.5, 4.0], dtype=torch.float64) * beta
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(balanced_l1(x, torch.zeros_like(x), beta=beta).sum(), x)
    for value, g in zip(x.tolist(), grad.tolist()):
        magnitude = alpha * math.log(b * abs(value) / beta + 1) if abs(value) < beta else gamma
        assert g == pytest.approx(math.copysign(magnitude, value), abs=1e-10)


def test_inliers_get_more_gradient_than_under_smooth_l1_and_outliers_are_clipped():
    # Paper Fig. 5: balanced L1 promotes the gradient of inliers (|x| < 1) over smooth L1
    # (beta 1) and bounds the outliers' gradient by gamma.
    x = torch.tensor([0.05, 0.2, 0.5, 5.0], dtype=torch.float64, requires_grad=True)
    (gb,) = torch.autograd.grad(balanced_l1(x, torch.zeros_like(x)).sum(), x)
    (gs,) = torch.autograd.grad(smooth_l1(x, torch.zeros_like(x), beta=1.0).sum(), x)
    assert bool((gb[:3] > gs[:3]).all())
    assert gb[3].item() == 1.5 and gs[3].item() == 1.0


def test_gradcheck_in_float64():
    torch.manual_seed(0)
    pred = (torch.rand(30, dtype=torch.float64) * 6 - 3).requires_grad_(True)
    target = (torch.rand(30, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    # keep away from the knee and from 0, where finite differences straddle a piece boundary
    diff = (pred - target).abs()
    ok = ((diff - 0.11).abs() > 1e-2) & ((diff - 1.0).abs() > 1e-2) & (diff > 1e-2)
    pred = pred.detach()[ok].requires_grad_(True)
    target = target.detach()[ok].requires_grad_(True)
    for beta in (1.0, 0.11):
        assert torch.autograd.gradcheck(lambda p, t: balanced_l1(p, t, beta=beta), (pred, target))


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        balanced_l1(torch.zeros(1), torch.zeros(1), beta=0.0)
