"""The arrays behind Libra R-CNN's figures (the figures themselves are in ``workbench.viz``):

- :func:`loss_curves`: balanced L1 and smooth L1 and their gradients against ``|x|`` (paper
  Fig. 5);
- :func:`negative_ious`: the best IoU of every negative candidate of a box stage, and of those a
  random and an IoU-balanced sampler pick from the same candidates (paper section 3.1, the
  share of hard negatives above IoU 0.05); :func:`model_proposals` gives the candidates of a
  model; :func:`recorded_negative_ious` gives the same three sets from the records a run wrote
  while training (``trace_sampling_every``), the candidates the box stage actually sampled;
- :func:`level_magnitudes`: the mean absolute activation of every pyramid level before and
  after the balanced feature pyramid.

Conventions: images are ``(3, H, W)`` in ``[0, 1]``; targets carry ``boxes`` (G, 4) xyxy in the
images' pixels and ``labels``; proposals and the targets returned with them are in the
network-input pixels of the model that made them.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from workbench.losses import balanced_l1, smooth_l1
from workbench.modeling.assignment import IoUMatcher, Matcher, RandomSampler
from workbench.modeling.balanced_pyramid import find_balanced_pyramid
from workbench.modeling.box_stages import append_gt
from workbench.modeling.transform import rescale_boxes

from workbench.methods.libra.model import IoUBalancedSampler

#: Names of the three sets :func:`negative_ious` returns.
ALL, RANDOM, IOU_BALANCED = "all negatives", "random sampling", "IoU-balanced sampling"


def error_grid(x_max: float = 3.0, num: int = 301) -> np.ndarray:
    """``num`` evenly spaced errors ``|x|`` from 0 to ``x_max``: the x axis of the loss figure."""
    return np.linspace(0.0, x_max, num)


def loss_curves(
    x: Sequence[float] | np.ndarray,
    *,
    settings: Sequence[tuple[float, float]] = ((0.5, 1.5),),
    beta: float = 1.0,
    smooth_l1_beta: float = 1.0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Loss and gradient at each ``|x|`` (x >= 0): ``name -> (loss, d loss / dx)``, for smooth
    L1 (``smooth_l1_beta``) and balanced L1 at every ``(alpha, gamma)`` of ``settings`` with the
    knee at ``beta``. The gradients come from autograd (float64)."""
    grid = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if bool((grid < 0).any()):
        raise ValueError("loss_curves plots against |x|: give x >= 0")
    functions = {f"smooth L1 (beta {smooth_l1_beta:g})": lambda v: smooth_l1(v, torch.zeros_like(v), beta=smooth_l1_beta)}
    for alpha, gamma in settings:
        functions[f"balanced L1 (alpha {alpha:g}, gamma {gamma:g})"] = (
            lambda v, a=alpha, g=gamma: balanced_l1(v, torch.zeros_like(v), alpha=a, gamma=g, beta=beta)
        )
    curves = {}
    for name, function in functions.items():
        v = grid.clone().requires_grad_(True)
        loss = function(v)
        (grad,) = torch.autograd.grad(loss.sum(), v)
        curves[name] = (loss.detach().numpy(), grad.numpy())
    return curves


def balanced_l1_settings(
    run_dir: str | None = None,
    settings: Sequence[Sequence[float]] | None = None,
    beta: float | None = None,
) -> tuple[tuple[tuple[float, float], ...], float]:
    """The ``(alpha, gamma)`` pairs and ``beta`` the loss figure shows: those given, else the
    run's balanced L1 settings (a run whose model config has ``alpha`` / ``gamma`` / ``beta``),
    else the paper's ``(0.5, 1.5)`` and ``beta = 1``."""
    pairs: tuple[tuple[float, float], ...] = ((0.5, 1.5),)
    knee = 1.0
    if run_dir is not None:
        from workbench.engine.loading import load_run_config

        model = load_run_config(run_dir).model
        if all(hasattr(model, name) for name in ("alpha", "gamma", "beta")):
            pairs, knee = ((float(model.alpha), float(model.gamma)),), float(model.beta)
    if settings is not None:
        pairs = tuple((float(a), float(g)) for a, g in settings)
    return pairs, (knee if beta is None else float(beta))


