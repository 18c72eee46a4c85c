"""Libra R-CNN (``papers/libra-rcnn.md``; Pang et al., CVPR 2019) on two baselines:

- ``libra_rcnn`` (:mod:`workbench.methods.libra.rcnn`): Faster R-CNN with IoU-balanced
  sampling, the balanced feature pyramid and the balanced L1 loss;
- ``libra_retinanet`` (:mod:`workbench.methods.libra.retinanet`): RetinaNet with the balanced
  feature pyramid and the balanced L1 loss.

The components and configs are in :mod:`workbench.methods.libra.model`; the arrays behind the
figures (sampled negatives' IoUs, loss curves, per-level feature magnitudes) in
:mod:`workbench.methods.libra.analysis`.
"""

from workbench.methods.libra.model import (
    IoUBalancedSampler,
    LibraRCNNConfig,
    LibraRetinaNetConfig,
    build_libra_faster_rcnn,
    build_libra_retinanet,
)

__all__ = [
    "IoUBalancedSampler",
    "LibraRCNNConfig",
    "LibraRetinaNetConfig",
    "build_libra_faster_rcnn",
    "build_libra_retinanet",
]
