"""Loss rescaling by uncertainty inference: the convBayes branch, correctness, the rescaled loss
against hand-computed terms, the paper's rows as switches, per-detection uncertainty and the
traced maps."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from workbench import records as R
from workbench.errors import ConfigError
from workbench.losses.bald import bald, difficulty
from workbench.methods import uncertainty
from workbench.methods.uncertainty.analysis import anchor_bald
from workbench.methods.uncertainty.model import (
    UncertaintyDetector,
    UncertaintyHead,
    UncertaintyLoss,
    UncertaintyRescalingConfig,
    anchor_correct,
    build_model,
    cell_maps,
)
from workbench.methods.yolov3.losses import YOLOLoss, YOLOTargets
from workbench.methods.yolov3.model import YOLOv3Config, YOLOv3Detector
from workbench.modeling import TraceRecorder
from workbench.modeling.conv_bayes import ConvBayes

from detector_support import one_thread  # noqa: F401 (autouse)
from detector_support import three_box_batch as _batch

BASE = YOLOv3Config(num_classes=3, darknet_width=0.125, neck_channels=(16, 32, 64), size=128)


def _model(row: str = "method"):
    torch.manual_seed(0)
    return build_model(uncertainty.row_model(row, BASE), 3)


# -------------------------------------------------------------------------------- the branch


def test_the_branch_is_a_convbayes_beside_objectness_with_per_anchor_moments():
    head = UncertaintyHead((8, 16), 3, 2, 0.01, "bayes", lam=0.5, num_samples=4)
    assert all(isinstance(layer, ConvBayes) and layer.out_channels == 3 for layer in head.aux)
    features = [torch.randn(2, 8, 6, 6), torch.randn(2, 16, 3, 3)]
    out = head.eval()(features)
    for layer, f, mu, sigma, logits in zip(head.aux, features, out["aux_mu"], out["aux_sigma"], out["aux_logits"]):
        expected_mu, expected_sigma = layer.moments(f)
        torch.testing.assert_close(mu, expected_mu)
        torch.testing.assert_close(sigma, expected_sigma)
        torch.testing.assert_close(logits, mu)  # evaluation: the mean
    head.train()
    torch.manual_seed(7)
    out = head(features)
    torch.manual_seed(7)
    eps = torch.randn((4, *out["aux_mu"][0].shape))
    torch.testing.assert_close(out["aux_logits"][0], (out["aux_mu"][0] + eps * out["aux_sigma"][0]).mean(0))
    plain = UncertaintyHead((8,), 3, 2, 0.01, "conv", lam=1.0, num_samples=1)
    assert set(plain(features[:1])) == {"obj_logits", "cls_logits", "deltas", "aux_logits"}


def test_correct_means_true_positive_or_true_negative_at_one_half():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0, 0.0]])
    positive = torch.tensor([[True, True, False, False, True]])
    assert anchor_correct(logits, positive).tolist() == [[True, False, False, True, False]]


# ---------------------------------------------------------------------------------- the loss


def _flat_preds():
    g = torch.Generator().manual_seed(2)
    preds = {
        "obj_logits": torch.randn(1, 5, 1, generator=g) * 2,
        "cls_logits": torch.randn(1, 5, 2, generator=g),
        "deltas": torch.randn(1, 5, 4, generator=g),
        "aux_mu": torch.randn(1, 5, 1, generator=g),
        "aux_sigma": torch.rand(1, 5, 1, generator=g) * 2,
        "aux_logits": torch.randn(1, 5, 1, generator=g),
    }
    labels = torch.tensor([[1, 0, 0, -1, 2]])
    targets = YOLOTargets(labels, torch.rand(1, 5, 4, generator=g), torch.full((1, 5), 1.5) * (labels > 0),
                          labels > 0, labels == 0)
    return preds, targets


def test_the_objectness_loss_is_rescaled_by_d_and_the_branch_trained_on_its_own():
    preds, targets = _flat_preds()
    per = YOLOLoss().per_anchor(preds, targets)
    u = bald(preds["aux_mu"][..., 0], preds["aux_sigma"][..., 0])
    correct = (torch.sigmoid(preds["obj_logits"][..., 0]) > 0.5) == targets.positive
    d = difficulty(u, correct)
    got = UncertaintyLoss(YOLOLoss())(preds, targets)
    torch.testing.assert_close(got["loss_yolo_obj"], (d * per["obj"]).sum())
    torch.testing.assert_close(got["loss_yolo_cls"], per["cls"].sum())
    torch.testing.assert_close(got["loss_yolo_box"], per["box"].sum())
    sampled = torch.tensor([[True, True, True, False, True]])
    aux = F.binary_cross_entropy_with_logits(preds["aux_logits"][..., 0], targets.positive.float(), reduction="none")
    torch.testing.assert_close(got["loss_yolo_aux"], aux[sampled].sum())
    with_positives = UncertaintyLoss(YOLOLoss(), rescale_positive_terms=True)(preds, targets)
    torch.testing.assert_close(with_positives["loss_yolo_cls"], (d * per["cls"]).sum())
    torch.testing.assert_close(with_positives["loss_yolo_box"], (d * per["box"]).sum())
    unscaled = UncertaintyLoss(YOLOLoss(), rescale=False)(preds, targets)
    torch.testing.assert_close(unscaled["loss_yolo_obj"], per["obj"].sum())


def test_no_gradient_flows_through_d():
    preds, targets = _flat_preds()
    preds = {k: v.clone().requires_grad_(True) for k, v in preds.items()}
    UncertaintyLoss(YOLOLoss())(preds, targets)["loss_yolo_obj"].backward()
    assert preds["aux_mu"].grad is None and preds["aux_sigma"].grad is None
    # the gradient of the objectness logits is D times that of the unscaled loss
    plain = {k: v.detach().clone().requires_grad_(k == "obj_logits") for k, v in preds.items()}
    YOLOLoss().per_anchor(plain, targets)["obj"].sum().backward()
    _, _, d = uncertainty.model.anchor_difficulty(preds, targets.positive)
    torch.testing.assert_close(preds["obj_logits"].grad[..., 0], d * plain["obj_logits"].grad[..., 0])


# ---------------------------------------------------------------------------------- the rows


def test_the_rows_are_switches():
    images, targets = _batch()
    keys = {}
    for row in uncertainty.ROWS:
        model = _model(row).train()
        out = model(images, targets)
        keys[row] = set(out.losses)
        out.total_loss().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None), row
    base_keys = {"loss_yolo_obj", "loss_yolo_cls", "loss_yolo_box"}
    assert keys["baseline"] == keys["obj_focal"] == keys["obj_anchor"] == base_keys
    assert keys["method"] == keys["convbayes"] == keys["conv"] == base_keys | {"loss_yolo_aux"}
    assert isinstance(_model("method"), UncertaintyDetector) and isinstance(_model("conv"), YOLOv3Detector)
    assert uncertainty.row_model("obj_anchor", BASE).base.objectness_loss == "anchor"
    assert uncertainty.row_model("obj_focal", BASE).base.objectness_loss == "focal"
    cfg = uncertainty.row_model("method", BASE)
    assert cfg.branch == "bayes" and cfg.rescale and not uncertainty.row_model("convbayes", BASE).rescale
    with pytest.raises(ConfigError, match="convBayes"):
        UncertaintyRescalingConfig(branch="conv", rescale=True)


def test_the_presets():
    assert set(uncertainty.PRESETS) == {"tiny", "darknet53_608_voc", "tiny_baseline", "tiny_obj_focal",
                                        "tiny_obj_anchor", "tiny_convbayes", "tiny_conv"}
    tiny = uncertainty.tiny()
    assert tiny.method == "uncertainty_rescaling" and tiny.model.branch == "bayes" and tiny.model.rescale
    from workbench.methods import yolov3

    assert tiny.model.base == yolov3.tiny().model and tiny.optimizer == yolov3.tiny().optimizer
    assert uncertainty.PRESETS["tiny_conv"]().model.branch == "conv"
    voc = uncertainty.darknet53_608_voc()
    assert voc.model.base.size == 608 and voc.metric == "voc07" and voc.schedule == yolov3.darknet53_608_voc().schedule


# ------------------------------------------------------------------------ seeing the uncertainty


@pytest.fixture(scope="module")
def traced():
    model = _model("method").eval()
    images, targets = _batch()
    recorder = TraceRecorder()
    with torch.no_grad():
        plain = model(images)
        out = model(images, targets, recorder=recorder)
    return model, out, plain, recorder


def test_tracing_changes_no_detection(traced):
    _, out, plain, _ = traced
    for a, b in zip(out.detections, plain.detections):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)
        assert torch.equal(a.extras["uncertainty"], b.extras["uncertainty"])


def test_each_detection_carries_the_bald_of_its_anchor(traced):
    model, out, _, recorder = traced
    for i, det in enumerate(out.detections):
        candidates = recorder.images[i][R.FINAL_CANDIDATES]
        keep = recorder.images[i][R.FINAL_NMS]["keep"][: len(det)]
        anchor = candidates["anchor_index"][keep]
        mu = torch.cat([m[i].permute(1, 2, 0).reshape(-1) for m in out.raw["aux_mu"]])
        sigma = torch.cat([s[i].permute(1, 2, 0).reshape(-1) for s in out.raw["aux_sigma"]])
        torch.testing.assert_close(det.extras["uncertainty"], bald(mu, sigma)[anchor])
        torch.testing.assert_close(recorder.images[i][R.DETECTIONS]["uncertainty"], det.extras["uncertainty"])


def test_the_traced_maps(traced):
    model, out, _, recorder = traced
    for i, size in enumerate(out.raw["image_sizes"]):
        record = recorder.images[i][R.UNCERTAINTY_MAP]
        rows, cols = -(-size[0] // 8), -(-size[1] // 8)
        assert record["bald"].shape == (rows, cols)
        assert "u_bald_stride16" not in record  # recomputed from mu and sigma on reading
        u16 = anchor_bald(record, 16)
        assert u16.shape == (8, 8, 3) and record["mu_stride16"].dtype == record["bald"].dtype == torch.float16
        as_computed = bald(out.raw["aux_mu"][1][i].float(), out.raw["aux_sigma"][1][i].float()).permute(1, 2, 0)
        torch.testing.assert_close(u16, as_computed, rtol=2e-3, atol=2e-3)
        # the stride-16 map: each fine cell takes the most uncertain anchor of its coarse cell
        torch.testing.assert_close(record["bald_stride16"][3, 5].float(), as_computed[1, 2].max(), rtol=2e-3, atol=2e-3)
        stacked = torch.stack([record[f"bald_stride{s}"] for s in (8, 16, 32)])
        torch.testing.assert_close(record["bald"], stacked.max(dim=0).values)
        original = out.raw["original_sizes"][i]
        torch.testing.assert_close(record["cell_size"], torch.tensor([8 * original[0] / size[0], 8 * original[1] / size[1]]))


def test_difficulty_of_training_images_on_request(traced):
    _, out, _, recorder = traced
    positives = 0
    for i in range(2):
        record = recorder.images[i][R.UNCERTAINTY_MAP]
        for s in (8, 16, 32):
            positives += int((record[f"label_stride{s}"] > 0).sum())
            expected = difficulty(anchor_bald(record, s), record[f"correct_stride{s}"])
            torch.testing.assert_close(record[f"difficulty_stride{s}"].float(), expected, rtol=2e-3, atol=2e-3)
            assert torch.equal(record[f"correct_stride{s}"],
                               record[f"predicted_stride{s}"] == (record[f"label_stride{s}"] > 0))
    assert positives == 3  # one anchor per GT
    assert "loss_yolo_obj" in out.losses


def test_cell_maps_by_hand():
    level8 = torch.zeros(3, 4, 4)
    level8[1, 0, 0] = 0.3
    level16 = torch.zeros(3, 2, 2)
    level16[2, 1, 1] = 0.6
    level32 = torch.full((3, 1, 1), 0.1)
    maps = cell_maps([level8, level16, level32], (8, 16, 32), (30, 25))
    assert maps["all"].shape == (4, 4)
    assert float(maps["all"][0, 0]) == pytest.approx(0.3)
    assert float(maps["all"][3, 3]) == pytest.approx(0.6) and float(maps["all"][2, 2]) == pytest.approx(0.6)
    assert float(maps["all"][0, 3]) == pytest.approx(0.1)
    assert float(maps["stride16"][1, 1]) == 0.0


def test_the_declaration_shows_the_bald_map_and_the_detections_uncertainty():
    views = uncertainty.METHOD.views(kind="heatmap")
    shown = [v for v in views if v.app]
    assert [(v.record, v.value, v.field) for v in shown] == [(R.UNCERTAINTY_MAP, "bald", "bald_map")]
    (attribute,) = uncertainty.METHOD.views(kind="attribute")
    assert (attribute.record, attribute.field) == (R.DETECTIONS, "uncertainty")
    assert {"predictions", "suppressed"} <= {v.field for v in uncertainty.METHOD.record_views}


def test_both_methods_are_registered_and_their_configs_round_trip():
    from workbench.config import train_config_from_dict
    from workbench.methods import METHODS, build_preset, get_method

    assert METHODS["yolov3"] == "workbench.methods.yolov3"
    assert METHODS["uncertainty_rescaling"] == "workbench.methods.uncertainty"
    for method in ("yolov3", "uncertainty_rescaling"):
        for preset in get_method(method).presets:
            cfg = build_preset(method, preset)
            assert train_config_from_dict(cfg.to_dict()) == cfg, (method, preset)


def test_the_method_learns_a_painted_box():
    """60 Adam steps on two images with one painted box each: the top detection of each image is
    its box, with the right class."""
    from detector_support import painted_batch

    from workbench.ops import box_iou

    base = dataclasses.replace(BASE, size=96)
    torch.manual_seed(0)
    model = build_model(uncertainty.row_model("method", base), 3)
    images, targets = painted_batch([(96, 96), (96, 96)], [[[20.0, 30.0, 60.0, 80.0]], [[40.0, 10.0, 90.0, 50.0]]],
                                    [[1], [2]])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(60):
        loss = model.train()(images, targets).total_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        out = model.eval()(images)
    for det, target in zip(out.detections, targets):
        assert int(det.labels[0]) == int(target["labels"][0]) and float(det.scores[0]) > 0.5
        assert float(box_iou(det.boxes[:1], target["boxes"])) > 0.8
        assert torch.isfinite(det.extras["uncertainty"]).all()