def negative_ious(
    proposals: Sequence[Tensor],
    targets: Sequence[Mapping[str, Tensor]],
    *,
    matcher: Matcher = IoUMatcher(0.5, 0.5),
    num_samples: int = 512,
    positive_fraction: float = 0.25,
    num_bins: int = 3,
    add_gt: bool = True,
    generator: torch.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Best IoU with any GT of the negatives of each image's candidates (its proposals, then its
    GT boxes when ``add_gt``), over all images: ``{ALL: every negative, RANDOM: those
    :class:`~workbench.modeling.assignment.RandomSampler` picks, IOU_BALANCED: those
    :class:`~workbench.methods.libra.model.IoUBalancedSampler` (instance-balanced positives, K =
    ``num_bins``) picks}``. Both samplers see the same assignment and draw ``num_samples`` with
    at most ``positive_fraction`` positives, as a box stage does."""
    random_sampler = RandomSampler(num_samples, positive_fraction)
    balanced_sampler = IoUBalancedSampler(num_samples, positive_fraction, num_bins)
    out: dict[str, list[np.ndarray]] = {ALL: [], RANDOM: [], IOU_BALANCED: []}
    for boxes, target in zip(proposals, targets):
        candidates = append_gt(boxes, target) if add_gt else boxes
        gt_boxes = target["boxes"].to(candidates.dtype)
        assignment = matcher(candidates, gt_boxes, target["labels"], target.get("ignore"))
        iou = assignment.max_iou.detach().cpu()
        negative = (assignment.labels == 0).cpu()
        out[ALL].append(iou[negative].numpy())
        for name, sampler in ((RANDOM, random_sampler), (IOU_BALANCED, balanced_sampler)):
            _, neg = sampler(assignment, generator)
            out[name].append(iou[neg.cpu()].numpy())
    return {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in out.items()}


def recorded_negative_ious(run_dir: str | Path, *, min_step: int = 0) -> dict[str, np.ndarray] | None:
    """The three sets of :func:`negative_ious` from a run's training-time sampling records
    (:mod:`workbench.engine.sampling_trace`) of steps ``min_step`` on: every negative the box
    stage was given, those its own sampler picked (named :data:`IOU_BALANCED` when it is the
    IoU-balanced sampler, else by its class) and those the random sampler of the comparison
    picked from the same assignment. A run that samples at random (the baseline) gives its own
    picks as :data:`RANDOM` and no comparison. ``None`` when the run recorded no sampling."""
    from workbench.inspection.sampling import (
        ALL_NEGATIVES,
        RANDOM_SAMPLER,
        STAGE_SAMPLER,
        load_sampling_traces,
        sampled_negative_ious,
    )

    traces = load_sampling_traces(run_dir)
    if traces is None:
        return None
    sampler = str(traces.meta.get("sampler", ""))
    own = IOU_BALANCED if sampler.startswith(IoUBalancedSampler.__name__) else f"the run's sampler ({sampler.split('(')[0]})"
    ious = sampled_negative_ious(traces, min_step=min_step)
    if sampler.startswith(f"{RandomSampler.__name__}("):
        return {ALL: ious[ALL_NEGATIVES], RANDOM: ious[STAGE_SAMPLER]}
    return {ALL: ious[ALL_NEGATIVES], RANDOM: ious[RANDOM_SAMPLER], own: ious[STAGE_SAMPLER]}


def model_proposals(
    model: nn.Module,
    images: Sequence[Tensor],
    targets: Sequence[Mapping[str, Tensor]],
    *,
    training_settings: bool = False,
) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """A two-stage model's RPN proposals after NMS for ``images`` (no gradient) and the targets
    rescaled to the same network-input pixels: ``(proposals per image (P_i, 4), targets)``.

    ``training_settings``: select proposals as in training (the RPN's ``*_train`` top-n
    settings: the candidates the box stage samples from), with batch norm kept in evaluation
    mode so no running statistic changes; otherwise the test-time settings. The model is left
    in the mode it was in."""
    was_training = model.training
    model.train(training_settings)
    if training_settings:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    try:
        with torch.no_grad():
            out = model(list(images), list(targets), generator=torch.Generator().manual_seed(0))
    finally:
        model.train(was_training)
    scaled = []
    for target, size, original in zip(targets, out.raw["image_sizes"], out.raw["original_sizes"]):
        scaled.append({**target, "boxes": rescale_boxes(target["boxes"], original, size)})
    return [p.detach() for p in out.raw["proposals"]], scaled


def box_stage_sampling(model: nn.Module) -> dict[str, Any]:
    """The first box stage's matcher and sample size of a two-stage model (and its number of
    IoU bins when it samples with :class:`IoUBalancedSampler`), as keywords of
    :func:`negative_ious`, so both samplers draw what that stage draws."""
    stage = model.roi_heads.stages[0]
    sampler = stage.sampler
    settings = {"matcher": stage.matcher, "num_samples": sampler.num_samples,
                "positive_fraction": sampler.positive_fraction, "add_gt": stage.add_gt_to_proposals}
    if isinstance(sampler, IoUBalancedSampler):
        settings["num_bins"] = sampler.num_bins
    return settings


def level_magnitudes(model: nn.Module, images: Sequence[Tensor]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per pyramid level, the mean absolute activation entering and leaving the model's balanced
    feature pyramid: ``(level names, before (L,), after (L,))``, averaged over the padded batch
    of ``images`` (padding included). Raises ``ValueError`` for a model without one."""
    pyramid = find_balanced_pyramid(model)
    if pyramid is None:
        raise ValueError("the model has no balanced feature pyramid")
    seen: dict[str, Any] = {}

    def hook(_module, inputs, output):
        seen["before"], seen["after"] = inputs[0], output

    handle = pyramid.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            batch, _ = model.transform(list(images), None, None)
            model.backbone(batch.tensor)
    finally:
        handle.remove()
        model.train(was_training)
    names = list(seen["before"])
    before = np.array([float(seen["before"][n].abs().mean()) for n in names])
    after = np.array([float(seen["after"][n].abs().mean()) for n in names])
    return names, before, after


