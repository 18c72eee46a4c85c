"""Atomic writes: the old content or the whole new one, never a half-written file, never a torn
metrics line, and no temporary file left behind."""

from __future__ import annotations

import json
import os
import tempfile
import threading

import pytest
import torch

from workbench import atomic
from workbench.atomic import (
    append_line_atomic,
    atomic_output,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from workbench.engine.checkpoint import load_checkpoint, save_atomic
from workbench.engine.run_dir import RunDir


def test_writes_creating_parents_and_replaces(tmp_path):
    path = write_text_atomic(tmp_path / "a" / "b" / "state.json", "first\n")
    assert path.read_text() == "first\n"
    write_text_atomic(path, "second\n")
    assert path.read_text() == "second\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_text_atomic(tmp_path / "report.html", "old")
    with pytest.raises(TypeError):
        write_text_atomic(path, b"not text")  # type: ignore[arg-type]
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_a_failure_mid_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = write_bytes_atomic(tmp_path / "shard.npz", b"old content")
    seen = []
    with pytest.raises(RuntimeError, match="disk gone"):
        with atomic_output(path) as f:
            f.write(b"half of the new con")
            f.flush()
            seen.extend(p.name for p in tmp_path.iterdir())
            raise RuntimeError("disk gone")
    # the partial content was really on disk in a temporary beside the target ...
    assert len(seen) == 2 and any(name.startswith(".shard.npz.") and name.endswith(".tmp") for name in seen)
    # ... and is gone; the target is untouched
    assert path.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["shard.npz"]


def test_a_failing_fsync_or_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_text_atomic(tmp_path / "config.json", "old")

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        write_text_atomic(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_write_flushes_and_fsyncs_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    write_text_atomic(tmp_path / "x.txt", "content")
    assert events[:2] == ["fsync", "replace"]


def test_temporary_names_are_unique_and_in_the_target_folder(tmp_path, monkeypatch):
    names = []
    real_mkstemp = tempfile.mkstemp

    def recording_mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        names.append(name)
        return fd, name

    monkeypatch.setattr(atomic.tempfile, "mkstemp", recording_mkstemp)
    for i in range(20):
        write_text_atomic(tmp_path / "same.json", str(i))
    assert len(set(names)) == 20
    assert all(os.path.dirname(n) == str(tmp_path) for n in names)
    assert [p.name for p in tmp_path.iterdir()] == ["same.json"]


def test_concurrent_writers_of_one_path_never_mix_their_contents(tmp_path):
    path = tmp_path / "predictions.json"
    size = 200_000
    contents = {i: (chr(ord("a") + i) * size) for i in range(8)}
    errors = []
    barrier = threading.Barrier(len(contents))

    def writer(i):
        try:
            barrier.wait()
            for _ in range(5):
                write_text_atomic(path, contents[i])
                text = path.read_text()
                # a reader sees exactly one writer's whole content
                assert len(text) == size and len(set(text)) == 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in contents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    final = path.read_text()
    assert final in contents.values()
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.json"]


def test_json_is_built_before_anything_is_written(tmp_path):
    path = write_json_atomic(tmp_path / "eval.json", {"AP": 0.5})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"AP": object()})
    assert json.loads(path.read_text()) == {"AP": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]


def test_appended_lines_from_concurrent_threads_are_whole(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines_per_thread, threads_n = 200, 6

    def appender(i):
        for k in range(lines_per_thread):
            append_line_atomic(path, json.dumps({"thread": i, "k": k, "pad": "x" * (50 * i)}))

    threads = [threading.Thread(target=appender, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    text = path.read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == lines_per_thread * threads_n
    for i in range(threads_n):
        assert [r["k"] for r in records if r["thread"] == i] == list(range(lines_per_thread))


def test_append_refuses_line_breaks(tmp_path):
    with pytest.raises(ValueError):
        append_line_atomic(tmp_path / "m.jsonl", "a\nb")
    assert not (tmp_path / "m.jsonl").exists()


def test_a_short_append_is_cut_back_and_raises(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    append_line_atomic(path, '{"step": 1}')
    real_write = os.write
    monkeypatch.setattr(atomic.os, "write", lambda fd, data: real_write(fd, data[:5]))
    with pytest.raises(OSError, match="partial line was removed"):
        append_line_atomic(path, '{"step": 2}')
    assert path.read_text() == '{"step": 1}\n'


def test_run_dir_writes_are_atomic_and_reads_skip_a_torn_last_line(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create()
    run.write_config({"method": "m", "lr": 0.1})
    assert json.loads(run.config.read_text()) == {"lr": 0.1, "method": "m"}
    run.append_metrics({"kind": "train", "step": 1, "loss": float("nan")})
    run.append_metrics({"kind": "train", "step": 2, "loss": 0.5})
    with run.metrics.open("a") as f:
        f.write('{"kind": "train", "st')  # a process killed inside its write
    assert [r["step"] for r in run.read_metrics()] == [1, 2]
    assert run.read_metrics()[0]["loss"] is None
    run.truncate_metrics_after(1)
    assert run.metrics.read_text() == '{"kind": "train", "loss": null, "step": 1}\n'
    run.write_eval(3, {"AP": 0.25})
    assert json.loads(run.eval_file(3).read_text()) == {"AP": 0.25}
    leftovers = [p for p in run.root.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_a_checkpoint_that_fails_to_serialise_keeps_the_previous_one(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_atomic({"epoch": 1, "w": torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_atomic({"epoch": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_written_files_get_ordinary_permissions_not_mkstemps_private_ones(tmp_path):
    import os
    import stat

    from workbench.atomic import _process_umask, write_text_atomic

    umask = os.umask(0o022)
    _process_umask.cache_clear()
    try:
        new = write_text_atomic(tmp_path / "new.json", "{}")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o640)
        write_text_atomic(kept, "new")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "new"
    finally:
        os.umask(umask)
        _process_umask.cache_clear()
