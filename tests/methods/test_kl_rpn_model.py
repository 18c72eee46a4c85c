"""KL-RPN model: head, ranking without a sigmoid, builder, training, trace, uncertainty maps."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from workbench.methods.kl_rpn.model import (
    KLObjectness,
    KLRPNConfig,
    KLRPNHead,
    build_model,
    log_objectness,
    paper_objectness,
)
from workbench.inspection.maps import record_map_pixels
from workbench.methods.kl_rpn.uncertainty import uncertainty_maps
from workbench.modeling import FasterRCNNConfig, TraceRecorder, build_faster_rcnn, flatten_levels

from detector_support import one_thread, painted_batch, small_faster_rcnn  # noqa: F401 (one_thread: autouse)


def _base(**overrides) -> FasterRCNNConfig:
    values = dict(num_classes=2, anchor_sizes=((16.0,), (32.0,), (64.0,), (128.0,), (256.0,)), box_score_thresh=0.0,
                  rpn_score_thresh=None)
    return small_faster_rcnn(**{**values, **overrides})


def _config(**overrides) -> KLRPNConfig:
    return KLRPNConfig(base=_base(), **overrides)


def _batch():
    return painted_batch(((96, 120), (110, 90)), [[[30.0, 20.0, 90.0, 70.0]], [[10.0, 50.0, 60.0, 100.0]]], [[1], [2]])


def _traced_eval(model):
    """The batch through ``model`` in evaluation mode with a recorder: (images, output, recorder)."""
    images, _ = _batch()
    model.eval()
    recorder = TraceRecorder()
    with torch.no_grad():
        out = model(images, recorder=recorder)
    return images, out, recorder


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(_config(), num_classes=2)


def test_head_outputs_no_objectness_logit_and_clamps_log_var():
    head = KLRPNHead(8, 3, log_var_min=-2.0, log_var_max=1.0, log_var_init_std=1e-5)
    feats = [torch.randn(2, 8, 6, 5), torch.randn(2, 8, 3, 3)]
    with torch.no_grad():
        out = head(feats)
        assert set(out) == {"deltas", "log_var"}
        assert [tuple(t.shape) for t in out["log_var"]] == [(2, 12, 6, 5), (2, 12, 3, 3)]
        head.log_var.bias.fill_(5.0)
        assert all(float(t.max()) == 1.0 for t in head(feats)["log_var"])
        head.log_var.bias.fill_(-5.0)
        assert all(float(t.min()) == -2.0 for t in head(feats)["log_var"])


def test_added_parameters_start_near_zero_and_the_rest_like_the_baseline():
    torch.manual_seed(0)
    head = KLRPNHead(256, 3)
    with torch.no_grad():
        assert float(head.log_var.weight.std()) == pytest.approx(1e-5, rel=0.05)
        assert float(head.bbox_pred.weight.std()) == pytest.approx(1e-2, rel=0.05)
        assert float(head.log_var.bias.abs().max()) == 0.0
        # every anchor starts at sigma ~ 1
        out = head([torch.randn(1, 256, 4, 4)])["log_var"][0]
    assert float(out.abs().max()) < 1e-3


def test_ranking_equals_ranking_by_the_papers_objectness():
    g = torch.Generator().manual_seed(1)
    log_var = torch.empty(3, 500, 4, dtype=torch.float64).uniform_(-8, 8, generator=g)
    rank = KLObjectness().rank({"log_var": log_var})
    reference = paper_objectness(log_var, eps=1e-12)
    assert torch.equal(rank.argsort(dim=1, descending=True), reference.argsort(dim=1, descending=True))
    # the proposal score is the rank key itself (log objectness), not a sigmoid of it
    assert torch.equal(KLObjectness().score(rank), rank)
    assert torch.allclose(rank, -torch.log(torch.exp(0.5 * log_var).prod(dim=-1)))


def test_no_sigmoid_anywhere_in_a_kl_rpn_forward(model, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a sigmoid was applied in a KL-RPN forward pass")

    monkeypatch.setattr(torch, "sigmoid", forbidden)
    monkeypatch.setattr(torch.Tensor, "sigmoid", forbidden)
    monkeypatch.setattr(F, "sigmoid", forbidden)
    images, targets = _batch()
    model.train()
    losses = model(images, targets, generator=torch.Generator().manual_seed(0)).losses
    assert set(losses) == {"loss_rpn_kl", "loss_rcnn_cls", "loss_rcnn_box"}
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out.detections) == 2
    # the guard does catch a sigmoid: the baseline RPN scores proposals with one
    baseline = build_faster_rcnn(_base()).eval()
    with pytest.raises(AssertionError, match="sigmoid"), torch.no_grad():
        baseline(images)


def test_proposal_scores_are_the_log_objectness_of_their_anchors(model):
    images, out, recorder = _traced_eval(model)
    for i in range(2):
        record = recorder.images[i]["rpn_proposals"]
        assert record["sigma"].shape == (record["boxes"].shape[0], 4) and record["sigma"].dtype == torch.float16
        expected = -torch.log(out.raw["proposal_fields"][i]["sigma"]).sum(dim=1)
        assert torch.allclose(record["scores"], expected, atol=1e-5)
        assert torch.allclose(record["scores"], -torch.log(record["sigma"].float()).sum(dim=1), atol=5e-3)
        assert torch.equal(out.raw["proposal_scores"][i], record["scores"])
        assert torch.equal(out.raw["proposal_fields"][i]["sigma"].half(), record["sigma"])
        assert bool((record["scores"][:-1] >= record["scores"][1:]).all())
    # the best candidates overall: the top proposal holds the batch's highest log objectness
    flat = flatten_levels(out.raw["rpn_log_var"], model.rpn.anchor_generator.num_anchors_per_location())
    assert float(out.raw["proposal_scores"][0][0]) <= float(log_objectness(flat[0]).max()) + 1e-6


def test_builder_swaps_only_the_rpn_head_scoring_and_loss():
    torch.manual_seed(0)
    kl = build_model(_config(), num_classes=2)
    base = build_faster_rcnn(_base())
    kl_keys = {k for k in kl.state_dict() if not k.startswith("rpn.head.")}
    base_keys = {k for k in base.state_dict() if not k.startswith("rpn.head.")}
    assert kl_keys == base_keys
    assert type(kl.rpn.anchor_generator) is type(base.rpn.anchor_generator)
    assert kl.rpn.matcher == base.rpn.matcher and kl.rpn.sampler == base.rpn.sampler
    assert kl.rpn.settings == base.rpn.settings and kl.rpn.box_coder == base.rpn.box_coder
    # parameters: the objectness conv (A outputs) is replaced by log_var (4A): +3A (C + 1)
    added = sum(p.numel() for p in kl.parameters()) - sum(p.numel() for p in base.parameters())
    assert added == 3 * 3 * (32 + 1)


def test_second_stage_losses_are_ten_times_the_baselines():
    images, targets = _batch()
    torch.manual_seed(0)
    kl = build_model(_config(), num_classes=2).train()
    unweighted = build_model(_config(rcnn_loss_weight=1.0), num_classes=2).train()
    unweighted.load_state_dict(kl.state_dict())
    with torch.no_grad():
        a = kl(images, targets, generator=torch.Generator().manual_seed(4)).losses
        b = unweighted(images, targets, generator=torch.Generator().manual_seed(4)).losses
    assert float(a["loss_rpn_kl"]) == pytest.approx(float(b["loss_rpn_kl"]))
    for key in ("loss_rcnn_cls", "loss_rcnn_box"):
        assert float(a[key]) == pytest.approx(10.0 * float(b[key]), rel=1e-5)


def test_a_few_adam_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    net = build_model(_config(rcnn_loss_weight=1.0), num_classes=2).train()
    images, targets = _batch()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        out = net(images, targets, generator=torch.Generator().manual_seed(0))
        total = out.total_loss()
        losses.append(float(total.detach()))
        opt.zero_grad()
        total.backward()
        opt.step()
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.1
    assert float(out.losses["loss_rpn_kl"].detach()) < losses[0]


def test_uncertainty_maps_come_with_eval_outputs_and_cover_the_original_image(model):
    images, out, recorder = _traced_eval(model)
    cfg = _config()
    sigma_min, sigma_max = math.exp(0.5 * cfg.log_var_min), math.exp(0.5 * cfg.log_var_max)
    for i, image in enumerate(images):
        maps = out.raw["uncertainty_maps"][i]
        height, width = image.shape[-2:]
        cell = maps["cell_size"].tolist()
        rows, cols = maps["sigma_mean"].shape
        # the grid covers the image and no more than one cell beyond it
        assert rows * cell[0] >= height - 1e-3 and (rows - 1) * cell[0] < height
        assert cols * cell[1] >= width - 1e-3 and (cols - 1) * cell[1] < width
        assert record_map_pixels(maps, "sigma_mean", (height, width)).shape == (height, width)
        stored = {k: v for k, v in maps.items() if k.endswith(tuple(f"_level{n}" for n in range(5)))}
        assert stored and all(v.dtype == torch.float16 for v in stored.values())
        sigma = maps["sigma_mean"]
        assert bool((sigma >= sigma_min * (1 - 1e-3)).all()) and bool((sigma <= sigma_max * (1 + 1e-3)).all())
        assert maps["level"].dtype == torch.int64 and int(maps["level"].max()) < 5
        recorded = recorder.images[i]["uncertainty_map"]
        assert set(recorded) == set(maps.keys()) and torch.equal(recorded["sigma_mean_level0"], maps["sigma_mean_level0"])


def test_uncertainty_map_values_by_hand():
    # one level, stride 4 on a 8 x 8 padded input, 2 anchors per location; cells of 2 x 2 px
    log_var = torch.zeros(1, 8, 2, 2)
    log_var[0, 0:4, 0, 0] = -1.0  # anchor 0 at (0, 0): log objectness 2, sigma e^-0.5
    log_var[0, 4:8, 0, 0] = 1.0  # anchor 1 at (0, 0): -2, not the best one
    log_var[0, 0:4, 1, 1] = 2.0  # both anchors at (1, 1), centre (4, 4): -4, sigma e
    log_var[0, 4:8, 1, 1] = 2.0
    maps = uncertainty_maps([log_var], [2], (8, 8), [(8, 8)], [(8, 8)])[0]
    assert float(maps["priority"][0, 0]) == 2.0 and float(maps["priority"][3, 3]) == -4.0
    # location (1, 1) owns [2, 6) x [2, 6) and, the last one, everything past it
    assert float(maps["priority"][1, 1]) == -4.0 and float(maps["priority"][0, 3]) == 0.0
    assert float(maps["sigma_mean"][0, 0]) == pytest.approx(math.exp(-0.5), rel=1e-3)
    assert float(maps["sigma_mean"][1, 1]) == pytest.approx(math.e, rel=1e-3)
    # the image fills only the top-left 4 x 6 of the padded input; the original is 8 x 12
    maps = uncertainty_maps([log_var], [2], (8, 8), [(4, 6)], [(8, 12)])[0]
    assert maps["sigma_mean"].shape == (2, 3) and maps["cell_size"].tolist() == [4.0, 4.0]
    pixels = record_map_pixels(maps, "sigma_mean", (8, 12))
    assert pixels[0, 0] == pytest.approx(math.exp(-0.5), rel=1e-3) and pixels[0, 11] == pytest.approx(1.0)
    assert pixels[4, 4] == pytest.approx(math.e, rel=1e-3) and pixels[7, 11] == pytest.approx(math.e, rel=1e-3)


def test_uncertainty_maps_are_optional():
    torch.manual_seed(0)
    net = build_model(dataclasses.replace(_config(), uncertainty_maps=False), num_classes=2).eval()
    with torch.no_grad():
        out = net(_batch()[0])
    assert "uncertainty_maps" not in out.raw and len(out.detections) == 2


def test_detections_carry_the_sigma_of_their_proposal(model):
    images, _ = _batch()
    model.eval()
    with torch.no_grad():
        out = model(images)
    for det, fields in zip(out.detections, out.raw["proposal_fields"]):
        assert set(det.extras) == {"sigma"} and det.extras["sigma"].shape == (len(det), 4)
        assert len(det) > 0
        # every detection's sigma is one of its image's proposals' sigma rows
        matches = (det.extras["sigma"][:, None, :] == fields["sigma"][None]).all(dim=2)
        assert bool(matches.any(dim=1).all())


def test_select_detections_reports_the_roi_of_each_detection():
    from workbench.modeling import select_detections

    # 3 RoIs x (background + 2 classes); only RoI 2 / class 1 and RoI 0 / class 2 pass 0.5
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [40.0, 40.0, 60.0, 60.0]])
    boxes = boxes[:, None, :].expand(3, 3, 4)
    scores = torch.tensor([[0.1, 0.2, 0.7], [0.6, 0.2, 0.2], [0.1, 0.8, 0.1]])
    det = select_detections(boxes, scores, (100, 100), 0.5, 0.5, 10, 0.0, with_roi_index=True)
    assert det.labels.tolist() == [1, 2] and det.extras["roi_index"].tolist() == [2, 0]
    plain = select_detections(boxes, scores, (100, 100), 0.5, 0.5, 10, 0.0)
    assert plain.extras == {} and torch.equal(plain.boxes, det.boxes)
