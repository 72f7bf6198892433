"""From AEDAT4 files to batches: prepare (or load from the cache) each recording, then split,
cut into sequences and batch them (docs/METHOD.md section 1).

:func:`prepare_recording` aligns events and IMU on their common time range, cuts the events into
windows (streamed packet by packet into a frame file), labels each window with the Madgwick
angle interpolated at the window's end and caches the result. :func:`build_data` does this for
every recording of ``data.paths`` and returns a :class:`DataBundle` that the trainer iterates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snnexp.config.schema import DataConfig
from snnexp.data import cache as C
from snnexp.data.datasets import (
    SequenceRef,
    batched,
    epoch_order,
    make_batch,
    sequence_refs,
    shard,
    split_bounds,
)
from snnexp.data.frames import FrameFileWriter, common_range, frame_shape, make_grid
from snnexp.data.imu_checks import check_imu
from snnexp.data.labels import imu_angles, labels_at
from snnexp.data.recording import check_decodable, check_path, open_recording
from snnexp.data.targets import TargetMap
from snnexp.errors import DataError

log = logging.getLogger(__name__)

IN_MEMORY_BYTES = 512 << 20  # without the cache, frames up to this size are kept in RAM
_DECODABLE: set[str] = set()  # sha256 of files that passed check_decodable in this process


@dataclass
class Prepared:
    """One recording, ready: frames [N, 2, H, W] uint16 (memory-mapped from the cache), the
    angle (radians) and target label (float32) of each window, and its end time (us)."""

    path: Path
    frames: np.ndarray
    angles: np.ndarray
    labels: np.ndarray
    t_end: np.ndarray
    meta: dict[str, Any]

    @property
    def n_windows(self) -> int:
        return int(len(self.t_end))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.frames.shape[1:]
        return int(c), int(h), int(w)


def _abs(path: str | os.PathLike[str]) -> Path:
    """``path`` with ~ expanded, relative to the current directory (symlinks kept)."""
    p = Path(os.path.expanduser(os.fspath(path)))
    return p if p.is_absolute() else Path.cwd() / p


def _key_params(cfg: DataConfig) -> dict[str, Any]:
    """The settings that change a prepared recording's arrays (the cache key)."""
    return {"window_us": int(cfg.window_us), "downsample": int(cfg.downsample),
            "trim_start": int(cfg.trim_start), "trim_end": int(cfg.trim_end),
            "target": str(cfg.target), "madgwick_gain": float(cfg.madgwick_gain)}


def _target_map(cfg: DataConfig) -> TargetMap:
    try:
        return TargetMap.from_config(cfg)
    except ValueError:
        raise DataError(f"data.target_scale={cfg.target_scale} / data.target_offset="
                        f"{cfg.target_offset}: the scale must be a finite non-zero number and "
                        "the offset finite") from None


# ----------------------------------------------------------------------------- prepare
def prepare_recording(path: str | os.PathLike[str], cfg: DataConfig,
                      target_map: TargetMap | None = None) -> Prepared:
    """Frames, angles and labels of one recording, from the cache when possible.

    A cache hit reads only the entry (memory-mapped frames) and the remembered file hash; a miss
    checks that dv-processing can decode the file (in a child process; ``SNNEXP_DECODE_CHECK=0``
    skips this), streams the events into frames and runs the Madgwick filter.
    """
    path = _abs(path)
    check_path(path)
    if int(cfg.window_us) < 1 or int(cfg.downsample) < 1:
        raise DataError(f"data.window_us={cfg.window_us} and data.downsample={cfg.downsample} "
                        "must be positive integers")
    tmap = target_map or _target_map(cfg)
    start = time.perf_counter()
    if not cfg.cache:
        sha = C.file_sha256(path)
        frames, angles, t_end, meta = _prepare_uncached(path, cfg, sha)
        meta["cache"] = None
        log.info("prepared %s (%d windows, not cached) in %.1f s", path, len(t_end),
                 time.perf_counter() - start)
        return _prepared(path, frames, angles, t_end, meta, tmap)
    root = _abs(cfg.cache_dir)
    sha = C.file_sha256(path, root)
    entry = root / C.entry_name(path.stem, C.cache_key(sha, _key_params(cfg)))
    if C.is_complete(entry):
        loaded = _load_entry(entry)
        if loaded is not None:
            return _prepared(path, *loaded, tmap)
        shutil.rmtree(entry, ignore_errors=True)  # unreadable entry: build it again
    C.clean_stale(root)
    _check_decodable(path, sha, root)
    with C.atomic_entry(entry) as tmp:
        meta = _build(path, cfg, sha, tmp)
        C.write_meta(tmp, meta)
    loaded = _load_entry(entry)
    if loaded is None:
        raise DataError(f"cache entry {entry} cannot be read back: check the free space and "
                        "permissions of data.cache_dir (or set data.cache=false)")
    log.info("prepared %s (%d windows) in %.1f s, cached in %s", path, loaded[3]["n_windows"],
             time.perf_counter() - start, entry)
    return _prepared(path, *loaded, tmap)


