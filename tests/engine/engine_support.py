"""A small Faster R-CNN training config so training tests take seconds on two cores."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from workbench.config import DataConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from workbench.methods.faster_rcnn import tiny_model


def small_config(data_root: Path, epochs: int = 2, **changes) -> TrainConfig:
    model = dataclasses.replace(
        tiny_model(),
        fpn_channels=32,
        min_size=96,
        max_size=96,
        box_representation_size=64,
        rpn_pre_nms_top_n_train=200,
        rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=100,
        box_batch_size_per_image=32,
    )
    cfg = TrainConfig(
        method="faster_rcnn",
        preset="test",
        model=model,
        data=DataConfig(spec=str(data_root)),
        optimizer=OptimizerConfig(name="sgd", lr=0.01, reference_batch_size=2),
        schedule=ScheduleConfig(epochs=epochs, warmup_iters=2, decay="cosine"),
        batch_size=2,
        log_every_steps=1,
        seed=7,
    )
    return dataclasses.replace(cfg, **changes)
