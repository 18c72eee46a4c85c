"""Pure tensor functions for detection: box maths, box coding, matching, sampling, anchors, NMS,
RoIAlign with a sparse-matrix backward.

Every function takes and returns tensors (no modules, no global state); boxes are absolute
``xyxy`` unless a name says otherwise. Each submodule states its shape conventions.
"""

from workbench.ops.anchors import (
    anchors_for_images,
    feature_strides,
    fpn_cell_anchors,
    grid_anchors,
    ssd_anchors,
    ssd_cell_anchors,
)
from workbench.ops.boxes import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xywh_to_xyxy,
    box_xyxy_to_cxcywh,
    box_xyxy_to_xywh,
    clip_boxes,
    nondegenerate,
    pairwise_iou,
    scale_boxes,
    size_at_least,
)
from workbench.ops.coding import DEFAULT_SCALE_CLAMP, BoxCoder
from workbench.ops.matching import (
    BELOW_LOW,
    BETWEEN,
    bipartite_match,
    bipartite_match_batched,
    mark_ignored,
    match_boxes,
    match_boxes_ssd,
    match_boxes_ssd_batched,
)
from workbench.ops.nms import NmsLedger, nms_with_ledger
from workbench.ops.roi_align import (
    roi_align,
    roi_align_input_grad,
    sampling_entries,
    sampling_matrix,
    transposed_sampling_matrix,
    uses_sparse_backward,
)
from workbench.ops.sampling import (
    sample_hard_negatives,
    sample_hard_negatives_batched,
    sample_instance_balanced_positive,
    sample_iou_balanced_negative,
    sample_libra,
    sample_random,
)
from workbench.ops.uniform_iou import uniform_iou_samples

__all__ = [
    "BELOW_LOW",
    "BETWEEN",
    "DEFAULT_SCALE_CLAMP",
    "BoxCoder",
    "NmsLedger",
    "anchors_for_images",
    "bipartite_match",
    "bipartite_match_batched",
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_xyxy_to_xywh",
    "clip_boxes",
    "feature_strides",
    "fpn_cell_anchors",
    "grid_anchors",
    "mark_ignored",
    "match_boxes",
    "match_boxes_ssd",
    "match_boxes_ssd_batched",
    "nms_with_ledger",
    "nondegenerate",
    "pairwise_iou",
    "roi_align",
    "roi_align_input_grad",
    "sample_hard_negatives",
    "sample_hard_negatives_batched",
    "sample_instance_balanced_positive",
    "sample_iou_balanced_negative",
    "sample_libra",
    "sample_random",
    "sampling_entries",
    "sampling_matrix",
    "scale_boxes",
    "size_at_least",
    "ssd_anchors",
    "ssd_cell_anchors",
    "transposed_sampling_matrix",
    "uniform_iou_samples",
    "uses_sparse_backward",
]