def _prepared(path: Path, frames: np.ndarray, angles: np.ndarray, t_end: np.ndarray,
              meta: dict[str, Any], tmap: TargetMap) -> Prepared:
    meta = dict(meta, path=str(path))
    labels = np.asarray(tmap.to_target(angles), dtype=np.float32)
    return Prepared(path, frames, angles, labels, t_end, meta)


def _load_entry(entry: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                      dict[str, Any]] | None:
    try:
        meta = C.read_meta(entry)
        frames = np.load(entry / C.FRAMES, mmap_mode="r")
        angles = np.load(entry / C.ANGLES)
        t_end = np.load(entry / C.T_END)
    except (OSError, ValueError):
        return None
    n = int(meta.get("n_windows", -1))
    if not len(frames) == len(angles) == len(t_end) == n:
        return None
    meta["cache"] = str(entry)
    return frames, angles, t_end, meta


def _check_decodable(path: Path, sha: str, root: Path | None) -> None:
    """Decode the file in a child process once per content (remembered in the cache dir)."""
    if os.environ.get("SNNEXP_DECODE_CHECK", "1").strip() == "0" or sha in _DECODABLE:
        return
    marker = root / C.HASH_DIR / f"{sha}.decodable" if root is not None else None
    if marker is not None and marker.is_file():
        _DECODABLE.add(sha)
        return
    check_decodable(path)
    _DECODABLE.add(sha)
    if marker is not None:
        with contextlib.suppress(OSError):
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()


