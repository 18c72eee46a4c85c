"""The YOLOv3 networks: Darknet-53, the YOLOv3 neck and the per-level 1x1 prediction head
(Redmon and Farhadi, "YOLOv3: An Incremental Improvement", 2018; layer layout of darknet's
``yolov3.cfg``).

Conventions: a body maps the padded batch ``(N, 3, H, W)`` to an ordered dict of three feature
maps at strides 8, 16 and 32 (``"0"``, ``"1"``, ``"2"``); the neck turns them into three maps
(highest resolution first) of ``2 * neck_channels[l]`` channels; the head maps each to
``obj_logits`` (N, A, H_l, W_l), ``cls_logits`` (N, A K, H_l, W_l) and ``deltas`` (N, 4 A, H_l,
W_l) (per anchor ``(tx, ty, tw, th)``, see :mod:`~workbench.methods.yolov3.coding`).

Every convolution of Darknet-53 and of the neck is conv (no bias) + batch norm + leaky ReLU 0.1,
as in darknet. ``width`` scales every channel count of Darknet-53 (1.0 is the paper's network;
smaller widths keep the tests fast).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Residual blocks per Darknet-53 stage (strides 2, 4, 8, 16, 32).
DARKNET53_BLOCKS = (1, 2, 8, 8, 4)


class ConvBNLeaky(nn.Sequential):
    """Conv (no bias, "same" padding) + batch norm + leaky ReLU 0.1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.1, inplace=True),
        )


class DarknetResidual(nn.Module):
    """``x + conv3x3(conv1x1(x))`` with half the channels in between."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reduce = ConvBNLeaky(channels, channels // 2, 1)
        self.expand = ConvBNLeaky(channels // 2, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.expand(self.reduce(x))


class Darknet53(nn.Module):
    """Darknet-53 without its classifier: a 3x3 stem of 32 channels, then five stages, each a
    stride-2 3x3 conv doubling the channels and ``DARKNET53_BLOCKS`` residual blocks; returns
    the stride 8, 16 and 32 stages (256, 512 and 1024 channels at ``width`` 1).

    ``out_channels``: the channels of the three returned maps."""

    def __init__(self, width: float = 1.0, blocks: Sequence[int] = DARKNET53_BLOCKS) -> None:
        super().__init__()
        base = max(8, int(round(32 * width)))
        self.stem = ConvBNLeaky(3, base, 3)
        stages = []
        channels = base
        for count in blocks:
            layers: list[nn.Module] = [ConvBNLeaky(channels, channels * 2, 3, stride=2)]
            channels *= 2
            layers += [DarknetResidual(channels) for _ in range(count)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.out_channels = (base * 8, base * 16, base * 32)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0.1, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.stem(x)
        out: "OrderedDict[str, Tensor]" = OrderedDict()
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index >= 2:
                out[str(index - 2)] = x
        return out


def _five_convs(in_channels: int, channels: int) -> nn.Sequential:
    """1x1 c, 3x3 2c, 1x1 c, 3x3 2c, 1x1 c: the block before each YOLOv3 output."""
    return nn.Sequential(
        ConvBNLeaky(in_channels, channels, 1),
        ConvBNLeaky(channels, channels * 2, 3),
        ConvBNLeaky(channels * 2, channels, 1),
        ConvBNLeaky(channels, channels * 2, 3),
        ConvBNLeaky(channels * 2, channels, 1),
    )


class YOLOv3Neck(nn.Module):
    """From the stride-32 map down: five convs (``c_2`` channels), a 3x3 conv to ``2 c_2`` (the
    stride-32 output); a 1x1 conv to ``c_1``, 2x nearest upsampling, concatenation with the
    stride-16 map, five convs, a 3x3 conv (the stride-16 output); the same again onto the
    stride-8 map. ``neck_channels`` = ``(c_0, c_1, c_2)`` for strides 8, 16, 32 (darknet: 128,
    256, 512). Returns the three outputs, stride 8 first."""

    def __init__(self, in_channels: Sequence[int], neck_channels: Sequence[int]) -> None:
        super().__init__()
        if len(in_channels) != 3 or len(neck_channels) != 3:
            raise ValueError("the YOLOv3 neck takes three levels (strides 8, 16, 32)")
        c0, c1, c2 = (int(c) for c in neck_channels)
        self.blocks = nn.ModuleList([
            _five_convs(in_channels[0] + c0, c0),
            _five_convs(in_channels[1] + c1, c1),
            _five_convs(in_channels[2], c2),
        ])
        self.outputs = nn.ModuleList([ConvBNLeaky(c, 2 * c, 3) for c in (c0, c1, c2)])
        self.lateral = nn.ModuleList([ConvBNLeaky(c1, c0, 1), ConvBNLeaky(c2, c1, 1)])
        self.out_channels = (2 * c0, 2 * c1, 2 * c2)

    def forward(self, features: "OrderedDict[str, Tensor]") -> "OrderedDict[str, Tensor]":
        levels = list(features.values())
        x = self.blocks[2](levels[2])
        outs = [self.outputs[2](x)]
        for level in (1, 0):
            up = F.interpolate(self.lateral[level](x), size=levels[level].shape[-2:], mode="nearest")
            x = self.blocks[level](torch.cat([up, levels[level]], dim=1))
            outs.insert(0, self.outputs[level](x))
        return OrderedDict((str(i), out) for i, out in enumerate(outs))


class YOLOv3Backbone(nn.Module):
    """``body`` (Darknet-53 or a torchvision body over strides 8..32) then :class:`YOLOv3Neck`.
    ``out_channels`` per level and ``strides`` (8, 16, 32)."""

    strides = (8, 16, 32)

    def __init__(self, body: nn.Module, body_channels: Sequence[int], neck_channels: Sequence[int]) -> None:
        super().__init__()
        self.body = body
        self.neck = YOLOv3Neck(body_channels, neck_channels)
        self.out_channels = self.neck.out_channels

    def forward(self, images: Tensor) -> "OrderedDict[str, Tensor]":
        return self.neck(self.body(images))


class YOLOv3Head(nn.Module):
    """Per level, 1x1 convolutions (not shared: the levels have different channels) to the
    objectness logit, the ``K`` class logits and the four box offsets of each of its ``A``
    anchors; darknet's one 1x1 conv of ``A (5 + K)`` outputs, split by role. Weights start from
    N(0, 0.01), biases from 0 except the objectness bias, ``-log((1 - prior) / prior)`` (the
    prior of RetinaNet, Lin et al. 2017: with the objectness BCE summed over every anchor, a
    zero bias makes the first steps all about the background)."""

    def __init__(self, in_channels: Sequence[int], num_anchors: int, num_classes: int, obj_prior: float = 0.01) -> None:
        super().__init__()
        self.num_anchors, self.num_classes = num_anchors, num_classes
        self.obj = nn.ModuleList([nn.Conv2d(c, num_anchors, 1) for c in in_channels])
        self.cls = nn.ModuleList([nn.Conv2d(c, num_anchors * num_classes, 1) for c in in_channels])
        self.box = nn.ModuleList([nn.Conv2d(c, num_anchors * 4, 1) for c in in_channels])
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        for conv in self.obj:
            nn.init.constant_(conv.bias, -math.log((1 - obj_prior) / obj_prior))

    def forward(self, features: Sequence[Tensor]) -> dict[str, list[Tensor]]:
        return {
            "obj_logits": [conv(f) for conv, f in zip(self.obj, features)],
            "cls_logits": [conv(f) for conv, f in zip(self.cls, features)],
            "deltas": [conv(f) for conv, f in zip(self.box, features)],
        }
