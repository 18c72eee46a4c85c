"""Models: backbones and necks, anchor generator, RPN, RoI heads, and the Faster R-CNN assembly.

Everything is built by injection: the builders in ``faster_rcnn`` read a
:class:`FasterRCNNConfig` and pass plain objects (heads, box coders, matcher settings, samplers,
losses, scoring, post-processing) into the modules; no module reads a global config. A method
passes the parts it replaces to :func:`build_faster_rcnn`; the box branch is a sequence of
:class:`BoxStage` (:mod:`workbench.modeling.box_stages`).
"""

from workbench.modeling.anchor_generator import AnchorGenerator
from workbench.modeling.assignment import (
    AllCandidates,
    Assignment,
    HardNegativeSampler,
    IoUMatcher,
    Matcher,
    MatcherSettings,
    RandomSampler,
    Sampler,
    SSDMatcher,
    assign_to_gt,
)
from workbench.modeling.backbones import BACKBONES, FeatureExtractor, SingleLevel, build_backbone
from workbench.modeling.conv_bayes import ConvBayes
from workbench.modeling.box_stages import BoxSource, BoxStage, StageLoss, StageOutput
from workbench.modeling.faster_rcnn import (
    FasterRCNN,
    FasterRCNNConfig,
    build_anchor_generator,
    build_box_pooler,
    build_box_postprocess,
    build_box_stage,
    build_faster_rcnn,
    build_roi_heads,
    build_rpn,
    build_transform,
)
from workbench.modeling.roi_heads import (
    ExtraHeadOutput,
    FastRCNNLoss,
    FastRCNNPostprocess,
    FastRCNNPredictor,
    RoIContext,
    RoIHeads,
    RoIHeadsOutput,
    SampledRoIs,
    TwoMLPHead,
    select_detections,
)
from workbench.modeling.roi_pooler import SparseGradMultiScaleRoIAlign
from workbench.modeling.rpn import (
    ProposalScoring,
    ProposalSettings,
    RegionProposalNetwork,
    RPNHead,
    RPNLoss,
    RPNOutput,
    SigmoidObjectness,
    flatten_levels,
)
from workbench.modeling.torchvision_compat import (
    config_from_torchvision,
    convert_torchvision_state_dict,
    load_torchvision_faster_rcnn,
)
from workbench.modeling.dense import (
    AllAnchors,
    DenseDetector,
    DenseTargets,
    FocalLoss,
    SigmoidPostprocess,
    SoftmaxLoss,
    SoftmaxPostprocess,
)
from workbench.modeling.retinanet import RetinaNetConfig, RetinaNetHead, build_retinanet
from workbench.modeling.ssd import DefaultBoxes, FixedSizeTransform, L2Norm, SSDConfig, SSDHead, SSDVGG, build_ssd
from workbench.modeling.torchvision_dense import (
    load_torchvision_retinanet,
    load_torchvision_ssd,
    retinanet_config_from_torchvision,
    ssd_config_from_torchvision,
)
from workbench.modeling.trace import TraceRecorder, grouped_nms
from workbench.modeling.transform import ImageBatch, ImageTransform

__all__ = [
    "AllAnchors",
    "DenseDetector",
    "DenseTargets",
    "FocalLoss",
    "SigmoidPostprocess",
    "SoftmaxLoss",
    "SoftmaxPostprocess",
    "RetinaNetConfig",
    "RetinaNetHead",
    "build_retinanet",
    "DefaultBoxes",
    "FixedSizeTransform",
    "L2Norm",
    "SSDConfig",
    "SSDHead",
    "SSDVGG",
    "build_ssd",
    "load_torchvision_retinanet",
    "load_torchvision_ssd",
    "retinanet_config_from_torchvision",
    "ssd_config_from_torchvision",
    "AllCandidates",
    "AnchorGenerator",
    "Assignment",
    "BACKBONES",
    "BoxSource",
    "BoxStage",
    "ConvBayes",
    "ExtraHeadOutput",
    "FastRCNNLoss",
    "FastRCNNPostprocess",
    "FastRCNNPredictor",
    "FasterRCNN",
    "FasterRCNNConfig",
    "FeatureExtractor",
    "ImageBatch",
    "ImageTransform",
    "HardNegativeSampler",
    "IoUMatcher",
    "Matcher",
    "MatcherSettings",
    "SSDMatcher",
    "ProposalScoring",
    "ProposalSettings",
    "RPNHead",
    "RPNLoss",
    "RPNOutput",
    "RandomSampler",
    "RegionProposalNetwork",
    "RoIContext",
    "RoIHeads",
    "RoIHeadsOutput",
    "SampledRoIs",
    "Sampler",
    "SigmoidObjectness",
    "SingleLevel",
    "SparseGradMultiScaleRoIAlign",
    "StageLoss",
    "StageOutput",
    "TraceRecorder",
    "TwoMLPHead",
    "assign_to_gt",
    "build_anchor_generator",
    "build_backbone",
    "build_box_pooler",
    "build_box_postprocess",
    "build_box_stage",
    "build_faster_rcnn",
    "build_roi_heads",
    "build_rpn",
    "build_transform",
    "config_from_torchvision",
    "convert_torchvision_state_dict",
    "flatten_levels",
    "grouped_nms",
    "load_torchvision_faster_rcnn",
    "select_detections",
]
