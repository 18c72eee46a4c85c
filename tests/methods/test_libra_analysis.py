"""Arrays behind the Libra figures (loss curves, sampled negatives' IoUs, level magnitudes) and
the figures built from them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from workbench.methods.libra.analysis import (
    ALL,
    balanced_l1_settings,
    IOU_BALANCED,
    RANDOM,
    box_stage_sampling,
    level_magnitudes,
    loss_curves,
    model_proposals,
    negative_ious,
    untrained_model,
)
from workbench.modeling.assignment import IoUMatcher
from workbench.modeling.balanced_pyramid import find_balanced_pyramid
from workbench.viz.features import level_magnitude_figure
from workbench.viz.losses import loss_gradient_figure
from workbench.viz.sampling import negative_iou_figure, share_above

from detector_support import one_thread  # noqa: F401 (one_thread: autouse)


B = math.exp(3.0) - 1.0
SMALL = dict(min_size=96, max_size=96, fpn_channels=32, box_representation_size=64, rpn_pre_nms_top_n_test=200,
             rpn_post_nms_top_n_test=100, box_batch_size_per_image=32)


def test_loss_curves_by_hand():
    x = np.array([0.0, 0.5, 2.0])
    curves = loss_curves(x, settings=((0.5, 1.5), (0.5, 1.0)))
    assert list(curves) == ["smooth L1 (beta 1)", "balanced L1 (alpha 0.5, gamma 1.5)", "balanced L1 (alpha 0.5, gamma 1)"]
    loss, grad = curves["balanced L1 (alpha 0.5, gamma 1.5)"]
    assert loss[1] == pytest.approx(0.400568, abs=1e-6)
    assert grad.tolist() == pytest.approx([0.0, 0.5 * math.log(B / 2 + 1), 1.5])
    loss, grad = curves["smooth L1 (beta 1)"]
    assert loss.tolist() == pytest.approx([0.0, 0.125, 1.5]) and grad.tolist() == pytest.approx([0.0, 0.5, 1.0])
    with pytest.raises(ValueError):
        loss_curves([-1.0])


def test_loss_settings_without_a_run():
    assert balanced_l1_settings() == (((0.5, 1.5),), 1.0)
    assert balanced_l1_settings(None, [[0.2, 1], [0.5, 2.0]], 0.5) == (((0.2, 1.0), (0.5, 2.0)), 0.5)


def ring_boxes(ious):
    """Boxes inside the GT [0, 0, 100, 100] sharing its top-left corner: IoU = area / 10000."""
    side = np.sqrt(np.asarray(ious) * 10000.0)
    return torch.tensor([[0.0, 0.0, s, s] for s in side])


def test_negative_ious_by_hand():
    target = {"boxes": torch.tensor([[0.0, 0.0, 100.0, 100.0]]), "labels": torch.tensor([1])}
    ious = [0.01] * 60 + [0.2] * 4 + [0.4] * 4 + [0.8] * 5
    proposals = ring_boxes(ious)
    out = negative_ious([proposals], [target], matcher=IoUMatcher(0.5, 0.5), num_samples=24, positive_fraction=0.25,
                        add_gt=False, generator=torch.Generator().manual_seed(0))
    assert np.sort(out[ALL]) == pytest.approx(sorted(ious[:68]), abs=1e-6)
    # 5 positives < 6 allowed: 19 negatives; 3 bins of 6: all 4 + 4 harder ones are taken
    assert out[RANDOM].size == out[IOU_BALANCED].size == 19
    assert int((out[IOU_BALANCED] > 0.05).sum()) == 8
    assert share_above(out[IOU_BALANCED], 0.05) > share_above(out[RANDOM], 0.05)
    assert share_above(out[ALL], 0.05) == pytest.approx(8 / 68)
    assert math.isnan(share_above(np.zeros(0), 0.05))


def test_negative_ious_of_a_model_with_its_stage_settings():
    model = untrained_model("libra_rcnn", 2, **SMALL)
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 96, generator=g), torch.rand(3, 48, 64, generator=g)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 10.0, 60.0, 40.0]]), "labels": torch.tensor([2])}]
    proposals, scaled = model_proposals(model, images, targets)
    assert not model.training and len(proposals) == 2 and proposals[0].shape[1] == 4
    # the second image (48 x 64) is resized by min(96 / 48, 96 / 64) = 1.5 to 72 x 96
    assert torch.allclose(scaled[1]["boxes"], targets[1]["boxes"] * 1.5, atol=1e-4)
    settings = box_stage_sampling(model)
    assert settings["num_samples"] == 32 and settings["positive_fraction"] == 0.25 and settings["add_gt"]
    out = negative_ious(proposals, scaled, generator=torch.Generator().manual_seed(0), **settings)
    assert out[ALL].size >= out[RANDOM].size == out[IOU_BALANCED].size > 0
    assert float(out[ALL].max()) < 0.5


def test_proposals_with_the_training_settings_leave_batch_norm_alone():
    model = untrained_model("libra_rcnn", 2, **{**SMALL, "rpn_post_nms_top_n_train": 50, "rpn_post_nms_top_n_test": 20})
    images = [torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(2))]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([1])}]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms
    before = [m.running_mean.clone() for m in norms]
    (train_like,), _ = model_proposals(model, images, targets, training_settings=True)
    (test_like,), _ = model_proposals(model, images, targets)
    assert train_like.shape == (50, 4) and test_like.shape == (20, 4)
    assert not model.training
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))


def test_level_magnitudes_before_and_after_the_pyramid():
    model = untrained_model("libra_retinanet", 2, min_size=96, max_size=96, fpn_channels=32)
    images = [torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(1))]
    names, before, after = level_magnitudes(model, images)
    assert names == ["0", "1", "2", "p6", "p7"] and before.shape == after.shape == (5,)
    assert np.all(before > 0) and not np.allclose(before, after)
    pyramid = find_balanced_pyramid(model)
    nn.init.zeros_(pyramid.refine.out.weight)
    nn.init.zeros_(pyramid.refine.out.bias)
    for p in model.backbone.neck[0].parameters():
        nn.init.constant_(p, 0.0)  # an FPN giving zeros: the average and every level are zero
    _, before, after = level_magnitudes(model, images)
    assert np.allclose(before, 0) and np.allclose(after, 0)
    with pytest.raises(ValueError, match="no balanced feature pyramid"):
        level_magnitudes(nn.Linear(1, 1), images)


def test_loss_figure():
    x = np.linspace(0, 3, 31)
    curves = loss_curves(x)
    fig = loss_gradient_figure(x, curves)
    assert len(fig.data) == 2 * len(curves)
    assert [t.meta["layer"] for t in fig.data[::2]] == list(curves)
    assert fig.data[0].line.dash == "dash" and fig.data[2].line.dash == "solid"
    with pytest.raises(ValueError, match="shape"):
        loss_gradient_figure(x[:5], curves)


def test_sampling_figure_reports_the_share_above_the_threshold():
    ious = {"all": np.array([0.0, 0.01, 0.1, 0.3]), "picked": np.array([0.2, 0.3, 0.02])}
    fig = negative_iou_figure(ious, threshold=0.05)
    assert [t.meta["layer"] for t in fig.data] == ["all", "picked"]
    assert fig.data[0].meta["share_above"] == 0.5 and fig.data[1].meta["share_above"] == pytest.approx(2 / 3)
    assert "50% above 0.05" in fig.data[0].name and "67% above 0.05" in fig.data[1].name
    assert fig.data[0].histnorm == "probability"


def test_level_figure():
    fig = level_magnitude_figure(["0", "1"], np.array([1.0, 2.0]), np.array([1.5, 2.5]))
    assert [t.meta["layer"] for t in fig.data] == ["before", "after"]
    assert list(fig.data[1].y) == [1.5, 2.5]
    with pytest.raises(ValueError):
        level_magnitude_figure(["0"], np.array([1.0, 2.0]), np.array([1.0, 2.0]))
