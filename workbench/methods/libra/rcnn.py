"""``libra_rcnn``: Faster R-CNN with Libra R-CNN's IoU-balanced sampling, balanced feature
pyramid and balanced L1 loss (:mod:`workbench.methods.libra.model`).

Presets (each the baseline's preset of the same name with the three components added, see
:meth:`workbench.methods.Method.extended`):
- ``tiny``: the miniature regime. Its pyramid is the baseline tiny's stride 8, 16, 32, 64
  levels, so the refine level is 1: stride 16, the stride of the paper's refine level P4
  (level 2 of P2-P6);
- ``r50_fpn_1x``: the paper's COCO setting (Table 1, ResNet-50-FPN, 1x schedule): the
  baseline's ``r50_fpn_1x`` with every component at the paper's setting (K = 3 with
  instance-balanced positives; refine level 2 with a non-local block; balanced L1 with
  alpha 0.5, gamma 1.5, beta 1.0), as mmdetection's ``libra_faster_rcnn_r50_fpn_1x``; the
  baseline's SGD, lr 0.02 for 16 images, 12 epochs, steps after 8 and 11, 800 / 1333.
"""

from __future__ import annotations

from workbench.methods import faster_rcnn as baseline
from workbench.methods.libra.figures import BALANCED_L1_FIGURE, NEGATIVE_IOU_FIGURE
from workbench.methods.libra.model import PAPER, LibraRCNNConfig, build_rcnn_model
from workbench.modeling import FasterRCNNConfig

#: The tiny pyramid's level with the stride (16) of the paper's refine level P4.
TINY_REFINE_LEVEL = 1


def libra_rcnn_model(preset: str, base: FasterRCNNConfig) -> LibraRCNNConfig:
    """The baseline preset's model with the three components at the paper's settings; the
    refine level has the stride (16) of the paper's P4 in every preset."""
    if preset == "tiny":
        return LibraRCNNConfig(base=base, refine_level=TINY_REFINE_LEVEL)
    return LibraRCNNConfig(base=base)


METHOD = baseline.METHOD.extended(
    "libra_rcnn", "Libra R-CNN: Faster R-CNN with IoU-balanced sampling, a balanced feature pyramid and balanced L1",
    LibraRCNNConfig, build_rcnn_model, libra_rcnn_model, presets=("tiny", "r50_fpn_1x"), paper=PAPER,
    run_figures=(NEGATIVE_IOU_FIGURE, BALANCED_L1_FIGURE),
)

__all__ = ["METHOD", "TINY_REFINE_LEVEL", "libra_rcnn_model"]
