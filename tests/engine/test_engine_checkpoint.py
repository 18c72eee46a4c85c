import pytest
import torch

from workbench.engine import checkpoint
from workbench.errors import WorkbenchError


def test_save_atomic_round_trips(tmp_path):
    path = tmp_path / "ck" / "last.pt"
    checkpoint.save_atomic({"w": torch.arange(5)}, path)
    assert torch.equal(checkpoint.load_checkpoint(path)["w"], torch.arange(5))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"w": torch.ones(3)}, path)

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(OSError):
        checkpoint.save_atomic({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(checkpoint.load_checkpoint(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_truncated_checkpoint_gives_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WorkbenchError, match="last.pt: not a readable checkpoint"):
        checkpoint.load_checkpoint(path)
