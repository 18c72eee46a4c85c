"""Loss rescaling by uncertainty inference for single-stage detection (Li, Chen, Quan and Zhang,
ICIP 2020; ``papers/uncertainty-loss-rescaling.md``) on the YOLOv3-style detector
(:mod:`workbench.methods.yolov3`). The model is in :mod:`~workbench.methods.uncertainty.model`.

Rows of the paper's table (VOC07 mAP, Darknet-53 at 608), each a config of this method:

=====================  =================================================  =======
row                    switches                                           paper
=====================  =================================================  =======
``baseline``           no branch, no rescaling                            76.62
``obj_focal``          objectness focal loss (alpha 0.25, gamma 2)        75.18
``obj_anchor``         objectness anchor loss (binary form, gamma 0.5)    76.43
``method``             convBayes branch, objectness loss times D          77.34
``convbayes``          convBayes branch, no rescaling (ablation)          76.38
``conv``               a plain 1x1 conv branch, no rescaling (ablation)   76.01
=====================  =================================================  =======

Presets: ``tiny`` (the method in the miniature regime: the base's ``tiny`` with the branch and
the rescaling, nothing else changed), ``tiny_<row>`` for every other row, and
``darknet53_608_voc`` (the method at the paper's setting, the base's schedule).

Traces (:data:`RECORD_VIEWS`): the :data:`workbench.records.UNCERTAINTY_MAP` record of every
image holds, on a grid of 8 x 8 network-input pixels (the finest stride) cropped to the image,

- ``bald``: the BALD (eq. 2, bits) of the most uncertain anchor at each cell over every scale
  (the paper's "uncertainty map": each pixel the BALD of its anchor), ``bald_stride8`` /
  ``bald_stride16`` / ``bald_stride32`` the same per scale (a coarse cell covers 2 x 2 or
  4 x 4 fine cells);
- per scale ``s`` and anchor, ``mu_stride{s}``, ``sigma_stride{s}`` ``(H_s, W_s, 3)`` over the
  padded input (the anchor order of the level); each anchor's BALD is not stored, being a
  function of the two: :func:`workbench.methods.uncertainty.analysis.anchor_bald` recomputes it;
- given targets (training images, "on request"): ``difficulty_stride{s}`` (D), ``correct``,
  ``label`` (assignment: class, 0, -1 ignored), ``predicted`` (main objectness > 0.5) per
  anchor and the ``difficulty`` map (the largest D at each cell);
- ``cell_size``: a cell's ``(height, width)`` in original-image pixels.

Every detection carries ``uncertainty``: the BALD of the anchor it came from.
"""

from __future__ import annotations

import dataclasses

from workbench import records as R
from workbench.config import TrainConfig
from workbench.methods import SINGLE_STAGE_VIEWS, Method, RecordView
from workbench.methods import yolov3 as base
from workbench.methods.uncertainty.figures import RUN_FIGURES
from workbench.methods.uncertainty.model import UncertaintyRescalingConfig, build_model

NAME = "uncertainty_rescaling"

#: The rows of the paper's table as configs over a base YOLOv3 config.
ROWS = {
    "baseline": dict(branch=None, rescale=False),
    "obj_focal": dict(branch=None, rescale=False, objectness_loss="focal"),
    "obj_anchor": dict(branch=None, rescale=False, objectness_loss="anchor"),
    "method": dict(branch="bayes", rescale=True),
    "convbayes": dict(branch="bayes", rescale=False),
    "conv": dict(branch="conv", rescale=False),
}
#: The paper's VOC07 mAP of each row (slide "Comparison of Results & Ablation Study").
PAPER_MAP = {"baseline": 76.62, "obj_focal": 75.18, "obj_anchor": 76.43, "method": 77.34, "convbayes": 76.38,
             "conv": 76.01}


def row_model(row: str, base_cfg) -> UncertaintyRescalingConfig:
    """The config of one row of the table over ``base_cfg`` (a YOLOv3 config)."""
    if row not in ROWS:
        raise KeyError(f"unknown row {row!r}; rows: {', '.join(ROWS)}")
    switches = dict(ROWS[row])
    objectness = switches.pop("objectness_loss", base_cfg.objectness_loss)
    return UncertaintyRescalingConfig(base=dataclasses.replace(base_cfg, objectness_loss=objectness), **switches)


def _row_preset(row: str, preset: str, cfg: TrainConfig) -> TrainConfig:
    return dataclasses.replace(cfg, method=NAME, preset=preset, model=row_model(row, cfg.model))


def tiny() -> TrainConfig:
    """The method in the miniature regime: the base's ``tiny`` plus branch and rescaling."""
    return _row_preset("method", "tiny", base.tiny())


def darknet53_608_voc() -> TrainConfig:
    """The method at the paper's setting (the base's ``darknet53_608_voc``)."""
    return _row_preset("method", "darknet53_608_voc", base.darknet53_608_voc())


def _tiny_row(row: str):
    def preset() -> TrainConfig:
        return _row_preset(row, f"tiny_{row}", base.tiny())

    preset.__name__ = f"tiny_{row}"
    preset.__doc__ = f"The row {row!r} of the paper's table in the miniature regime."
    return preset


PRESETS = {"tiny": tiny, "darknet53_608_voc": darknet53_608_voc,
           **{f"tiny_{row}": _tiny_row(row) for row in ROWS if row != "method"}}

#: How the method's own records are shown, besides the single-stage ones.
BALD_MAP_VIEW = RecordView(
    R.UNCERTAINTY_MAP, "heatmap", field="bald_map", value="bald", layer="BALD map",
    label="BALD of the objectness (bits) of the most uncertain anchor at each cell, over the scales",
    higher="more uncertain", shown=True,
)
RECORD_VIEWS: tuple[RecordView, ...] = (
    BALD_MAP_VIEW,
    *(RecordView(R.UNCERTAINTY_MAP, "heatmap", field=f"bald_map_stride{s}", value=f"bald_stride{s}",
                 layer=f"BALD map, stride {s}", higher="more uncertain", app=False,
                 label=f"BALD of the objectness (bits) of the most uncertain anchor at each cell, stride {s}")
      for s in (8, 16, 32)),
    RecordView(R.DETECTIONS, "attribute", field="uncertainty", uncertainty=True,
               label="BALD of the objectness (bits) of the anchor the detection came from"),
)

METHOD = Method(
    name=NAME,
    paper="Loss Rescaling by Uncertainty Inference for Single-stage Object Detection (Li et al.)",
    baseline="yolov3",
    description="YOLOv3 with a convBayes objectness branch; objectness loss rescaled by BALD difficulty",
    model_config_type=UncertaintyRescalingConfig,
    build_model=build_model,
    presets=PRESETS,
    train_transforms=base.train_transforms,
    record_views=(*SINGLE_STAGE_VIEWS, *RECORD_VIEWS),
    run_figures=RUN_FIGURES,
)

__all__ = ["BALD_MAP_VIEW", "METHOD", "NAME", "PAPER_MAP", "PRESETS", "RECORD_VIEWS", "ROWS",
           "UncertaintyRescalingConfig", "darknet53_608_voc", "row_model", "tiny"]
