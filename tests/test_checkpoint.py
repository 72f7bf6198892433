"""Atomic checkpoint writes and safe loading."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from snnexp.errors import CheckpointError
from snnexp.training.checkpoint import FORMAT, atomic_save, load_checkpoint


def _ckpt(value: float) -> dict:
    return {"format": FORMAT, "model": {"w": torch.full((3,), value)}, "config": {"a": 1}}


def test_roundtrip_plain_data(tmp_path: Path) -> None:
    path = atomic_save(_ckpt(1.0), tmp_path / "last.pt")
    state = load_checkpoint(path)
    assert torch.equal(state["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


def test_interrupted_write_leaves_previous_file_intact(tmp_path: Path) -> None:
    """A writer killed in the middle of torch.save leaves the old checkpoint complete."""
    path = tmp_path / "last.pt"
    atomic_save(_ckpt(1.0), path)
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal, torch
        from snnexp.training import checkpoint as c
        real_save = torch.save
        def dying_save(obj, fh, *a, **k):
            fh.write(b"PK partial bytes of a checkpoint that never finishes")
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        c.atomic_save({{"format": "{FORMAT}", "model": {{"w": torch.zeros(3)}}}}, {str(path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    assert path.read_bytes() == before
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))


def test_truncated_checkpoint_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    atomic_save(_ckpt(1.0), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(path)


class _Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.target}",))


def test_pickled_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "model": {}, "config": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    # and a plain pickle file (not a torch zip) is refused without running either
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an snnexp checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with zipfile.ZipFile(tmp_path / "zip.pt", "w") as zf:
        zf.writestr("x", "y")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "zip.pt")


def test_stop_signal_after_the_rename_still_counts_the_new_file(tmp_path, monkeypatch) -> None:
    """A stop landing in the directory fsync after the rename: the bookkeeping callback has run,
    so a stopped run reports the checkpoint that is really on disk (not "none written")."""
    from snnexp.training import checkpoint as ckpt

    def interrupted(_directory) -> None:
        raise KeyboardInterrupt  # what a SIGTERM handler raises at that moment

    monkeypatch.setattr(ckpt, "_fsync_dir", interrupted)
    path = tmp_path / "last.pt"
    seen: list[bool] = []
    with pytest.raises(KeyboardInterrupt):
        ckpt.atomic_save({"epoch": 3}, path, on_replaced=lambda: seen.append(path.is_file()))
    assert seen == [True]
    assert torch.load(path)["epoch"] == 3
    assert not list(tmp_path.glob("*.tmp"))
