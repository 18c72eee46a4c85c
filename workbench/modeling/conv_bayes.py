"""A Bayesian convolution ("convBayes", the uncertainty-rescaling paper's slide "Bayesian
Convolution Layer"): every kernel weight is a Gaussian ``w ~ N(k, lam k^2)``.

For an input ``x`` the output of such a layer is Gaussian too (the local reparameterisation of
variational dropout, Kingma, Salimans and Welling 2015), with, element-wise,

- ``mu = conv(x, k) (+ b)`` and
- ``sigma = sqrt(conv(x^2, lam k^2))``

(slide "Bayesian Convolution Layer"). In training the layer returns eq. (1), the mean of
``num_samples`` draws ``mu + eps * sigma`` with ``eps ~ N(0, 1)`` drawn per output element; in
evaluation it returns ``mu`` (the mean of the output distribution). :meth:`ConvBayes.moments`
returns ``(mu, sigma)`` in either mode.

``lam`` (the variance ratio of every weight, the ``alpha`` of Gaussian / variational dropout):

- fixed by default (``learn_lam=False``): the value given, kept in a buffer. The slides give no
  value; the workbench's presets use ``lam = 1``, the ``alpha`` of Gaussian dropout with rate
  0.5 (``alpha = p / (1 - p)``, Srivastava et al. 2014), the largest variance variational
  dropout starts from;
- ``learn_lam=True``: ``log lam`` is a parameter (one per output channel) initialised at
  ``log(lam)`` and learned by the loss, as variational dropout learns its ``alpha``. Without the
  variational KL term (which the paper does not mention) the data loss alone pushes ``lam``
  towards zero, which is why it is not the default.

Shapes: ``x`` (N, C_in, H, W) -> (N, C_out, H', W') as ``nn.Conv2d`` with the same arguments.
Randomness: training draws come from PyTorch's default generator in one call,
``torch.randn((num_samples, *mu.shape))``, so that a seeded call can be recomputed by hand.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _safe_sqrt(variance: Tensor) -> Tensor:
    """``sqrt(variance)`` with a finite (zero) gradient where the variance is exactly zero (an
    all-zero receptive field after a ReLU, or zero padding)."""
    positive = variance > 0
    return torch.where(positive, torch.where(positive, variance, torch.ones_like(variance)).sqrt(),
                       torch.zeros_like(variance))


class ConvBayes(nn.Module):
    """A 2-D convolution with Gaussian weights ``N(k, lam k^2)`` (see the module docstring).

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as ``nn.Conv2d``.
        lam: the variance ratio ``lam`` (> 0); the initial value when ``learn_lam``.
        num_samples: ``K`` of eq. (1), the number of draws averaged in training (>= 1).
        bias: add a learned bias to ``mu`` (deterministic: it does not enter ``sigma``).
        learn_lam: learn ``log lam`` per output channel instead of keeping ``lam`` fixed.

    ``weight`` (the means ``k``) and ``bias`` start as ``nn.Conv2d``'s.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        *,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        lam: float,
        num_samples: int,
        bias: bool = True,
        learn_lam: bool = False,
    ) -> None:
        super().__init__()
        if not lam > 0:
            raise ValueError(f"lam must be positive, got {lam}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        reference = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = reference.kernel_size, reference.stride, reference.padding
        self.num_samples = int(num_samples)
        self.learn_lam = bool(learn_lam)
        self.weight = reference.weight
        self.bias = reference.bias
        log_lam = torch.full((out_channels if learn_lam else 1,), math.log(lam))
        if learn_lam:
            self.log_lam = nn.Parameter(log_lam)
        else:
            self.register_buffer("log_lam", log_lam)

    @property
    def lam(self) -> Tensor:
        """``lam``: shape (1,) when fixed, (C_out,) when learned."""
        return self.log_lam.exp()

    def extra_repr(self) -> str:
        lam = "learned" if self.learn_lam else f"{float(self.lam):g}"
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, lam={lam}, num_samples={self.num_samples}, bias={self.bias is not None}")

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        return F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding)

    def moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` -> ``(mu, sigma)`` of the output distribution (the slide's two formulas)."""
        mu = self._conv(x, self.weight, self.bias)
        lam = self.lam.to(self.weight.dtype).view(-1, 1, 1, 1)
        variance = self._conv(x * x, lam * self.weight * self.weight)
        return mu, _safe_sqrt(variance)

    def sample(self, mu: Tensor, sigma: Tensor) -> Tensor:
        """Eq. (1) from the moments: the mean over ``num_samples`` draws of ``mu + eps * sigma``."""
        eps = torch.randn((self.num_samples, *mu.shape), dtype=mu.dtype, device=mu.device)
        return (mu + eps * sigma).mean(dim=0)

    def forward(self, x: Tensor) -> Tensor:
        """Training: eq. (1); evaluation: ``mu``."""
        if not self.training:
            return self._conv(x, self.weight, self.bias)
        return self.sample(*self.moments(x))


__all__ = ["ConvBayes"]
