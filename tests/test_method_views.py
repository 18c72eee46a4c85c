"""A method's declaration: transforms and trace-record views with their defaults and checks."""

from __future__ import annotations

import dataclasses

import pytest

from workbench import records as R
from workbench.methods import (
    DETECTIONS_VIEW,
    METHODS,
    SINGLE_STAGE_VIEWS,
    TWO_STAGE_VIEWS,
    RecordView,
    build_preset,
    get_method,
    record_views,
)


def test_every_registered_method_declares_views_on_known_records():
    for name in METHODS:
        method = get_method(name)
        assert method.name == name
        kinds = {v.kind for v in method.record_views}
        assert {"boxes", "suppressed"} <= kinds, name
        assert DETECTIONS_VIEW in method.record_views, name
        for view in method.record_views:
            assert view.record in R.ALL_RECORDS, (name, view.record)
            assert view.label, (name, view.field)


def test_defaults_are_the_two_stage_baseline():
    baseline = get_method("faster_rcnn")
    assert baseline.record_views == TWO_STAGE_VIEWS
    assert baseline.eval_transforms is None and baseline.evaluation_transforms(build_preset("faster_rcnn", "tiny")) is None
    transform = baseline.training_transforms(build_preset("faster_rcnn", "tiny"))
    assert callable(transform)
    assert record_views("no-such-method") == TWO_STAGE_VIEWS and record_views(None) == TWO_STAGE_VIEWS
    assert R.PROPOSALS not in {v.record for v in SINGLE_STAGE_VIEWS}


def test_declared_transforms_are_built_from_the_config():
    seen = []
    method = dataclasses.replace(get_method("faster_rcnn"), train_transforms=lambda cfg: seen.append(cfg) or "train",
                                 eval_transforms=lambda cfg: "eval")
    cfg = build_preset("faster_rcnn", "tiny")
    assert method.training_transforms(cfg) == "train" and seen == [cfg]
    assert method.evaluation_transforms(cfg) == "eval"


def test_flip_augmentation_replaces_a_methods_own():
    """``data.augmentation="flip"`` trains any method with the horizontal flip alone: no crop,
    expansion or colour change, so a flipped sample keeps its size, pixels and box count."""
    import torch

    from workbench.config import DataConfig
    from workbench.data.sample import Sample
    from workbench.errors import ConfigError

    cfg = build_preset("refinedet", "tiny")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, augmentation="flip", hflip_prob=1.0))
    transform = get_method("refinedet").training_transforms(cfg)
    image = torch.rand(3, 40, 60)
    sample = Sample(image, torch.tensor([[5.0, 6.0, 25.0, 30.0]]), torch.tensor([2]), torch.tensor([False]), 1,
                    (40, 60), "a.png")
    out = transform(sample)
    torch.testing.assert_close(out.image, image.flip(-1))
    torch.testing.assert_close(out.boxes, torch.tensor([[35.0, 6.0, 55.0, 30.0]]))
    assert torch.equal(out.labels, sample.labels)
    with pytest.raises(ConfigError, match="augmentation"):
        DataConfig(augmentation="mosaic")


def test_views_filter_and_refuse_duplicates():
    heat = RecordView(R.UNCERTAINTY_MAP, "heatmap", field="u", value="v", label="a map", higher="more uncertain")
    method = dataclasses.replace(get_method("faster_rcnn"), record_views=(*TWO_STAGE_VIEWS, heat))
    assert method.views("heatmap") == (heat,)
    assert method.views(record=R.DETECTIONS) == (DETECTIONS_VIEW,)
    assert method.records == (R.DETECTIONS, R.PROPOSALS, R.FINAL_NMS, R.UNCERTAINTY_MAP)
    assert heat.title == "a map (higher: more uncertain)" and heat.layer_name == "u"
    with pytest.raises(ValueError, match="twice"):
        dataclasses.replace(method, record_views=(*method.record_views, heat))
    # the same attribute name on two records is fine; twice on one record is not
    a = RecordView(R.DETECTIONS, "attribute", field="sigma", label="s")
    b = RecordView(R.PROPOSALS, "attribute", field="sigma", label="s")
    dataclasses.replace(method, record_views=(*TWO_STAGE_VIEWS, a, b))
    with pytest.raises(ValueError, match="twice"):
        dataclasses.replace(method, record_views=(*TWO_STAGE_VIEWS, a, a))
