"""Bad input and faults around the data: damaged cache entries, disk full, read-only cache,
size limits, SIGTERM during a build, gaps, duplicated / mistyped / odd paths, roles."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import snnexp.data.pipeline as pipeline
from snnexp.config.schema import DataConfig, SimConfig
from snnexp.data import cache as C
from snnexp.data.pipeline import build_data, prepare_recording
from snnexp.data.recording import Events, ImuSamples, write_recording
from snnexp.data.simulate import simulate_recording
from snnexp.errors import DataError

SIM = SimConfig(duration_s=4.0, width=48, height=36, seed=21)


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate_recording(SIM, tmp_path_factory.mktemp("rec") / "rec.aedat4")


def config(tmp_path: Path, paths: list, **kw) -> DataConfig:
    kw.setdefault("seq_length", 20)
    return DataConfig(paths=[str(p) for p in paths], cache_dir=str(tmp_path / "cache"), **kw)


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# ----------------------------------------------------------------------------- cache entries
@pytest.mark.parametrize("damage", ["overwrite", "truncate", "old_format", "no_meta_sums"])
def test_a_damaged_or_old_cache_entry_is_rebuilt_with_a_warning(
        rec: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path, [rec])
    good = prepare_recording(rec, cfg)
    expected = good.frames()
    entry = Path(good.meta["cache"])
    events = entry / C.EVENTS
    if damage == "overwrite":  # same size, other bytes (the case a size check misses)
        raw = bytearray(events.read_bytes())
        raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(64)
        events.write_bytes(bytes(raw))
    elif damage == "truncate":
        with open(events, "r+b") as fh:
            fh.truncate(events.stat().st_size // 2)
    else:
        meta = json.loads((entry / C.META).read_text())
        if damage == "old_format":
            meta["format"] = 1
        else:
            meta.pop("checksums")
        (entry / C.META).write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        again = prepare_recording(rec, cfg)
    assert "not usable" in caplog.text and "building it again" in caplog.text
    np.testing.assert_array_equal(again.frames(), expected)  # the rebuilt entry, never the bad one
    assert C.verify(entry, json.loads((entry / C.META).read_text())) is None


def test_read_only_cache_dir_on_a_miss_says_how_to_go_on(rec: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(DataError) as err:
            prepare_recording(rec, DataConfig(paths=[str(rec)], cache_dir=str(ro / "cache")))
    finally:
        ro.chmod(0o755)
    assert "not writable" in one_line(err) and "data.cache=false" in str(err.value)


def test_read_only_cache_dir_message(rec: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path, *a: object, **k: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(DataError) as err:
        prepare_recording(rec, config(tmp_path, [rec]))
    msg = one_line(err)
    assert "not writable" in msg and "data.cache=false" in msg and "data.cache_dir" in msg


def test_a_full_disk_gives_one_line_and_leaves_nothing(rec: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: object, events: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline.SparseWriter, "add", full)
    with pytest.raises(DataError) as err:
        prepare_recording(rec, config(tmp_path, [rec]))
    assert "filled up" in one_line(err) and "data.cache_dir" in str(err.value)
    assert not any(p.name.startswith(rec.stem) or p.name.startswith(".")
                   for p in (tmp_path / "cache").iterdir())


def test_cache_size_is_estimated_before_building(rec: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError) as err:  # 1 us windows: 4 million windows
        prepare_recording(rec, config(tmp_path, [rec], window_us=1, cache_limit_gb=0.05))
    msg = one_line(err)
    assert "about 0.1 GB" in msg and "data.cache_limit_gb=0.05" in msg
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").glob("rec-*"))
    monkeypatch.setattr(C, "free_bytes", lambda d: 1000)
    with pytest.raises(DataError) as err:
        prepare_recording(rec, config(tmp_path, [rec]))
    assert "GB free" in one_line(err) and "data.cache=false" in str(err.value)


_SIGTERM_CHILD = r"""
import sys, time
from pathlib import Path
import snnexp.data.pipeline as pipeline
from snnexp.config.schema import DataConfig
real = pipeline.SparseWriter.add
def slow(self, events):
    real(self, events)
    Path(sys.argv[2]).touch()
    time.sleep(0.5)
