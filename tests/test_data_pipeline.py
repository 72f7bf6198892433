"""prepare_recording / build_data: alignment, labels, cache, split, batches, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import snnexp.data.pipeline as pipeline
from snnexp.config.schema import DataConfig, SimConfig
from snnexp.data.datasets import epoch_order, shard, split_bounds
from snnexp.data.frames import WindowGrid, events_to_frames
from snnexp.data.labels import imu_angles
from snnexp.data.pipeline import build_data, prepare_recording
from snnexp.data.recording import Events, ImuSamples, read_recording, write_recording
from snnexp.data.simulate import simulate_recording
from snnexp.data.targets import TargetMap
from snnexp.errors import DataError

SIM = SimConfig(duration_s=5.0, width=64, height=48, seed=11)


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate_recording(SIM, tmp_path_factory.mktemp("rec") / "sim.aedat4")


def config(tmp_path: Path, paths: list[Path], **kw) -> DataConfig:
    kw.setdefault("seq_length", 20)
    kw.setdefault("batch_size", 3)
    return DataConfig(paths=[str(p) for p in paths], cache_dir=str(tmp_path / "cache"), **kw)


def test_prepared_frames_and_labels_follow_the_reference(sim_file: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, [sim_file], trim_start=3, trim_end=5)
    prep = prepare_recording(sim_file, cfg)
    rec = read_recording(sim_file)
    start = max(int(rec.events.t[0]), int(rec.imu.t[0]))
    end = min(int(rec.events.t[-1]), int(rec.imu.t[-1]))
    total = (end - start) // cfg.window_us
    assert prep.n_windows == total - 8 == prep.meta["n_windows"]
    assert (prep.meta["start_us"], prep.meta["end_us"]) == (start, end)
    grid = WindowGrid(start + 3 * cfg.window_us, cfg.window_us, total - 8)
    np.testing.assert_array_equal(prep.t_end, grid.ends())
    np.testing.assert_array_equal(prep.frames(), events_to_frames(rec.events, 64, 48, grid))
    # label = roll interpolated at the window end (np.interp inside the IMU range)
    roll = imu_angles(rec.imu.t, rec.imu.acc, rec.imu.gyro, "roll", 0.033)
    t0 = rec.imu.t[0]
    expected = np.interp(prep.t_end - t0, rec.imu.t - t0, roll)
    np.testing.assert_allclose(prep.angles, expected, atol=1e-9)
    np.testing.assert_allclose(prep.labels, (-prep.angles / np.pi).astype(np.float32))
    assert prep.labels.dtype == np.float32 and prep.input_shape == (2, 48, 64)


def test_second_build_reads_the_cache(sim_file: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(tmp_path, [sim_file])
    first = prepare_recording(sim_file, cfg)
    assert isinstance(first.events.data, np.memmap) and Path(first.meta["cache"]).is_dir()

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the recording was decoded again")

    monkeypatch.setattr(pipeline, "open_recording", no_decoding)
    monkeypatch.setattr(pipeline, "imu_angles", no_decoding)
    second = prepare_recording(sim_file, cfg)
    np.testing.assert_array_equal(second.frames(), first.frames())
    np.testing.assert_array_equal(second.labels, first.labels)
    # the target map is applied at load time: other units, same cache entry
    cfg.target_scale, cfg.target_offset = 180.0 / np.pi, 10.0
    third = prepare_recording(sim_file, cfg)
    np.testing.assert_allclose(third.labels, np.degrees(first.angles) + 10.0, rtol=1e-6)
    # settings that change the arrays are part of the key
    cfg.window_us = 20_000
    with pytest.raises(AssertionError, match="decoded again"):
        prepare_recording(sim_file, cfg)


def test_cache_entries_are_atomic(sim_file: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(tmp_path, [sim_file])
    real = pipeline.labels_at

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # interrupted after the frames were written

    monkeypatch.setattr(pipeline, "labels_at", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_recording(sim_file, cfg)
    assert not any((tmp_path / "cache").glob("sim-*"))  # no half entry
    assert not any((tmp_path / "cache").glob(".*"))  # no temporary left
    monkeypatch.setattr(pipeline, "labels_at", real)
    # a temporary entry of a killed process (dead pid) is cleaned up by the next build
    from snnexp.data.cache import _host

    stale = tmp_path / "cache" / f".sim-x.{_host()}~999999999~deadbeef.tmp"
    stale.mkdir(parents=True)
    prep = prepare_recording(sim_file, cfg)
    assert not stale.exists()
    meta = json.loads((Path(prep.meta["cache"]) / "meta.json").read_text())
    assert meta["sha256"] == prep.meta["sha256"] and len(meta["sha256"]) == 64


def test_without_cache_nothing_is_written(sim_file: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, [sim_file], cache=False)
    prep = prepare_recording(sim_file, cfg)
    assert prep.meta["cache"] is None and not (tmp_path / "cache").exists()
    assert prep.frames().sum() > 0


def test_split_sequences_and_batches(sim_file: Path, tmp_path: Path) -> None:
    other = simulate_recording(SimConfig(duration_s=5.0, width=64, height=48, seed=12),
                               tmp_path / "other.aedat4")
    cfg = config(tmp_path, [sim_file, other], seq_length=20, batch_size=3)
    data = build_data(cfg, seed=7)
    n = data.prepared[0].n_windows
    (a, b), (c, d), (e, g) = split_bounds(n, cfg.split)
    assert (b, d) == (int(n * 0.88), int(n * 0.95))
    per_rec_train, per_rec_val = (b - a) // 20, (d - c) // 20  # remainders dropped
    assert data.num_train_sequences == 2 * per_rec_train
    assert data.num_val_sequences == 2 * per_rec_val
    assert data.input_shape == (2, 48, 64) and data.window_us == 10_000
    assert data.prepared[1].n_windows == n  # same duration
    assert [r["role"] for r in data.recordings] == ["train", "train"]
    batches = list(data.train_batches(epoch=1))
    assert len(batches) == -(-data.num_train_sequences // 3)
    frames, labels = batches[0]
    assert frames.shape == (20, 3, 2, 48, 64) and labels.shape == (20, 3)
    assert str(labels.dtype) == "torch.float32" and str(frames.dtype) == "torch.uint16"
    assert batches[-1][0].shape[1] == data.num_train_sequences - 3 * (len(batches) - 1)
    # each batch column is one contiguous sequence of its recording
    order = data.train_order(1)
    ref = data.train_refs[order[0]]
    prep = data.prepared[ref.recording]
    np.testing.assert_array_equal(frames[:, 0].numpy(), prep.frames(ref.start, ref.start + 20))
    np.testing.assert_array_equal(labels[:, 0].numpy(), prep.labels[ref.start:ref.start + 20])
    # validation in time order, test = one continuous sequence per recording
    val = list(data.val_batches())
    assert sum(x.shape[1] for x, _ in val) == data.num_val_sequences
    tests = list(data.test_batches())
    assert [x.shape[:2] for x, _ in tests] == [(g - e, 1), (g - e, 1)]
    assert [(p.name, p.group) for p in data.test_parts] == [("sim.aedat4", "within"),
                                                           ("other.aedat4", "within")]
    np.testing.assert_array_equal(tests[0][1][:, 0].numpy(), data.prepared[0].labels[e:g])


def test_epoch_order_is_a_function_of_seed_and_epoch(sim_file: Path, tmp_path: Path) -> None:
    np.testing.assert_array_equal(epoch_order(50, 3, 4), epoch_order(50, 3, 4))
    assert not np.array_equal(epoch_order(50, 3, 4), epoch_order(50, 3, 5))
    assert not np.array_equal(epoch_order(50, 3, 4), epoch_order(50, 4, 4))
    np.random.seed(123)  # global state does not matter
    a = epoch_order(50, 3, 4)
    np.random.seed(999)
    np.testing.assert_array_equal(a, epoch_order(50, 3, 4))
    # a resumed run (fresh bundle) sees the same batches
    cfg = config(tmp_path, [sim_file], batch_size=2)
    one = [y for _, y in build_data(cfg, seed=5).train_batches(3)]
    two = [y for _, y in build_data(cfg, seed=5).train_batches(3)]
    assert all((p == q).all() for p, q in zip(one, two))
    # DDP shards: disjoint cover with equal sizes
    parts = [shard(np.arange(7), r, 3) for r in range(3)]
    assert [len(p) for p in parts] == [3, 3, 3] and set(np.concatenate(parts)) == set(range(7))


def test_builtin_recordings_are_simulated_where_relative_paths_point(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sim = SimConfig(duration_s=3.0, width=40, height=30, seed=0)
    cfg = DataConfig(paths=["builtin:2"], test_paths=["builtin:5"], sim=sim, seq_length=10,
                     cache_dir="cache", builtin_dir="data")
    data = build_data(cfg, seed=0)
    files = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert len(files) == 2 and "seed2" in files[0] and "seed5" in files[1]
    assert data.recordings[0]["camera"] == "DAVIS346_SIM"
    assert Path(data.recordings[0]["cache"]).parent == tmp_path / "cache"
    assert data.num_train_sequences == int(0.88 * data.prepared[0].n_windows) // 10
    # the held-out recording is tested whole, after the training recording's test part
    assert [(p.group, p.lo, p.hi) for p in data.test_parts][1] == \
        ("held_out", 0, data.prepared[1].n_windows)
    # other simulator settings: another file, never the one simulated with other settings
    cfg.sim.duration_s = 2.0
    build_data(cfg, seed=0)
    assert len(list((tmp_path / "data").iterdir())) == 4


# ----------------------------------------------------------------------------- errors
def _write(path: Path, ev_t: np.ndarray, imu_t: np.ndarray) -> Path:
    n = len(ev_t)
    rng = np.random.default_rng(0)
    ev = Events(ev_t, rng.integers(0, 32, n), rng.integers(0, 24, n), rng.integers(0, 2, n))
    imu = ImuSamples(imu_t, np.tile([0.0, 0.0, 1.0], (len(imu_t), 1)),
                     rng.normal(0, 1, (len(imu_t), 3)))
    return write_recording(path, events=ev, imu=imu, width=32, height=24)


def test_no_overlap_between_events_and_imu(tmp_path: Path) -> None:
    path = _write(tmp_path / "apart.aedat4", np.arange(0, 1_000_000, 100),
                  np.arange(2_000_000, 3_000_000, 1000))
    with pytest.raises(DataError, match="do not overlap") as err:
        prepare_recording(path, config(tmp_path, [path]))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    late = _write(tmp_path / "late.aedat4", np.arange(5_000_000, 6_000_000, 100),
                  np.arange(0, 1_000_000, 1000))
    with pytest.raises(DataError, match="do not overlap"):
        prepare_recording(late, config(tmp_path, [late]))


def test_too_short_recordings(sim_file: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, [sim_file], seq_length=200)
    with pytest.raises(DataError) as err:
        build_data(cfg)
    msg = str(err.value)
    n = prepare_recording(sim_file, cfg).n_windows
    assert f"has {n})" in msg and "lower data.seq_length to at most" in msg
    assert str(sim_file) in msg and "\n" not in msg
    assert build_data(cfg, require_sequences=False).num_val_sequences == 0  # for evaluation
    with pytest.raises(DataError, match="data.trim_start=300 and data.trim_end=300"):
        prepare_recording(sim_file, config(tmp_path, [sim_file], trim_start=300, trim_end=300))
    tiny = _write(tmp_path / "tiny.aedat4", np.arange(0, 5_000, 10), np.arange(0, 5_000, 1000))
    with pytest.raises(DataError, match="0 complete windows .*lower data.window_us"):
        prepare_recording(tiny, config(tmp_path, [tiny]))


def test_config_errors(sim_file: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.paths is empty"):
        build_data(DataConfig(paths=[]))
    with pytest.raises(DataError, match="lower data.downsample"):
        prepare_recording(sim_file, config(tmp_path, [sim_file], downsample=64))
    other = simulate_recording(SimConfig(duration_s=3.0, width=40, height=30),
                               tmp_path / "other.aedat4")
    with pytest.raises(DataError, match="different input sizes"):
        build_data(config(tmp_path, [sim_file, other], seq_length=10))
    missing = tmp_path / "missing.aedat4"
    with pytest.raises(DataError, match="does not exist"):
        build_data(config(tmp_path, [missing]))
    assert not missing.exists()  # only builtin:SEED entries are ever simulated


def test_target_map_round_trip() -> None:
    tm = TargetMap.from_dict(TargetMap().as_dict())
    assert tm == TargetMap(-1 / np.pi, 0.0, "roll")
    y = tm.to_target(np.radians(-135.0))
    assert y == pytest.approx(0.75) and tm.to_degrees(y) == pytest.approx(-135.0)
    assert tm.to_degrees(0.5) == pytest.approx(-0.5 * 180)  # the reference's -y * 180
    assert tm.degrees_per_unit() == pytest.approx(180.0)
    with pytest.raises(ValueError):
        TargetMap(scale=0.0)
    assert os.fspath(Path("x")) == "x"
