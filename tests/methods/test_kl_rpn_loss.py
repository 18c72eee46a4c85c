"""KL-RPN loss: the paper's equations by hand, gradients, ignored anchors, reduction."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.losses import kl_rpn_loss
from workbench.methods.kl_rpn.model import KLRPNLoss


def _pos(mu: float, beta: float, mu_gt: float, gamma: float = 0.5) -> float:
    """Paper equation (7), one coordinate, in plain floats."""
    return math.exp(-beta) * gamma * (mu_gt - mu) ** 2 / 2 + beta / 2


def _neg(mu: float, beta: float, gamma: float = 0.5) -> float:
    """Paper equation (4), one coordinate, in plain floats."""
    return math.exp(-beta) * (gamma * mu**2 + 1 / 3) / 2 + beta / 2


MU = [[0.1, -0.2, 0.3, 0.0], [0.5, 0.25, -0.75, 1.0], [-0.4, 0.2, 0.05, -0.1], [2.0, -3.0, 0.5, 0.7]]
BETA = [[0.0, -1.0, 0.5, 2.0], [-2.0, 0.3, 1.5, -0.5], [1.0, -0.7, 0.0, 0.2], [-3.0, 3.0, 0.1, -0.1]]
GT = [[0.3, -0.1, 0.2, 0.4], [9.0, 9.0, 9.0, 9.0], [0.0, 0.1, -0.2, 0.3], [1.0, 1.0, 1.0, 1.0]]
LABELS = [1, 0, 1, -1]


def test_matches_the_paper_equations_by_hand():
    loss = kl_rpn_loss(torch.tensor(MU), torch.tensor(BETA), torch.tensor(GT), torch.tensor(LABELS))
    expected = []
    for mu, beta, gt, label in zip(MU, BETA, GT, LABELS):
        if label == 1:
            expected.append(sum(_pos(m, b, g) for m, b, g in zip(mu, beta, gt)))
        elif label == 0:
            expected.append(sum(_neg(m, b) for m, b in zip(mu, beta)))
        else:
            expected.append(0.0)
    assert loss.shape == (4,)
    assert loss.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_gamma_and_negative_variance_are_used():
    mu, beta, gt = torch.tensor(MU), torch.tensor(BETA), torch.tensor(GT)
    labels = torch.tensor([1, 0, 0, 1])
    loss = kl_rpn_loss(mu, beta, gt, labels, gamma=0.25, negative_variance=0.5)
    row1 = sum(math.exp(-b) * (0.25 * m**2 + 0.5) / 2 + b / 2 for m, b in zip(MU[1], BETA[1]))
    row3 = sum(_pos(m, b, g, gamma=0.25) for m, b, g in zip(MU[3], BETA[3], GT[3]))
    assert float(loss[1]) == pytest.approx(row1, rel=1e-6)
    assert float(loss[3]) == pytest.approx(row3, rel=1e-6)


def test_with_gamma_one_the_negative_loss_is_the_gaussian_kl_up_to_a_constant():
    """Equation (4) with gamma = 1 is KL(N(0, 1/3) || N(mu, exp(beta))) minus (-log(1/3) / 2 - 1/2)."""
    mu = torch.tensor(MU, dtype=torch.float64)
    beta = torch.tensor(BETA, dtype=torch.float64)
    target = torch.distributions.Normal(torch.zeros_like(mu), torch.full_like(mu, math.sqrt(1 / 3)))
    pred = torch.distributions.Normal(mu, torch.exp(0.5 * beta))
    kl = torch.distributions.kl_divergence(target, pred).sum(dim=1)
    loss = kl_rpn_loss(mu, beta, torch.zeros_like(mu), torch.zeros(4, dtype=torch.int64), gamma=1.0)
    constant = 4 * (-0.5 * math.log(1 / 3) - 0.5)
    assert torch.allclose(kl - loss, torch.full((4,), constant, dtype=torch.float64))


def test_optimum_sigma_of_a_negative_at_zero_offset_is_the_target_variance():
    beta = torch.linspace(-3, 2, 2001, dtype=torch.float64)[:, None].expand(-1, 4)
    mu = torch.zeros_like(beta)
    loss = kl_rpn_loss(mu, beta, mu, torch.zeros(beta.shape[0], dtype=torch.int64))
    best = float(beta[loss.argmin(), 0])
    assert best == pytest.approx(math.log(1 / 3), abs=3e-3)


def test_gradient_matches_finite_differences_in_float64():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    gt = torch.randn(6, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([1, 0, -1, 1, 0, -1])
    assert torch.autograd.gradcheck(lambda m, b: kl_rpn_loss(m, b, gt, labels), (mu, beta))


def test_ignored_anchors_give_zero_and_no_gradient_even_with_extreme_inputs():
    mu = torch.tensor([[0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0]], requires_grad=True)
    beta = torch.tensor([[0.0, 0.0, 0.0, 0.0], [-200.0, 50.0, -1e4, 0.0]], requires_grad=True)
    gt = torch.tensor([[0.0, 0.0, 0.0, 0.0], [float("nan"), float("inf"), 0.0, 0.0]])
    loss = kl_rpn_loss(mu, beta, gt, torch.tensor([0, -1]))
    assert float(loss[1].detach()) == 0.0
    loss.sum().backward()
    assert torch.equal(mu.grad[1], torch.zeros(4)) and torch.equal(beta.grad[1], torch.zeros(4))
    assert bool(torch.isfinite(mu.grad).all()) and float(beta.grad[0].abs().sum()) > 0


def test_the_targets_of_negatives_are_never_read():
    mu, beta = torch.tensor(MU), torch.tensor(BETA)
    labels = torch.tensor([0, 0, 0, 0])
    a = kl_rpn_loss(mu, beta, torch.tensor(GT), labels)
    b = kl_rpn_loss(mu, beta, torch.full((4, 4), float("nan")), labels)
    assert torch.equal(a, b)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        kl_rpn_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        kl_rpn_loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(2))


def test_rpn_loss_object_averages_over_sampled_anchors():
    preds = {"deltas": torch.tensor(MU), "log_var": torch.tensor(BETA)}
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])  # what the RPN passes: sampled anchors, float 1 / 0
    losses = KLRPNLoss()(preds, labels, torch.tensor(GT))
    per_anchor = kl_rpn_loss(torch.tensor(MU), torch.tensor(BETA), torch.tensor(GT), labels.long())
    assert set(losses) == {"loss_rpn_kl"}
    assert float(losses["loss_rpn_kl"]) == pytest.approx(float(per_anchor.sum()) / 4)
    empty = KLRPNLoss()({"deltas": torch.zeros(0, 4), "log_var": torch.zeros(0, 4)}, torch.zeros(0), torch.zeros(0, 4))
    assert float(empty["loss_rpn_kl"]) == 0.0


def test_second_stage_losses_are_weighted_by_lambda():
    from torch import nn

    from workbench.modeling import BoxStage, MatcherSettings, RandomSampler
    from workbench.modeling.box_stages import SampledRoIs
    from workbench.ops import BoxCoder

    class _Fixed:
        def losses(self, outputs, sampled):
            return {"loss_rcnn_cls": torch.tensor(0.5), "loss_rcnn_box": torch.tensor(0.25)}

    stage = BoxStage(
        nn.Identity(), nn.Identity(), nn.Identity(), BoxCoder(), MatcherSettings(0.5, 0.5, False),
        RandomSampler(4, 0.25), _Fixed(), loss_weight=10.0,
    )
    out = stage.losses({}, SampledRoIs([], [], [], []))
    assert {k: float(v) for k, v in out.items()} == {"loss_rcnn_cls": 5.0, "loss_rcnn_box": 2.5}