pipeline.SparseWriter.add = slow
pipeline.prepare_recording(sys.argv[1], DataConfig(paths=[sys.argv[1]], cache_dir=sys.argv[3]))
"""


def test_sigterm_during_a_cache_build_leaves_no_temporary(rec: Path, tmp_path: Path) -> None:
    marker, cache = tmp_path / "writing", tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", _SIGTERM_CHILD, str(rec), str(marker),
                             str(cache)], env=dict(os.environ, SNNEXP_DECODE_CHECK="0"))
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(p.name.endswith(".tmp") for p in cache.iterdir())  # building now
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM
    assert list(cache.iterdir()) == [cache / C.HASH_DIR]


# ----------------------------------------------------------------------------- recordings
def test_gaps_without_events_are_reported_with_numbers(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    t = np.sort(np.concatenate([rng.integers(0, 1_000_000, 4000),
                                rng.integers(4_000_000, 5_000_000, 4000)]))
    ev = Events(t, rng.integers(0, 32, len(t)), rng.integers(0, 24, len(t)),
                rng.integers(0, 2, len(t)))
    imu_t = np.arange(0, 5_000_001, 1000)
    imu = ImuSamples(imu_t, np.tile([0.0, 0.0, 1.0], (len(imu_t), 1)), np.zeros((len(imu_t), 3)))
    path = write_recording(tmp_path / "gap.aedat4", events=ev, imu=imu, width=32, height=24)
    with caplog.at_level(logging.WARNING):
        prepare_recording(path, config(tmp_path, [path]))
    assert "1 gap(s) without events" in caplog.text and "lasts 3.0 s from 1.0 s" in caplog.text
    text = " ".join(r.getMessage() for r in caplog.records)
    assert re.search(r"(299|300) of its (499|500) windows \(60 %\) are empty", text), text


def test_a_recording_named_bin_is_read_by_its_content(rec: Path, tmp_path: Path) -> None:
    other = tmp_path / "camera_dump.bin"
    shutil.copy(rec, other)
    a = prepare_recording(rec, config(tmp_path, [rec]))
    b = prepare_recording(other, config(tmp_path, [other], cache=False))
    np.testing.assert_array_equal(a.frames(), b.frames())
    np.testing.assert_array_equal(a.labels, b.labels)


def test_only_builtin_recordings_are_simulated(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    typo = tmp_path / "bse.aedat4"
    cfg = DataConfig(paths=[str(typo)], sim=SIM, builtin_dir=str(tmp_path))
    with pytest.raises(DataError) as err:
        build_data(cfg)
    assert str(typo) in one_line(err) and "does not exist" in str(err.value)
    loop = tmp_path / "loop.aedat4"
    os.symlink(loop, loop)
    with pytest.raises(DataError) as err:
        build_data(DataConfig(paths=[str(loop)], sim=SIM, builtin_dir=str(tmp_path)))
    assert "link loop" in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop.aedat4"]  # nothing simulated
    with pytest.raises(DataError, match="builtin:SEED with an integer seed"):
        build_data(DataConfig(paths=["builtin:x"]))


def test_duplicates_folders_globs_and_held_out_lists(rec: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "recs"
    folder.mkdir()
    for name in ("a.aedat4", "b.aedat4"):
        shutil.copy(rec, folder / name)
    (folder / "notes.txt").write_text("not a recording")
    with caplog.at_level(logging.WARNING):
        data = build_data(config(tmp_path, [folder, folder / "a.aedat4"]))
    assert [p.path.name for p in data.prepared] == ["a.aedat4", "b.aedat4"]
    assert "listed twice in data.paths" in caplog.text
    data = build_data(config(tmp_path, [str(folder / "*.aedat4")], split_by="recording",
                             split=[0.5, 0.0, 0.5]), require_sequences=False)
    assert [(p.name, p.group, p.lo) for p in data.test_parts] == [("b.aedat4", "held_out", 0)]
    assert data.num_val_sequences == 0 and data.recordings[1]["role"] == "test"
    with pytest.raises(DataError) as err:
        build_data(config(tmp_path, [folder / "a.aedat4"], test_paths=[str(folder / "a.aedat4")]))
    assert "must not be trained on" in one_line(err)
    with pytest.raises(DataError, match="matches no file"):
        build_data(config(tmp_path, [str(folder / "*.nothing")]))
    with pytest.raises(DataError, match="needs at least 3 recordings"):
        build_data(config(tmp_path, [folder], split_by="recording"))
    with pytest.raises(DataError, match="no validation windows .* give validation recordings"):
        build_data(config(tmp_path, [folder], split=[0.9, 0.0, 0.1]))


def test_training_batches_from_workers_equal_in_process_ones(rec: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, [rec], batch_size=2, num_workers=2)
    data = build_data(cfg, seed=3)
    from_workers = list(data.train_batches(2))
    data.num_workers = 0
    in_process = list(data.train_batches(2))
    assert len(from_workers) == len(in_process) > 2
    for (f1, l1), (f2, l2) in zip(from_workers, in_process):
        assert f1.equal(f2) and l1.equal(l2)
