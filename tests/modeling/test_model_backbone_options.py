import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from workbench.errors import ConfigError
from workbench.modeling import build_backbone


def test_returned_layers_choose_the_fpn_levels_and_their_strides():
    backbone = build_backbone("resnet18_fpn", fpn_channels=32, returned_layers=(2, 3, 4))
    assert backbone.feature_names == ("0", "1", "2", "pool")
    assert backbone.strides == (8, 16, 32, 64)
    feats = backbone(torch.zeros(1, 3, 128, 128))
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(16, 16), (8, 8), (4, 4), (2, 2)]


def test_trainable_batch_norm_for_training_from_scratch():
    bn = build_backbone("resnet18_fpn", norm="bn", trainable_layers=5)
    frozen = build_backbone("resnet18_fpn")
    assert any(isinstance(m, nn.BatchNorm2d) for m in bn.modules())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in bn.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    assert all(p.requires_grad for n, p in bn.body.named_parameters())


@pytest.mark.parametrize("bad", [(), (0, 1), (3, 2), (2, 2)])
def test_bad_returned_layers_are_a_config_error(bad):
    with pytest.raises(ConfigError, match="returned_layers"):
        build_backbone("resnet18_fpn", returned_layers=bad)


def test_unknown_norm_is_a_config_error():
    with pytest.raises(ConfigError, match="norm"):
        build_backbone("resnet18_fpn", norm="group")
