"""Element-wise losses against hand-computed values, and the reduction helper."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.losses import binary_cross_entropy_with_logits, cross_entropy, l1, reduce_loss, smooth_l1


def test_smooth_l1_hand_values():
    pred = torch.tensor([0.0, 0.05, -0.1, 0.5, 2.0])
    target = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.5])
    beta = 1.0 / 9.0
    # |d| < beta: 0.5 d^2 / beta; else |d| - beta / 2
    expected = torch.tensor(
        [0.0, 0.5 * 0.05**2 * 9.0, 0.5 * 0.1**2 * 9.0, 0.5 - 1.0 / 18.0, 1.5 - 1.0 / 18.0]
    )
    torch.testing.assert_close(smooth_l1(pred, target, beta), expected)
    # beta = 1: the quadratic part reaches 0.5 at |d| = 1 and joins the linear part there
    torch.testing.assert_close(
        smooth_l1(torch.tensor([0.5, 1.0, 3.0]), torch.zeros(3), 1.0), torch.tensor([0.125, 0.5, 2.5])
    )


def test_smooth_l1_beta_zero_is_l1_and_matches_torch():
    pred = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    target = torch.zeros(6, 4)
    torch.testing.assert_close(smooth_l1(pred, target, 0.0), pred.abs())
    torch.testing.assert_close(l1(pred, target), pred.abs())
    torch.testing.assert_close(
        smooth_l1(pred, target, 0.3), torch.nn.functional.smooth_l1_loss(pred, target, beta=0.3, reduction="none")
    )
    with pytest.raises(ValueError):
        smooth_l1(pred, target, -1.0)


def test_cross_entropies_hand_values():
    logits = torch.tensor([0.0, 2.0, -1.0])
    target = torch.tensor([1.0, 1.0, 0.0])
    expected = torch.tensor([math.log(2.0), math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(-1.0))])
    torch.testing.assert_close(binary_cross_entropy_with_logits(logits, target), expected)
    rows = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    torch.testing.assert_close(cross_entropy(rows, torch.tensor([0, 1])), torch.tensor([math.log(2.0), math.log(4.0)]))


def test_reduce_loss():
    loss = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert float(reduce_loss(loss)) == 3.0
    assert float(reduce_loss(loss, reduction="sum")) == 12.0
    assert float(reduce_loss(loss, avg_factor=6)) == 2.0
    weight = torch.tensor([1.0, 0.0, 1.0, 0.5])
    assert float(reduce_loss(loss, weight, reduction="sum")) == 7.0
    torch.testing.assert_close(reduce_loss(loss, weight, reduction="none"), torch.tensor([1.0, 0.0, 3.0, 3.0]))
    empty = torch.zeros(0, requires_grad=True)
    reduced = reduce_loss(empty)
    assert float(reduced.detach()) == 0.0
    reduced.backward()
    with pytest.raises(ValueError):
        reduce_loss(loss, reduction="sum", avg_factor=2)
    with pytest.raises(ValueError):
        reduce_loss(loss, reduction="median")  # type: ignore[arg-type]
