"""Time the workbench Faster R-CNN against torchvision's with the same settings and inputs.

For each backbone (ResNet-50-FPN, ResNet-18-FPN) a torchvision ``FasterRCNN`` is built with
frozen batch norm and three trainable backbone stages (torchvision's settings for a pretrained
backbone), its weights are loaded into the workbench model with
``load_torchvision_faster_rcnn``, and both are timed on the same batch:

- inference: ``model(images)`` in evaluation mode under ``torch.no_grad()``;
- training step: forward with targets, backward of the summed losses, one SGD step.

The two models are measured alternately (the order flips every repeat) and the table reports
wall-clock medians and their ratio (workbench / torchvision); on CPU also the ratio of the
medians of process CPU time, which other jobs on a shared machine disturb less. The predictor's class weights are spread so
that the post-processing has detections to rank and suppress, as a trained model would.

    python benchmarks/bench_faster_rcnn.py                 # CPU
    python benchmarks/bench_faster_rcnn.py --device cuda   # GPU
"""

from __future__ import annotations

import torch
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision_pair import parse_args, print_report, time_models

from workbench.modeling import load_torchvision_faster_rcnn

BACKBONES = {"resnet50_fpn": "resnet50", "resnet18_fpn": "resnet18"}


def torchvision_model(backbone: str, size: int, num_classes: int) -> torch.nn.Module:
    body = resnet_fpn_backbone(
        backbone_name=BACKBONES[backbone], weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=3
    )
    model = TorchvisionFasterRCNN(body, num_classes=num_classes + 1, min_size=size, max_size=size)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        weight = model.roi_heads.box_predictor.cls_score.weight
        weight.copy_(torch.randn(weight.shape, generator=g) * 0.05)
    return model


def main() -> None:
    args, device = parse_args(
        __doc__.splitlines()[0], "--backbones", list(BACKBONES), size=512,
        size_help="min_size = max_size of the transform", repeats=7,
    )
    rows = time_models(
        args.backbones, lambda backbone: torchvision_model(backbone, args.size, args.num_classes),
        lambda backbone, tv: load_torchvision_faster_rcnn(tv), args, device, max_label=9,
    )
    print_report(f"{args.images} images, {args.size} px", "backbone", rows, args, device)


if __name__ == "__main__":
    main()
