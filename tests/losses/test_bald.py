"""BALD (eq. 2) and difficulty (eq. 3) of the uncertainty-rescaling slides, against values
evaluated by hand and a Monte-Carlo estimate of the mutual information they approximate."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.losses.bald import BALD_C, bald, binary_entropy_bits, difficulty


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _h_bits(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def _bald_by_hand(mu: float, sigma: float) -> float:
    c = math.sqrt(math.pi * math.log(2) / 2)
    first = _h_bits(_phi(mu / math.sqrt(sigma**2 + 1)))
    second = c / math.sqrt(sigma**2 + c**2) * math.exp(-(mu**2) / (2 * (sigma**2 + c**2)))
    return first - second


def test_the_constant_and_the_entropy_in_bits():
    assert BALD_C == pytest.approx(math.sqrt(math.pi * math.log(2) / 2))
    assert BALD_C == pytest.approx(1.0434, abs=1e-4)
    h = binary_entropy_bits(torch.tensor([0.0, 0.5, 1.0, 0.25]))
    torch.testing.assert_close(h, torch.tensor([0.0, 1.0, 0.0, _h_bits(0.25)]))


def test_bald_equals_the_formula_evaluated_by_hand():
    cases = [(0.0, 0.0), (0.0, 1.0), (1.5, 0.5), (-2.0, 3.0), (4.0, 0.2), (0.3, 10.0)]
    mu = torch.tensor([m for m, _ in cases], dtype=torch.float64)
    sigma = torch.tensor([s for _, s in cases], dtype=torch.float64)
    expected = torch.tensor([_bald_by_hand(m, s) for m, s in cases], dtype=torch.float64)
    torch.testing.assert_close(bald(mu, sigma), expected)
    # at mu = 0, sigma = 0: h(1/2) = 1 and the second term is C / C = 1
    assert float(bald(torch.tensor(0.0), torch.tensor(0.0))) == pytest.approx(0.0, abs=1e-7)


def test_bald_approximates_the_mutual_information_of_a_gaussian_probit():
    """MI = h(E[Phi(f)]) - E[h(Phi(f))], f ~ N(mu, sigma^2), estimated with 400k draws each."""
    g = torch.Generator().manual_seed(0)
    for mu, sigma in [(0.0, 0.5), (1.0, 1.0), (-2.0, 3.0), (3.0, 2.0), (0.0, 5.0), (0.5, 0.1)]:
        f = mu + sigma * torch.randn(400_000, generator=g, dtype=torch.float64)
        p = torch.special.ndtr(f)
        mutual_information = binary_entropy_bits(p.mean()) - binary_entropy_bits(p).mean()
        got = bald(torch.tensor(mu, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64))
        assert float(got) == pytest.approx(float(mutual_information), abs=3e-3), (mu, sigma)


def test_bald_grows_with_sigma_and_is_symmetric_in_mu():
    sigma = torch.linspace(0.0, 6.0, 25)
    for mu in (0.0, 1.0, 3.0):
        values = bald(torch.full_like(sigma, mu), sigma)
        assert (values[1:] >= values[:-1] - 1e-6).all()
        torch.testing.assert_close(values, bald(torch.full_like(sigma, -mu), sigma))
    assert float(bald(torch.tensor(0.0), torch.tensor(50.0))) < 1.0


def test_bald_is_element_wise_and_broadcasts():
    mu = torch.randn(2, 3, 4, 5)
    sigma = torch.rand(2, 3, 4, 5) * 2
    whole = bald(mu, sigma)
    assert whole.shape == mu.shape
    torch.testing.assert_close(whole[1, 2], bald(mu[1, 2], sigma[1, 2]))
    assert bald(mu, torch.tensor(0.5)).shape == mu.shape


def test_difficulty_follows_eq_3():
    u_bald = torch.tensor([0.0, 0.5, 1.0, 0.0, 0.5, 1.0])
    correct = torch.tensor([True, True, True, False, False, False])
    u = [1 / (1 + math.exp(-v)) for v in u_bald.tolist()]
    expected = [0.5 * u[0], 0.5 * u[1], 0.5 * u[2], 0.5 * (1 - u[3]) + 0.5, 0.5 * (1 - u[4]) + 0.5,
                0.5 * (1 - u[5]) + 0.5]
    torch.testing.assert_close(difficulty(u_bald, correct), torch.tensor(expected))
    d = difficulty(u_bald, correct)
    assert (d[:3] < 0.5).all() and (d[3:] > 0.5).all()  # correct is always easier (assumption 1)
    assert d[0] < d[1] < d[2]  # correct: more uncertain is harder (assumption 2)
    assert d[3] > d[4] > d[5]  # incorrect: less uncertain is harder (assumption 3)


def test_difficulty_carries_no_gradient():
    mu = torch.tensor([0.3, -1.0], requires_grad=True)
    sigma = torch.tensor([1.0, 2.0], requires_grad=True)
    d = difficulty(bald(mu, sigma), torch.tensor([True, False]))
    assert not d.requires_grad and d.grad_fn is None
    # as a loss weight it scales without adding a gradient path
    loss = (d * mu).sum()
    loss.backward()
    torch.testing.assert_close(mu.grad, d)
    assert sigma.grad is None


def test_difficulty_broadcasts_a_correctness_mask():
    u_bald = torch.rand(2, 7)
    d = difficulty(u_bald, torch.tensor([True, False])[:, None])
    torch.testing.assert_close(d[0], 0.5 * torch.sigmoid(u_bald[0]))
    torch.testing.assert_close(d[1], 1.0 - 0.5 * torch.sigmoid(u_bald[1]))


def test_public_names():
    import workbench.losses as losses

    assert losses.bald is bald and losses.difficulty is difficulty
    assert losses.binary_anchor_loss.__module__ == "workbench.losses.anchor"
