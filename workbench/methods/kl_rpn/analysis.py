"""Proposal analysis of KL-RPN against the baseline RPN (paper section 3.2, Fig. 3).

The analyses work for any two-stage detector and live in :mod:`workbench.evaluation.proposals`;
this module keeps the names KL-RPN's notebooks and benchmarks import.
"""

from __future__ import annotations

from workbench.evaluation.proposals import (
    COORDINATES,
    DEFAULT_FACTOR,
    ObjectnessOffsets,
    dataset_gt_boxes,
    objectness_offsets,
    offsets_by_objectness,
    proposal_settings,
    rpn_proposals,
    run_objectness_offsets,
    run_proposal_recall,
    settings_with_top_n,
)

__all__ = [
    "COORDINATES", "DEFAULT_FACTOR", "ObjectnessOffsets", "dataset_gt_boxes", "objectness_offsets",
    "offsets_by_objectness", "proposal_settings", "rpn_proposals", "run_objectness_offsets", "run_proposal_recall",
    "settings_with_top_n",
]
