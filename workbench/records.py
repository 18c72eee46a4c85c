"""The names of trace records and of their common fields: the one place they are spelled.

A detector run with a :class:`workbench.modeling.TraceRecorder` records, per image, a dict
``record name -> field name -> tensor`` (see :mod:`workbench.modeling.trace`); saved traces
(:mod:`workbench.inspection.traces`) keep those names. Recorders, the trace reader, the
FiftyOne export and the figures all use the constants below, and a method says which of its
records are shown and how in its :class:`workbench.methods.RecordView` declarations.

The string values are part of the saved trace format (version 1): renaming a constant is free,
changing a value is a format change.

Records of every detector:

- :data:`ANCHORS`: ``boxes`` (A, 4), ``levels`` (A,);
- :data:`FINAL_CANDIDATES`: per-class boxes above the score threshold that enter the final NMS:
  ``boxes``, ``scores``, ``labels``;
- :data:`FINAL_NMS`: the final per-class NMS, an NMS record (below); its suppressed boxes are
  what the App and the figures show as "suppressed";
- :data:`DETECTIONS`: ``boxes``, ``scores``, ``labels`` plus per-box fields a method adds.

Records of two-stage detectors (the RPN):

- :data:`PROPOSALS_PRE_NMS`: ``boxes``, ``scores``, ``levels`` (+ per-proposal fields);
- :data:`PROPOSAL_NMS`: the RPN's per-level NMS, an NMS record;
- :data:`PROPOSALS`: the proposals after NMS, ``boxes``, ``scores`` (+ per-proposal fields).

Records a method adds: :data:`UNCERTAINTY_MAP` (per-anchor maps, see the method that writes it;
map records follow :data:`MAP_CELL_SIZE`); :data:`REFINED_ROIS`: every RoI of the final pass
refined by the box head, before the score threshold and NMS: ``boxes`` (R, 4) (row ``r`` refines
row ``r`` of :data:`PROPOSALS`), ``scores`` (R,) (the best foreground score) and the method's
per-RoI fields (e.g. a predicted IoU); :data:`REFINED_ANCHORS`, :data:`TOP_REFINED_ANCHORS`,
:data:`DETECTION_ANCHORS` and the map record :data:`FILTERED_ANCHOR_MAP` of a detector that
refines its anchors before classifying them.

A training record (:mod:`workbench.engine.sampling_trace`, written when a run asks for it, not by
prediction): :data:`BOX_SAMPLING`, how a box stage sampled its training RoIs on one image at one
step: per candidate (the image's proposals, then its GT boxes when the stage appends them)
``max_iou`` (A,) the best IoU with a non-ignored GT box, ``labels`` (A,) the assigned class
(0 background, -1 ignored), ``sampled`` (A,) bool, picked by the stage's sampler,
``random_sampled`` (A,) bool, what a uniform random sampler of the same size and positive
fraction picks from the same assignment, and ``step`` (0-d) the 1-based optimiser step.

An NMS record holds its input (:data:`BOXES`, :data:`SCORES`, :data:`NMS_GROUPS`) and the
ledger (:data:`NMS_KEEP`, :data:`NMS_SUPPRESSED_BY`, :data:`NMS_SUPPRESSOR_IOU`,
:data:`NMS_IOU_THRESHOLD`).
"""

from __future__ import annotations

# records --------------------------------------------------------------------------------------
ANCHORS = "anchors"
PROPOSALS_PRE_NMS = "rpn_proposals_pre_nms"
PROPOSAL_NMS = "rpn_nms"
PROPOSALS = "rpn_proposals"
FINAL_CANDIDATES = "rcnn_candidates"
FINAL_NMS = "rcnn_nms"
DETECTIONS = "detections"
UNCERTAINTY_MAP = "uncertainty_map"
REFINED_ROIS = "refined_rois"
#: Anchor refinement (a first module moves and scores the anchors, a second classifies the
#: moved ones): per anchor its refined box, object probability and filter mask; the most
#: object-like refined anchors; the refined anchor of each detection; the share of anchors
#: filtered per location (a map record). The method that writes them documents their fields.
REFINED_ANCHORS = "refined_anchors"
TOP_REFINED_ANCHORS = "top_refined_anchors"
DETECTION_ANCHORS = "detection_anchors"
FILTERED_ANCHOR_MAP = "filtered_anchor_map"
BOX_SAMPLING = "box_sampling"

# fields of box records --------------------------------------------------------------------------
BOXES = "boxes"
SCORES = "scores"
LABELS = "labels"
LEVELS = "levels"
#: The fields every box record shares; any other ``(N,)`` / ``(N, K)`` field is a per-box extra.
BOX_FIELDS = (BOXES, SCORES, LABELS)

# fields of map records ---------------------------------------------------------------------------
#: A map record holds 2-D maps (R, C) and, optionally, ``cell_size`` (2,): the ``(height,
#: width)`` of one map cell in original-image pixels (cell ``(r, c)`` covers
#: ``[r * height, (r + 1) * height) x [c * width, (c + 1) * width)``). Without it a map is one
#: value per original-image pixel. See :func:`workbench.inspection.maps.map_to_pixels`.
MAP_CELL_SIZE = "cell_size"

# fields of NMS records --------------------------------------------------------------------------
NMS_GROUPS = "idxs"
NMS_KEEP = "keep"
NMS_SUPPRESSED_BY = "suppressed_by"
NMS_SUPPRESSOR_IOU = "suppressor_iou"
NMS_IOU_THRESHOLD = "iou_threshold"

# fields of the box-sampling record --------------------------------------------------------------
MAX_IOU = "max_iou"
SAMPLED = "sampled"
RANDOM_SAMPLED = "random_sampled"
STEP = "step"

#: Every record name above.
ALL_RECORDS = (
    ANCHORS,
    PROPOSALS_PRE_NMS,
    PROPOSAL_NMS,
    PROPOSALS,
    FINAL_CANDIDATES,
    FINAL_NMS,
    DETECTIONS,
    UNCERTAINTY_MAP,
    REFINED_ROIS,
    REFINED_ANCHORS,
    TOP_REFINED_ANCHORS,
    DETECTION_ANCHORS,
    FILTERED_ANCHOR_MAP,
    BOX_SAMPLING,
)