@dataclass
class FigureInputs:
    """A model and a few images with their targets to compute the figures on: ``source`` says
    which (a run's checkpoint or a freshly built model); ``two_stage``: whether the model has a
    box stage (the sampling figure needs one); ``has_pyramid``: whether it has a balanced
    feature pyramid (the feature figure needs one)."""

    model: nn.Module
    images: list[Tensor]
    targets: list[dict[str, Tensor]]
    source: str

    @property
    def two_stage(self) -> bool:
        return hasattr(self.model, "roi_heads")

    @property
    def has_pyramid(self) -> bool:
        return find_balanced_pyramid(self.model) is not None


def dataset_inputs(dataset: Any, num_images: int, device: str | torch.device = "cpu") -> tuple[list[Tensor], list[dict]]:
    """The first ``num_images`` samples of ``dataset`` as model inputs: float images in
    ``[0, 1]`` and target dicts, on ``device``."""
    from workbench.data.collate import collate_samples
    from workbench.engine.inference import images_to_model_input, targets_to_device

    batch = collate_samples([dataset[i] for i in range(min(num_images, len(dataset)))])
    device = torch.device(device)
    return images_to_model_input(batch.images, device), targets_to_device(batch.targets, device)


def figure_inputs(
    run_dir: str | None = None, *, method: str = "libra_rcnn", num_images: int = 4, **options: Any
) -> FigureInputs:
    """The model and images the figures are computed on: the first ``num_images`` images and
    the model of :func:`workbench.engine.loading.figure_model` (``options``: its ``data``,
    ``split``, ``min_size``, ``seed``, ``device`` and ``which``): with ``run_dir`` the run's
    checkpoint on its split, without it a freshly built ``method``
    (:func:`~workbench.engine.loading.untrained_model`) whose untrained RPN gives random
    proposals."""
    from workbench.engine.loading import figure_model

    opened = figure_model(run_dir, method=method, **options)
    images, targets = dataset_inputs(opened.dataset, num_images, opened.device)
    return FigureInputs(opened.model, images, targets, opened.source)


def untrained_model(method: str = "libra_rcnn", num_classes: int = 3, **base_overrides: Any) -> nn.Module:
    """:func:`workbench.engine.loading.untrained_model` with Libra R-CNN's defaults: what the
    figures show before any run exists."""
    from workbench.engine import loading

    return loading.untrained_model(method, num_classes, **base_overrides)


__all__ = [
    "ALL",
    "FigureInputs",
    "dataset_inputs",
    "error_grid",
    "figure_inputs",
    "IOU_BALANCED",
    "RANDOM",
    "balanced_l1_settings",
    "box_stage_sampling",
    "level_magnitudes",
    "loss_curves",
    "model_proposals",
    "negative_ious",
    "recorded_negative_ious",
    "untrained_model",
]
