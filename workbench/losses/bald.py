"""Uncertainty and difficulty of a Gaussian logit, element-wise (the uncertainty-rescaling paper,
slides "Bayesian Active Learning by Disagreement" and "Difficulty Scoring").

:func:`bald`, eq. (2): the BALD score of Houlsby, Huszar, Ghahramani and Lengyel (2011,
"Bayesian Active Learning for Classification and Preference Learning", section 3), the mutual
information between a binary label and the latent ``f ~ N(mu, sigma^2)`` under the probit link
``p(y = 1 | f) = Phi(f)``::

    U_BALD = h(Phi(mu / sqrt(sigma^2 + 1))) - C / sqrt(sigma^2 + C^2) * exp(-mu^2 / (2 (sigma^2 + C^2)))

with ``h`` the binary entropy **in bits** (``h(1/2) = 1``), ``Phi`` the standard normal CDF and
``C = sqrt(pi ln 2 / 2)``. The first term is the entropy of the predictive mean (exact for the
probit link); the second approximates the expected entropy by ``h(Phi(x)) ~ exp(-x^2 / (pi ln 2))``,
the Gaussian-shaped approximation for which ``C`` is derived (so ``h`` must be in bits). Being
an approximation, the score can dip a little below zero where the true value is near zero
(``sigma -> 0``); it is returned as the formula gives it, not clipped (over ``|mu| <= 8``,
``sigma <= 10`` it stays above -0.003). Its values lie below 1 bit.

:func:`difficulty`, eq. (3): ``D = 0.5 U`` for a correct prediction and ``0.5 (1 - U) + 0.5``
otherwise, with ``U = sigmoid(U_BALD)``; returned without gradient (the paper rescales losses by
``D``, it does not train through it). Correct predictions thus get ``D < 0.5`` and incorrect ones
``D > 0.5`` (assumption 1 of the slide); among correct ones higher uncertainty is harder
(assumption 2), among incorrect ones lower uncertainty is harder (assumption 3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: ``C`` of eq. (2): ``sqrt(pi ln 2 / 2)``.
BALD_C = math.sqrt(math.pi * math.log(2.0) / 2.0)


def binary_entropy_bits(p: Tensor) -> Tensor:
    """``h(p) = -p log2 p - (1 - p) log2 (1 - p)``, element-wise, ``h(0) = h(1) = 0``."""
    q = 1.0 - p
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(q, q)) / math.log(2.0)


def bald(mu: Tensor, sigma: Tensor) -> Tensor:
    """Eq. (2), element-wise: ``mu`` and ``sigma`` (the mean and standard deviation of a logit,
    ``sigma >= 0``) broadcast; the result has their broadcast shape, in bits. Differentiable
    (callers that only score, as :func:`difficulty`'s users, detach)."""
    variance = sigma * sigma
    predictive = torch.special.ndtr(mu / torch.sqrt(variance + 1.0))
    c2 = BALD_C * BALD_C
    expected_entropy = BALD_C / torch.sqrt(variance + c2) * torch.exp(-mu * mu / (2.0 * (variance + c2)))
    return binary_entropy_bits(predictive) - expected_entropy


def difficulty(u_bald: Tensor, correct: Tensor) -> Tensor:
    """Eq. (3), element-wise: ``u_bald`` (any float shape) and ``correct`` (bool, broadcasting
    with it) -> ``D`` in ``(0, 1)`` with ``U = sigmoid(u_bald)``, without gradient."""
    with torch.no_grad():
        u = torch.sigmoid(u_bald.detach())
        return torch.where(correct.to(torch.bool), 0.5 * u, 0.5 * (1.0 - u) + 0.5)


__all__ = ["BALD_C", "bald", "binary_entropy_bits", "difficulty"]
