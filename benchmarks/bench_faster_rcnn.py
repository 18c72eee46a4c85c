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

import argparse

import torch
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision_pair import device_name, print_table, random_batch, time_pair

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


def bench_backbone(backbone: str, args, device: torch.device) -> list[dict[str, object]]:
    images, targets = random_batch(args.images, args.size, device, max_label=9)
    torch.manual_seed(0)
    tv = torchvision_model(backbone, args.size, args.num_classes).to(device).eval()
    wb = load_torchvision_faster_rcnn(tv).eval()
    return time_pair(backbone, tv, wb, images, targets, args, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--images", type=int, default=2, help="images per batch")
    parser.add_argument("--size", type=int, default=512, help="min_size = max_size of the transform")
    parser.add_argument("--num-classes", type=int, default=90, help="foreground classes")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    rows = []
    for backbone in args.backbones:
        rows.extend(bench_backbone(backbone, args, device))

    print(f"\n{args.images} images, {args.size} px, {args.num_classes} classes, median of {args.repeats}; "
          f"{device_name(device)}; torch {torch.__version__}\n")
    print_table("backbone", rows, device)

if __name__ == "__main__":
    main()
