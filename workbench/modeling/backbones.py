"""Backbones and necks: torchvision classification networks turned into feature extractors.

Conventions:
- a feature extractor maps a padded, normalised batch ``(N, 3, H, W)`` to an ordered dict of
  feature maps ``name -> (N, C, H_l, W_l)``, highest resolution first, all with the same channel
  count ``out_channels``;
- ``body`` is the truncated torchvision network, ``neck`` maps the body's dict to the final dict
  (an FPN, or a single-level pass-through); further necks (e.g. a balanced feature pyramid) are
  appended with :meth:`FeatureExtractor.with_neck`;
- batch norm is frozen (torchvision's ``FrozenBatchNorm2d``) and the first layers are frozen as
  ``trainable_layers`` says, counting from the top of the network like torchvision.

Weights: ``weights=None`` builds a randomly initialised network. A string is either the name of a
member of the torchvision weights enum of that network (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...;
found in torchvision's cache, in a registry package that ships the same file, or downloaded:
:mod:`workbench.modeling.weights`) or the path of a
local ``.pth`` file holding the classification network's state dict (optionally wrapped in
``{"state_dict": ...}`` or ``{"model": ...}``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from torchvision import models
from torchvision.models import vgg as vgg_module
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from workbench.errors import ConfigError
from workbench.modeling.weights import load_weights_state_dict

BACKBONES = ("resnet50_fpn", "resnet101_fpn", "resnet18_fpn", "mobilenet_v2_fpn", "vgg16")


class FeatureExtractor(nn.Module):
    """``body`` (torchvision network, truncated) followed by ``neck``.

    Attributes: ``out_channels`` (channels of every output level), ``feature_names`` (output
    keys, highest resolution first), ``strides`` (nominal stride of each output level).
    """

    def __init__(
        self,
        body: nn.Module,
        neck: nn.Module,
        out_channels: int,
        feature_names: tuple[str, ...],
        strides: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.body = body
        self.neck = neck
        self.out_channels = out_channels
        self.feature_names = tuple(feature_names)
        self.strides = tuple(strides)

    def forward(self, images: Tensor) -> "OrderedDict[str, Tensor]":
        """``images`` (N, 3, H, W) -> ordered dict of (N, out_channels, H_l, W_l)."""
        return self.neck(self.body(images))

    def with_neck(self, extra: nn.Module) -> "FeatureExtractor":
        """A new extractor sharing this body and neck, with ``extra`` (dict -> dict, same names and
        channels) applied after the current neck."""
        return FeatureExtractor(
            self.body, nn.Sequential(self.neck, extra), self.out_channels, self.feature_names, self.strides
        )


class SingleLevel(nn.Module):
    """Neck that passes the body's only feature map through under a new name."""

    def __init__(self, name: str = "0") -> None:
        super().__init__()
        self.name = name

    def forward(self, features: "OrderedDict[str, Tensor]") -> "OrderedDict[str, Tensor]":
        if len(features) != 1:
            raise ValueError(f"SingleLevel expects one feature map, got {len(features)}")
        return OrderedDict([(self.name, next(iter(features.values())))])


@dataclass(frozen=True)
class _Spec:
    """How to build one backbone: torchvision constructor, weights enum, returned layers."""

    constructor: Callable[..., nn.Module]
    weights_enum: type
    uses_batch_norm: bool


_SPECS = {
    "resnet50_fpn": _Spec(models.resnet50, models.ResNet50_Weights, True),
    "resnet101_fpn": _Spec(models.resnet101, models.ResNet101_Weights, True),
    "resnet18_fpn": _Spec(models.resnet18, models.ResNet18_Weights, True),
    "mobilenet_v2_fpn": _Spec(models.mobilenet_v2, models.MobileNet_V2_Weights, True),
    "vgg16": _Spec(models.vgg16, models.VGG16_Weights, False),
}