def _prepare_uncached(path: Path, cfg: DataConfig, sha: str
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Build into a private temporary directory; small frames are copied into RAM, large ones
    stay memory-mapped from a file that is unlinked at once (POSIX keeps the mapping)."""
    _check_decodable(path, sha, None)
    tmp = Path(tempfile.mkdtemp(prefix="snnexp-frames-"))
    try:
        meta = _build(path, cfg, sha, tmp)
        frames = np.load(tmp / C.FRAMES, mmap_mode="r")
        if frames.nbytes <= IN_MEMORY_BYTES:
            frames = np.array(frames)
        angles, t_end = np.load(tmp / C.ANGLES), np.load(tmp / C.T_END)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return frames, angles, t_end, meta


def _build(path: Path, cfg: DataConfig, sha: str, out_dir: Path) -> dict[str, Any]:
    """Decode ``path`` and write frames.npy, angles.npy and t_end.npy into ``out_dir``."""
    w, f = int(cfg.window_us), int(cfg.downsample)
    trim_start, trim_end = int(cfg.trim_start), int(cfg.trim_end)
    with open_recording(path) as rd:
        rd.require_streams()
        width, height, camera = int(rd.width), int(rd.height), str(rd.camera_name)
        shape = frame_shape(width, height, f)
        if shape[1] < 1 or shape[2] < 1:
            raise DataError(f"recording {path} is {width} x {height} pixels and "
                            f"data.downsample={f} leaves no pixel; lower data.downsample to at "
                            f"most {min(width, height)}")
        imu = rd.read_imu()
        if len(imu) < 2:
            raise DataError(f"recording {path} has {len(imu)} IMU samples, too few for "
                            "orientation labels: record with the IMU enabled")
        check_imu(imu.t, imu.acc, imu.gyro, str(path))
        imu_first, imu_last = int(imu.t[0]), int(imu.t[-1])
        packets = rd.iter_events()
        first = next((p for p in packets if len(p)), None)
        if first is None:
            raise DataError(f"recording {path} has an event stream without events: record a "
                            "scene that moves (or check the camera's bias settings)")
        ev_first = int(first.t[0])
        # the last event is known only at the end: count into the largest possible grid
        # (the IMU's end bounds the common range) and cut the file afterwards
        bound, _ = make_grid(max(ev_first, imu_first), imu_last, w, trim_start, trim_end)
        counted = {"n_events": 0, "used": 0, "saturated": 0}
        writer = (FrameFileWriter(out_dir / C.FRAMES, bound, width, height, downsample=f)
                  if bound.n_windows > 0 else None)
        with writer if writer is not None else contextlib.nullcontext():
            ev_last = int(first.t[-1])
            for pk in _chain(first, packets):
                if writer is not None:
                    writer.add(pk)
                ev_last = int(pk.t[-1]) if len(pk) else ev_last
                counted["n_events"] += len(pk)
            start, end = common_range(f"recording {path}", ev_first, ev_last, imu_first,
                                      imu_last)
            grid, total = make_grid(start, end, w, trim_start, trim_end)
            _check_windows(path, cfg, start, end, total, grid.n_windows)
            assert writer is not None and grid.origin_us == bound.origin_us
            writer.close(grid.n_windows)
            counted["used"], counted["saturated"] = writer.used, writer.saturated
    if counted["saturated"]:
        log.warning("%s: %d event counts exceeded the uint16 range of a frame pixel and were "
                    "clipped", path, counted["saturated"])
    angles_imu = imu_angles(imu.t, imu.acc, imu.gyro, str(cfg.target), float(cfg.madgwick_gain))
    t_end = grid.ends()
    angles = np.asarray(labels_at(t_end, imu.t, angles_imu), dtype=np.float64)
    if not np.all(np.isfinite(angles)):
        raise DataError(f"recording {path}: the IMU samples give non-finite angles (NaN or "
                        "infinite accelerometer / gyroscope values); use another recording")
    np.save(out_dir / C.ANGLES, angles)
    np.save(out_dir / C.T_END, t_end)
    return {"format": C.FORMAT_VERSION, "path": str(path), "name": path.name, "sha256": sha,
            "camera": camera, "width": width, "height": height, **_key_params(cfg),
            "start_us": start, "end_us": end, "origin_us": int(grid.origin_us),
            "total_windows": int(total), "n_windows": int(grid.n_windows),
            "input_shape": [int(s) for s in shape], "n_events": int(counted["n_events"]),
            "events_used": int(counted["used"]), "saturated": int(counted["saturated"]),
            "imu_samples": len(imu), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _check_windows(path: Path, cfg: DataConfig, start: int, end: int, total: int,
                   n: int) -> None:
    if total == 0:
        raise DataError(f"recording {path}: events and IMU overlap for {end - start} us, "
                        f"which holds 0 complete windows of data.window_us={cfg.window_us}; "
                        "lower data.window_us or use a longer recording")
    if n == 0:
        raise DataError(f"recording {path} has {total} windows of {cfg.window_us} us and "
                        f"data.trim_start={cfg.trim_start} and data.trim_end={cfg.trim_end} "
                        f"drop all of them; trim at most {total - 1} windows in total")


# ----------------------------------------------------------------------------- bundle
class DataBundle:
    """All recordings of a run, split and cut into sequences; iterated by the trainer.

    Training sequences are shuffled per epoch as a function of (seed, epoch) only; validation
    keeps time order; the test part of each recording is one continuous sequence (batch 1).
    Batches are (frames uint16 [T, B, 2, H, W], labels float32 [T, B]) torch tensors.
    """

    def __init__(self, prepared: list[Prepared], target_map: TargetMap, window_us: int,
                 seq_length: int, batch_size: int, split: list[float], seed: int = 0) -> None:
        self.prepared = prepared
        self.target_map = target_map
        self.window_us = int(window_us)
        self.seq_length = int(seq_length)
        self.batch_size = int(batch_size)
        self.split = [float(s) for s in split]
        self.seed = int(seed)
        counts = [p.n_windows for p in prepared]
        self.train_refs = sequence_refs(counts, self.split, self.seq_length, 0)
        self.val_refs = sequence_refs(counts, self.split, self.seq_length, 1)
        self.test_refs = []
        for i, n in enumerate(counts):
            lo, hi = split_bounds(n, self.split)[2]
            if hi - lo >= 2:  # an initial label and at least one step
                self.test_refs.append(SequenceRef(i, lo, hi - lo))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.prepared[0].input_shape

    @property
    def recordings(self) -> list[dict[str, Any]]:
        """The meta data of every recording (JSON-serialisable, stored in checkpoints)."""
        return [dict(p.meta) for p in self.prepared]

    @property
    def num_train_sequences(self) -> int:
        return len(self.train_refs)

    @property
    def num_val_sequences(self) -> int:
        return len(self.val_refs)

    @property
    def num_test_sequences(self) -> int:
        return len(self.test_refs)

    def train_order(self, epoch: int) -> np.ndarray:
        """Indices into ``train_refs`` in the order of ``epoch``."""
        return epoch_order(len(self.train_refs), self.seed, epoch)

    def train_batches(self, epoch: int, rank: int = 0,
                      world_size: int = 1) -> Iterator[tuple[Any, Any]]:
        """The shuffled training batches of ``epoch`` (this rank's shard under DDP)."""
        order = shard(self.train_order(epoch), rank, world_size)
        for idx in batched([int(i) for i in order], self.batch_size):
            yield make_batch(self.prepared, [self.train_refs[i] for i in idx])

    def val_batches(self) -> Iterator[tuple[Any, Any]]:
        """The validation batches, in time order."""
        for refs in batched(self.val_refs, self.batch_size):
            yield make_batch(self.prepared, refs)

    def test_batches(self) -> Iterator[tuple[Any, Any]]:
        """One continuous test sequence per recording, batch size 1."""
        for ref in self.test_refs:
            yield make_batch(self.prepared, [ref])


def build_data(cfg: DataConfig, seed: int = 0, *, require_sequences: bool = True) -> DataBundle:
    """Prepare every recording of ``cfg.paths`` and return the batched, split data.

    ``simulate_missing`` first writes the simulated recording ``cfg.sim`` to ``paths[0]`` if it
    does not exist. With ``require_sequences`` (training) a DataError says how to fix a setting
    that leaves no training or validation sequence; evaluation passes False.
    """
    if not cfg.paths:
        raise DataError("data.paths is empty: list at least one AEDAT4 recording, e.g. "
                        "data.paths=[/data/rec.aedat4] (or use data=synthetic)")
    paths = [_abs(p) for p in cfg.paths]
    if cfg.simulate_missing and not paths[0].exists():
        from snnexp.data.simulate import simulate_recording

        log.info("simulating the missing recording %s", paths[0])
        simulate_recording(cfg.sim, paths[0])
    tmap = _target_map(cfg)
    prepared = [prepare_recording(p, cfg, target_map=tmap) for p in paths]
    shapes = {p.input_shape for p in prepared}
    if len(shapes) > 1:
        sizes = ", ".join(f"{p.path} {p.meta['width']}x{p.meta['height']}" for p in prepared)
        raise DataError(f"data.paths lists recordings of different resolutions ({sizes}): "
                        "one run needs one input size; train on recordings of one camera model")
    data = DataBundle(prepared, tmap, int(cfg.window_us), int(cfg.seq_length),
                      int(cfg.batch_size), list(cfg.split), seed)
    if require_sequences and (data.num_train_sequences == 0 or data.num_val_sequences == 0):
        raise _too_short(max(prepared, key=lambda p: p.n_windows), cfg)
    return data


def _too_short(p: Prepared, cfg: DataConfig) -> DataError:
    n = p.n_windows
    (a, b), (c, d), _ = split_bounds(n, cfg.split)
    most = min(b - a, d - c)
    fix = (f"lower data.seq_length to at most {most} or use a longer recording" if most >= 2
           else "use a longer recording, a shorter data.window_us or smaller trims")
    return DataError(f"recording {p.path} has {n} windows ({b - a} for training and {d - c} for "
                     f"validation at data.split={list(cfg.split)}), fewer than one sequence of "
                     f"data.seq_length={cfg.seq_length} each; {fix}")
