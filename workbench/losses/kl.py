"""KL-divergence losses of Gaussian box-offset predictions (KL-RPN, Seo et al.).

Conventions: ``mu`` (N, 4) predicted offsets in the box coder's delta space, ``beta`` (N, 4) the
predicted ``log(sigma**2)`` of each offset, ``target_deltas`` (N, 4) encoded GT offsets
(read only where the label is positive), ``labels`` (N,) ``1`` positive, ``0`` negative,
``-1`` ignored. Nothing here reduces: reduce with :func:`workbench.losses.reduce_loss`.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Variance of the negatives' target Gaussian N(0, 1/3) (KL-RPN paper, section 2.2).
NEGATIVE_TARGET_VARIANCE = 1.0 / 3.0


def kl_rpn_loss(
    mu: Tensor,
    beta: Tensor,
    target_deltas: Tensor,
    labels: Tensor,
    gamma: float = 0.5,
    negative_variance: float = NEGATIVE_TARGET_VARIANCE,
) -> Tensor:
    """Per-anchor KL-RPN loss ``(N,)``, summed over the 4 coordinates, before any reduction.

    Per coordinate (paper equations (7) and (4)):

    - positive (target: a Dirac delta at the GT offset ``mu_gt``)
      ``exp(-beta) * gamma * (mu_gt - mu)**2 / 2 + beta / 2``;
    - negative (target: ``N(0, negative_variance)``)
      ``exp(-beta) * (gamma * mu**2 + negative_variance) / 2 + beta / 2``;
    - ignored: ``0``, with no gradient to ``mu`` or ``beta``.

    How the constants relate to the exact divergences (paper equations (3) and (6)): the KL
    divergence of ``N(0, s2)`` from ``N(mu, exp(beta))`` is
    ``exp(-beta) * (mu**2 + s2) / 2 + beta / 2 + (-log(s2) / 2 - 1 / 2)``; equation (4) drops the
    last bracket (constant in the prediction) and weights ``mu**2`` by ``gamma``. For a Dirac
    target the divergence is ``(mu_gt - mu)**2 / (2 exp(beta)) + beta / 2 + log(2 pi) / 2 - H``
    with ``H`` the (constant) entropy of the target; equation (7) drops ``log(2 pi) / 2 - H`` and
    weights the squared error by ``gamma``. ``gamma = 1`` would give the exact divergences up
    to those constants; the paper sets ``gamma = 1/2``. The optimum ``exp(beta)`` is
    ``gamma * (mu_gt - mu)**2`` for a positive and ``gamma * mu**2 + negative_variance`` for a
    negative, so a negative at ``mu = 0`` is driven to the target variance exactly.

    ``beta`` is used as given: bound it before (the KL-RPN head clamps it) so that
    ``exp(-beta)`` stays finite.
    """
    if mu.shape != beta.shape or mu.shape != target_deltas.shape or mu.dim() != 2 or mu.shape[-1] != 4:
        raise ValueError(
            f"mu, beta and target_deltas must be (N, 4), got {tuple(mu.shape)}, {tuple(beta.shape)}, "
            f"{tuple(target_deltas.shape)}"
        )
    if labels.shape != mu.shape[:1]:
        raise ValueError(f"labels must be (N,) = ({mu.shape[0]},), got {tuple(labels.shape)}")
    positive = (labels > 0)[:, None]
    valid = (labels >= 0)[:, None]
    # Masked inputs keep non-finite values of unused rows (e.g. the targets of negatives, or an
    # extreme beta of an ignored anchor) out of the forward value and of the gradient.
    beta = torch.where(valid, beta, torch.zeros_like(beta))
    target = torch.where(positive, target_deltas.to(mu.dtype), torch.zeros_like(mu))
    precision = torch.exp(-beta)
    pos = precision * gamma * (target - mu) ** 2 / 2 + beta / 2
    neg = precision * (gamma * mu**2 + negative_variance) / 2 + beta / 2
    per_coordinate = torch.where(positive, pos, neg)
    return torch.where(valid, per_coordinate, torch.zeros_like(per_coordinate)).sum(dim=1)