# Maximum ``trainable_layers`` per backbone family (counting stages from the top).
MAX_TRAINABLE_LAYERS = {"resnet50_fpn": 5, "resnet101_fpn": 5, "resnet18_fpn": 5, "mobilenet_v2_fpn": 6, "vgg16": 5}


def _resolve_weights(name: str, weights: str | None):
    """``None``, a member of the network's torchvision weights enum, or a local file path."""
    if weights is None:
        return None
    spec = _SPECS[name]
    path = Path(weights)
    if path.is_file():
        return path
    member = getattr(spec.weights_enum, weights, None)
    if member is None:
        names = ", ".join(spec.weights_enum.__members__)
        raise ConfigError(
            f"backbone weights {weights!r}: neither a file nor a member of "
            f"{spec.weights_enum.__name__} ({names}, DEFAULT)"
        )
    return member


def _load_file(network: nn.Module, path: Path, prefix: str = "") -> None:
    """Load a state dict file (plain or under ``state_dict`` / ``model``) into ``network``;
    with ``prefix``, only the entries under it (prefix removed)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{path}: does not fit the backbone ({first})") from None


# Normalisation layers a backbone can use: frozen batch norm (the usual choice with pretrained
# weights, as in torchvision's detectors) or trainable batch norm (training from scratch).
NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {"frozen_bn": FrozenBatchNorm2d, "bn": nn.BatchNorm2d}


def _classification_network(name: str, weights: str | None, norm: str = "frozen_bn") -> nn.Module:
    """The torchvision network ``name`` with the requested normalisation and weights."""
    spec = _SPECS[name]
    if norm not in NORM_LAYERS:
        raise ConfigError(f"unknown backbone norm {norm!r}; choose one of {', '.join(NORM_LAYERS)}")
    kwargs = {"norm_layer": NORM_LAYERS[norm]} if spec.uses_batch_norm else {}
    resolved = _resolve_weights(name, weights)
    network = spec.constructor(weights=None, **kwargs)
    if isinstance(resolved, Path):
        _load_file(network, resolved)
    elif resolved is not None:
        network.load_state_dict(load_weights_state_dict(resolved))
    return network


def _vgg16_features(weights: str | None) -> nn.Sequential:
    """``vgg16().features`` without building the 120M-parameter classifier."""
    features = vgg_module.make_layers(vgg_module.cfgs["D"], batch_norm=False)
    resolved = _resolve_weights("vgg16", weights)
    if resolved is None:
        for layer in features.modules():
            if isinstance(layer, nn.Conv2d):  # torchvision's VGG initialisation
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layer.bias)
    elif isinstance(resolved, Path):
        _load_file(features, resolved, prefix="features.")
    else:
        state = load_weights_state_dict(resolved)
        features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
    return features


def _check_trainable(name: str, trainable_layers: int) -> None:
    top = MAX_TRAINABLE_LAYERS[name]
    if not 0 <= trainable_layers <= top:
        raise ConfigError(f"trainable_layers for {name} must be in [0, {top}], got {trainable_layers}")


def _freeze_resnet(network: nn.Module, trainable_layers: int) -> None:
    """Freeze every parameter outside the top ``trainable_layers`` of (conv1, layer1..layer4)."""
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        trainable.append("bn1")
    for pname, parameter in network.named_parameters():
        if not any(pname.startswith(prefix) for prefix in trainable):
            parameter.requires_grad_(False)


def _resnet_fpn(
    name: str,
    weights: str | None,
    trainable_layers: int,
    out_channels: int,
    norm: str = "frozen_bn",
    returned_layers: tuple[int, ...] = (1, 2, 3, 4),
) -> FeatureExtractor:
    """ResNet stages ``returned_layers`` (1..4, strides 4..32) + FPN + a max-pooled extra level.

    Levels are named ``"0", "1", ...`` in order, then ``"pool"`` (torchvision's naming)."""
    _check_returned_layers(returned_layers)
    network = _classification_network(name, weights, norm)
    _freeze_resnet(network, trainable_layers)
    stage_channels = [_block_out(getattr(network, f"layer{k}")) for k in returned_layers]
    return_layers = [f"layer{k}" for k in returned_layers]
    return _fpn_extractor(network, return_layers, stage_channels, out_channels, returned_layers)


def _block_out(layer: nn.Sequential) -> int:
    """Output channels of a ResNet stage (BasicBlock or Bottleneck)."""
    last = layer[-1]
    conv = last.conv3 if hasattr(last, "conv3") else last.conv2
    return int(conv.out_channels)


# Blocks of ``mobilenet_v2().features`` that end the stride-4, 8 and 16 stages.
_MOBILENET_V2_RETURN = ("3", "6", "13")
#: The block of ``mobilenet_v2().features`` returned at stride 32, by name: ``expansion``
#: (block 18, the classifier's 1x1 expansion to 1,280 channels with batch norm and ReLU6, what
#: torchvision's detection backbones return) or ``bottleneck`` (block 17, the last inverted
#: residual: 320 channels, linear output).
MOBILENET_V2_TOPS = {"expansion": "18", "bottleneck": "17"}


def mobilenet_v2_stage_blocks(top: str = "expansion") -> tuple[str, str, str, str]:
    """The blocks of ``mobilenet_v2().features`` that end the stride-4, 8, 16 and 32 stages,
    the last one by ``top`` (:data:`MOBILENET_V2_TOPS`)."""
    if top not in MOBILENET_V2_TOPS:
        raise ConfigError(f"unknown mobilenet_top {top!r}; use one of {', '.join(MOBILENET_V2_TOPS)}")
    return (*_MOBILENET_V2_RETURN, MOBILENET_V2_TOPS[top])


def _check_returned_layers(returned_layers: tuple[int, ...]) -> None:
    if not returned_layers or any(k not in (1, 2, 3, 4) for k in returned_layers) or list(returned_layers) != sorted(set(returned_layers)):
        raise ConfigError(f"returned_layers must be increasing stage numbers in 1..4, got {returned_layers}")


def _fpn_levels(returned_layers: tuple[int, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Names and strides of the FPN levels over stages ``returned_layers`` plus the pooled level."""
    names = tuple(str(i) for i in range(len(returned_layers))) + ("pool",)
    strides = tuple(2 ** (k + 1) for k in returned_layers) + (2 ** (returned_layers[-1] + 2),)
    return names, strides


def _fpn_extractor(network: nn.Module, stage_modules: list[str], stage_channels: list[int], out_channels: int,
                   returned_layers: tuple[int, ...]) -> FeatureExtractor:
    """The child modules ``stage_modules`` of ``network`` (the ends of stages ``returned_layers``,
    with ``stage_channels`` channels) as the body, an FPN of ``out_channels`` over them and a
    max-pooled extra level, named and strided as :func:`_fpn_levels` says (torchvision's
    ``BackboneWithFPN``)."""
    body = IntermediateLayerGetter(network, return_layers={name: str(i) for i, name in enumerate(stage_modules)})
    neck = FeaturePyramidNetwork(stage_channels, out_channels, extra_blocks=LastLevelMaxPool())
    names, strides = _fpn_levels(returned_layers)
    return FeatureExtractor(body, neck, out_channels, names, strides)


def _mobilenet_v2_fpn(
    weights: str | None,
    trainable_layers: int,
    out_channels: int,
    norm: str = "frozen_bn",
    returned_layers: tuple[int, ...] = (1, 2, 3, 4),
    top: str = "expansion",
) -> FeatureExtractor:
    _check_returned_layers(returned_layers)
    stage_blocks = mobilenet_v2_stage_blocks(top)
    features = _classification_network("mobilenet_v2_fpn", weights, norm).features
    # Stage starts: the stem, every strided block, and the last 1x1 conv (as torchvision counts).
    starts = [0] + [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)] + [len(features) - 1]
    freeze_before = len(features) if trainable_layers == 0 else starts[len(starts) - trainable_layers]
    for block in features[:freeze_before]:
        for parameter in block.parameters():
            parameter.requires_grad_(False)
    blocks = [stage_blocks[k - 1] for k in returned_layers]
    channels = [_last_out_channels(features[int(i)]) for i in blocks]
    # Blocks after the last returned one never reach an output: leave them out of the body.
    return _fpn_extractor(features[: int(blocks[-1]) + 1], blocks, channels, out_channels, returned_layers)


def _last_out_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return int(convs[-1].out_channels)


# Index in ``vgg16().features`` of the ReLU after conv5_3 (stride 16) and of the first conv of
# each of the five blocks.
_VGG16_CONV5_3_RELU = 29
_VGG16_BLOCK_STARTS = (0, 5, 10, 17, 24)


def _vgg16(weights: str | None, trainable_layers: int) -> FeatureExtractor:
    features = _vgg16_features(weights)
    first_trainable = (
        _VGG16_CONV5_3_RELU + 1 if trainable_layers == 0 else _VGG16_BLOCK_STARTS[5 - trainable_layers]
    )
    for block in features[:first_trainable]:
        for parameter in block.parameters():
            parameter.requires_grad_(False)
    body = IntermediateLayerGetter(features, return_layers={str(_VGG16_CONV5_3_RELU): "conv5_3"})
    out_channels = _last_out_channels(features[: _VGG16_CONV5_3_RELU + 1])
    return FeatureExtractor(body, SingleLevel("0"), out_channels, ("0",), (16,))


def build_backbone(
    name: str,
    weights: str | None = None,
    trainable_layers: int = 3,
    fpn_channels: int = 256,
    norm: str = "frozen_bn",
    returned_layers: tuple[int, ...] = (1, 2, 3, 4),
    mobilenet_top: str = "expansion",
) -> FeatureExtractor:
    """Build a feature extractor by name.

    - ``resnet50_fpn`` / ``resnet101_fpn`` / ``resnet18_fpn``: ResNet C2..C5 + FPN
      (``fpn_channels``) + max-pool P6; levels ``0,1,2,3,pool`` at strides 4..64;
      ``trainable_layers`` in [0, 5];
      ``returned_layers`` picks the stages fed to the FPN (``(2, 3, 4)`` drops the stride-4
      level: levels ``0,1,2,pool`` at strides 8..64);
    - ``norm`` (batch-norm backbones): ``frozen_bn`` (with pretrained weights) or ``bn``
      (trainable batch norm, for training from scratch);
    - ``mobilenet_v2_fpn``: MobileNetV2 blocks 3, 6, 13, 18 (strides 4..32) + FPN + P6, same
      levels as the ResNet FPNs (``returned_layers`` picks among them the same way);
      ``trainable_layers`` in [0, 6] (stages as torchvision counts them); ``mobilenet_top``
      ``bottleneck`` returns block 17 instead of 18 at stride 32 (:data:`MOBILENET_V2_TOPS`);
    - ``vgg16``: VGG-16 up to conv5_3 (+ ReLU), one level ``0`` at stride 16 with 512 channels;
      ``trainable_layers`` in [0, 5] conv blocks counted from conv5 (3 freezes conv1 and conv2).
    """
    if name not in _SPECS:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    _check_trainable(name, trainable_layers)
    if mobilenet_top != "expansion" and name != "mobilenet_v2_fpn":
        raise ConfigError(f"mobilenet_top applies to mobilenet_v2_fpn only, not {name}")
    if name in ("resnet50_fpn", "resnet101_fpn", "resnet18_fpn"):
        return _resnet_fpn(name, weights, trainable_layers, fpn_channels, norm, returned_layers)
    if name == "mobilenet_v2_fpn":
        return _mobilenet_v2_fpn(weights, trainable_layers, fpn_channels, norm, returned_layers, mobilenet_top)
    return _vgg16(weights, trainable_layers)
