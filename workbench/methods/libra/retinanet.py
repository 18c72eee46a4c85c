"""``libra_retinanet``: RetinaNet with Libra R-CNN's balanced feature pyramid and balanced L1
loss (:mod:`workbench.methods.libra.model`); a dense detector has no RoI sampling.

Presets (each the RetinaNet baseline's preset of the same name with the two components, see
:meth:`workbench.methods.Method.extended`):
- ``tiny``: the miniature regime; its levels are at strides 8..128 like P3-P7, so the refine
  level is 1 (stride 16, P4) as in the paper's configuration;
- ``r50_fpn_1x``: the paper's COCO setting (Table 1, Libra RetinaNet ResNet-50-FPN 1x, 35.8 ->
  37.8 AP): the baseline's ``r50_fpn_1x`` with the balanced pyramid (refine level 1, non-local)
  and balanced L1 (alpha 0.5, gamma 1.5, beta 0.11), as mmdetection's
  ``libra_retinanet_r50_fpn_1x``; the baseline's SGD, lr 0.01 for 16 images, 12 epochs.
"""

from __future__ import annotations

from workbench.methods import retinanet as baseline
from workbench.methods.libra.figures import BALANCED_L1_FIGURE
from workbench.methods.libra.model import PAPER, LibraRetinaNetConfig, build_retinanet_model
from workbench.modeling import RetinaNetConfig


def libra_retinanet_model(preset: str, base: RetinaNetConfig) -> LibraRetinaNetConfig:
    """The baseline preset's model with the two components at the paper's settings (the same
    in every preset: the refine level is 1, stride 16, in the tiny and the P3-P7 pyramids)."""
    return LibraRetinaNetConfig(base=base)


METHOD = baseline.METHOD.extended(
    "libra_retinanet", "Libra RetinaNet: RetinaNet with a balanced feature pyramid and balanced L1",
    LibraRetinaNetConfig, build_retinanet_model, libra_retinanet_model, presets=("tiny", "r50_fpn_1x"), paper=PAPER,
    run_figures=(BALANCED_L1_FIGURE,),
)

__all__ = ["METHOD", "libra_retinanet_model"]
