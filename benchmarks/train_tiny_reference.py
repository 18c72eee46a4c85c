"""Train the previous ``tiny`` Faster R-CNN recipe (ResNet-18-FPN from scratch, recipe ``old`` of
``learning_curve.py``) on the built-in dataset, then torchvision's
``FasterRCNN`` built with the same architecture and trained by the same loop, data and recipe.

Prints a markdown table (wall time, AP, AP50, AP75 on the val split) for docs/benchmarks.md.

    .venv/bin/python benchmarks/train_tiny_reference.py --epochs 3 --out runs/tiny-reference
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.detection import FasterRCNN as TvFasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from workbench import methods
from workbench.config import apply_overrides
from workbench.engine.trainer import train
from workbench.methods import Method
from workbench.modeling import FasterRCNNConfig
from workbench.structures import Detections, DetectorOutput

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curve import old_tiny  # noqa: E402

LOSS_NAMES = {
    "loss_objectness": "loss_rpn_cls",
    "loss_rpn_box_reg": "loss_rpn_box",
    "loss_classifier": "loss_rcnn_cls",
    "loss_box_reg": "loss_rcnn_box",
}


class TorchvisionDetector(nn.Module):
    """torchvision's FasterRCNN behind the workbench's model interface (for this comparison)."""

    def __init__(self, model: TvFasterRCNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, images, targets=None, **_) -> DetectorOutput:
        if self.training:
            tv_targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
            losses = self.model(images, tv_targets)
            return DetectorOutput(losses={LOSS_NAMES[k]: v for k, v in losses.items()})
        dets = self.model(images)
        return DetectorOutput(detections=[Detections(d["boxes"], d["scores"], d["labels"]) for d in dets])


def build_torchvision_like(cfg: FasterRCNNConfig, num_classes: int) -> TorchvisionDetector:
    """torchvision parts with the settings of the workbench config ``cfg`` (ResNet-18-FPN)."""
    net = resnet18(weights=None, norm_layer=nn.BatchNorm2d)
    layers = cfg.backbone_returned_layers
    channels = [64 * 2 ** (k - 1) for k in layers]
    backbone = BackboneWithFPN(
        net, {f"layer{k}": str(i) for i, k in enumerate(layers)}, channels, cfg.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )
    names = [str(i) for i in range(len(layers))]
    model = TvFasterRCNN(
        backbone,
        min_size=cfg.min_size, max_size=cfg.max_size,
        rpn_anchor_generator=AnchorGenerator(cfg.anchor_sizes, (cfg.anchor_aspect_ratios,) * len(cfg.anchor_sizes)),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        box_roi_pool=MultiScaleRoIAlign(names, cfg.roi_output_size, cfg.roi_sampling_ratio),
        box_head=TwoMLPHead(cfg.fpn_channels * cfg.roi_output_size**2, cfg.box_representation_size),
        box_predictor=FastRCNNPredictor(cfg.box_representation_size, num_classes + 1),
        box_batch_size_per_image=cfg.box_batch_size_per_image,
    )
    return TorchvisionDetector(model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default="builtin:shapes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/tiny-reference")
    parser.add_argument("--only", choices=["workbench", "torchvision"])
    parser.add_argument("--threads", type=int, help="torch threads (1 gives steadier figures on a busy machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    methods.METHODS["torchvision_reference"] = __name__
    cfg = apply_overrides(old_tiny(), data=args.data, epochs=args.epochs, seed=args.seed)
    runs = {
        "workbench": cfg,
        "torchvision": dataclasses.replace(cfg, method="torchvision_reference", preset="tiny"),
    }
    rows = []
    for name, run_cfg in runs.items():
        if args.only and name != args.only:
            continue
        out = Path(args.out) / name
        start, cpu_start = time.perf_counter(), time.process_time()
        result = train(run_cfg, out, progress=False)
        minutes = (time.perf_counter() - start) / 60
        cpu_minutes = (time.process_time() - cpu_start) / 60
        m = result.last_eval
        rows.append(
            f"| {name} | {args.epochs} | {minutes:.1f} | {cpu_minutes:.1f} | {m['AP']:.3f} | {m['AP50']:.3f} | {m['AP75']:.3f} |"
        )
        print(rows[-1], flush=True)
    print("| model | epochs | wall minutes (train + eval) | CPU minutes | AP | AP50 | AP75 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    return 0


METHOD = Method(
    name="torchvision_reference",
    description="torchvision's FasterRCNN with the workbench config's settings (benchmark only)",
    model_config_type=FasterRCNNConfig,
    build_model=build_torchvision_like,
    presets={"tiny": old_tiny},
)

if __name__ == "__main__":
    sys.modules.setdefault("__main__", sys.modules[__name__])
    raise SystemExit(main())
