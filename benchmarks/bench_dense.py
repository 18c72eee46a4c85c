"""Time the workbench single-stage detectors against torchvision's with the same weights and inputs.

- RetinaNet: a torchvision ``RetinaNet`` with a ResNet-50-FPN (C3..C5, P6 / P7 from P5), frozen
  batch norm and three trainable backbone stages (``retinanet_resnet50_fpn``'s settings with a
  pretrained backbone), loaded into the workbench with ``load_torchvision_retinanet``;
- SSD: torchvision's ``ssd300_vgg16`` (random weights), loaded with ``load_torchvision_ssd``.

Each pair is timed on the same batch, alternately (the order flips every repeat):

- inference: ``model(images)`` in evaluation mode under ``torch.no_grad()``;
- training step: forward with targets, backward of the summed losses, one SGD step.

The table reports wall-clock medians and their ratio (workbench / torchvision); on CPU also the
ratio of the medians of process CPU time, which other jobs on a shared machine disturb less.
The class logits are spread so that post-processing has detections to rank and suppress.

    python benchmarks/bench_dense.py --threads 1                # CPU
    python benchmarks/bench_dense.py --device cuda --images 8   # GPU
"""

from __future__ import annotations

import torch
from torchvision.models import resnet50
from torchvision.models.detection import RetinaNet, ssd300_vgg16
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision_pair import parse_args, print_report, time_models

from workbench.modeling import load_torchvision_retinanet, load_torchvision_ssd


def torchvision_retinanet(size: int, num_classes: int) -> torch.nn.Module:
    body = _resnet_fpn_extractor(
        resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3, returned_layers=[2, 3, 4],
        extra_blocks=LastLevelP6P7(256, 256),
    )
    model = RetinaNet(body, num_classes=num_classes + 1, min_size=size, max_size=size)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        logits = model.head.classification_head.cls_logits
        logits.weight.mul_(20)
        logits.bias.copy_(torch.randn(logits.bias.shape, generator=g) * 0.5 - 2.0)
    return model


def torchvision_ssd(size: int, num_classes: int) -> torch.nn.Module:
    model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes + 1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for conv in model.head.classification_head.module_list:
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))
    return model


MODELS = {
    "retinanet_r50_fpn": (torchvision_retinanet, load_torchvision_retinanet),
    "ssd300_vgg16": (torchvision_ssd, load_torchvision_ssd),
}


def main() -> None:
    args, device = parse_args(
        __doc__.splitlines()[0], "--models", list(MODELS), size=384,
        size_help="RetinaNet min_size = max_size; input side (SSD resizes to 300)", repeats=5,
    )
    rows = time_models(
        args.models, lambda name: MODELS[name][0](args.size, args.num_classes), lambda name, tv: MODELS[name][1](tv),
        args, device, max_label=args.num_classes,
    )
    print_report(f"{args.images} images of {args.size} px", "model", rows, args, device)


if __name__ == "__main__":
    main()
