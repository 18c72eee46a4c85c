"""The balanced feature pyramid of Libra R-CNN (Pang et al., CVPR 2019, section 3.2): a neck
applied after the FPN that strengthens every level with the same balanced semantic features.

Steps (paper Fig. 4, eq. 3; mmdetection's ``BFP`` for the details the paper leaves open):

1. **rescale**: every level is resized to the size of the *refine level* ``r``: finer levels
   (index ``< r``) by adaptive max pooling, coarser ones by nearest-neighbour interpolation;
2. **integrate**: the resized levels are averaged, ``C = 1/L * sum_l C_l`` (no parameters);
3. **refine**: ``C`` goes through an embedded-Gaussian non-local block (:class:`NonLocalBlock`,
   the paper's default) or a 3x3 convolution with ReLU (:class:`ConvRefine`), or nothing;
4. **strengthen**: the refined map is resized back to each level (nearest up for the finer
   levels, adaptive max pooling down for the coarser) and added to it as a residual.

Conventions: features are an ordered dict ``name -> (N, C, H_l, W_l)``, highest resolution
first, as :class:`~workbench.modeling.backbones.FeatureExtractor` returns them; the output has
the same names, order, channels and sizes. Convolutions start from Xavier (uniform) weights and
zero biases, as the authors' code (mmdetection 1.x, ``BFP.init_weights``) does for every
convolution of the neck, the non-local block's included; so the non-local block does not start
as the identity (with its output convolution zeroed it would, which the tests use).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: What refines the integrated map.
REFINE_TYPES = ("non_local", "conv", "none")


def drop_subnormal(values: Tensor) -> Tensor:
    """``values`` with those of magnitude below the smallest normal float set to 0, on the CPU
    (on other devices ``values`` as they are).

    A trained block's softmax is peaked: on the ``tiny`` Libra R-CNN run about 11% of the
    attention weights fell below float32's smallest normal number (1.2e-38), and so did many of
    the gradients of the affinities in the backward pass (a weight times the gradient it
    receives). A CPU computes every product with such a number in microcode, tens of times
    slower: the backward's batched products took about 200 ms of a 1.3 s training step, and 5
    ms with the subnormal numbers at 0. A value that small adds nothing a float32 sum of the
    other terms can hold. GPUs compute with subnormal numbers at full speed and are left alone
    (no extra (N, HW, HW) tensor there)."""
    if values.device.type != "cpu":
        return values
    return values.masked_fill(values.abs() < torch.finfo(values.dtype).tiny, 0.0)


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018,
    eq. 1 and section 3.2): ``z = x + W_z y`` with ``y_i = sum_j softmax_j(theta(x_i) .
    phi(x_j) [/ sqrt(d)]) g(x_j)``, ``theta``, ``phi``, ``g`` and ``W_z`` 1x1 convolutions to
    ``d = channels // reduction`` channels (``W_z`` back to ``channels``).

    The balanced pyramid uses ``reduction=1`` and no ``1 / sqrt(d)`` scale (mmdetection's
    ``BFP`` builds ``NonLocal2d(in_channels, reduction=1, use_scale=False)``). Shapes:
    ``(N, C, H, W) -> (N, C, H, W)``; the attention is ``(N, HW, HW)``.
    """

    def __init__(self, channels: int, reduction: int = 1, use_scale: bool = False) -> None:
        super().__init__()
        inner = max(channels // reduction, 1)
        self.inner_channels = inner
        self.use_scale = use_scale
        self.theta = nn.Conv2d(channels, inner, kernel_size=1)
        self.phi = nn.Conv2d(channels, inner, kernel_size=1)
        self.g = nn.Conv2d(channels, inner, kernel_size=1)
        self.out = nn.Conv2d(inner, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (N, HW, d)
        phi = self.phi(x).flatten(2)  # (N, d, HW)
        g = self.g(x).flatten(2).transpose(1, 2)  # (N, HW, d)
        affinity = torch.bmm(theta, phi)  # (N, HW, HW)
        if affinity.requires_grad:
            affinity.register_hook(drop_subnormal)  # its gradient, before the backward's products
        if self.use_scale:
            affinity = affinity / self.inner_channels**0.5
        y = torch.bmm(drop_subnormal(affinity.softmax(dim=-1)), g)  # (N, HW, d)
        y = y.transpose(1, 2).reshape(n, self.inner_channels, h, w)
        return x + self.out(y)


class ConvRefine(nn.Module):
    """3x3 convolution (same channels) and ReLU: the paper's lighter refinement (mmdetection's
    ``refine_type="conv"``, a ``ConvModule`` with its default ReLU)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x))


def _resize(x: Tensor, size: tuple[int, int], finer: bool) -> Tensor:
    """``x`` to ``size``: adaptive max pooling when ``x`` is the finer map, nearest otherwise."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if finer:
        return F.adaptive_max_pool2d(x, output_size=size)
    return F.interpolate(x, size=size, mode="nearest")


class BalancedFeaturePyramid(nn.Module):
    """The balanced feature pyramid (see the module docstring).

    Args:
        channels: channels of every level (the FPN's).
        num_levels: number of levels it receives (all are integrated and strengthened).
        refine_level: index of the level whose size the levels are integrated at (R-CNN with
            P2-P6: 2, i.e. P4; RetinaNet with P3-P7: 1, also P4).
        refine_type: ``"non_local"`` (paper), ``"conv"`` or ``"none"``.
    """

    def __init__(self, channels: int, num_levels: int, refine_level: int = 2, refine_type: str = "non_local") -> None:
        super().__init__()
        if not 0 <= refine_level < num_levels:
            raise ValueError(f"refine_level must index one of the {num_levels} levels, got {refine_level}")
        if refine_type not in REFINE_TYPES:
            raise ValueError(f"unknown refine_type {refine_type!r}; use one of {', '.join(REFINE_TYPES)}")
        self.num_levels = num_levels
        self.refine_level = refine_level
        self.refine_type = refine_type
        if refine_type == "non_local":
            self.refine: nn.Module = NonLocalBlock(channels, reduction=1, use_scale=False)
        elif refine_type == "conv":
            self.refine = ConvRefine(channels)
        else:
            self.refine = nn.Identity()
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def integrate(self, levels: list[Tensor]) -> Tensor:
        """The levels resized to the refine level and averaged (eq. 3): ``(N, C, H_r, W_r)``."""
        size = tuple(levels[self.refine_level].shape[-2:])
        resized = [_resize(x, size, finer=i < self.refine_level) for i, x in enumerate(levels)]
        return torch.stack(resized, dim=0).mean(dim=0)

    def forward(self, features: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
        names = list(features)
        levels = [features[name] for name in names]
        if len(levels) != self.num_levels:
            raise ValueError(f"the balanced pyramid was built for {self.num_levels} levels, got {len(levels)}")
        refined = self.refine(self.integrate(levels))
        out = OrderedDict()
        for i, (name, x) in enumerate(zip(names, levels)):
            # the refined map is finer than the coarser levels (i > r): pool it down to them
            out[name] = x + _resize(refined, tuple(x.shape[-2:]), finer=i > self.refine_level)
        return out


def find_balanced_pyramid(module: nn.Module) -> BalancedFeaturePyramid | None:
    """The first :class:`BalancedFeaturePyramid` inside ``module`` (a detector), or ``None``."""
    for sub in module.modules():
        if isinstance(sub, BalancedFeaturePyramid):
            return sub
    return None


__all__ = ["REFINE_TYPES", "BalancedFeaturePyramid", "ConvRefine", "NonLocalBlock", "drop_subnormal",
           "find_balanced_pyramid"]
