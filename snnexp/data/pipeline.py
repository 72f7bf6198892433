"""From AEDAT4 files to prepared recordings: events per window and labels, cached on disk.

:func:`prepare_recording` aligns events and IMU on their common time range, streams the events
packet by packet into the sparse store (:mod:`snnexp.data.sparse`: each event as its cell of the
downsampled frame, grouped by window), labels each window with the Madgwick angle interpolated at
the window's end and caches the result (:mod:`snnexp.data.cache`). Memory stays bounded by the
IMU stream and one packet, whatever the recording's length. :func:`build_data` prepares every
recording of the run and returns the :class:`~snnexp.data.bundle.DataBundle` the trainer
iterates.
"""

from __future__ import annotations

import contextlib
import errno
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
from snnexp.data.frames import common_range, frame_shape, make_grid
from snnexp.data.labels import imu_angles, labels_at
from snnexp.data.recording import check_decodable, check_path, open_recording
from snnexp.data.sources import absolute
from snnexp.data.sparse import SparseEvents, SparseWriter, load_sparse
from snnexp.data.targets import TargetMap
from snnexp.errors import DataError

log = logging.getLogger(__name__)

_DECODABLE: set[str] = set()  # sha256 of files that passed check_decodable in this process
GAP_S = 1.0  # runs of empty windows at least this long are reported as gaps
BYTES_PER_WINDOW = 24  # offsets, angles and window ends (int64 / float64 each)


@dataclass
class Prepared:
    """One recording, ready: its events per window (sparse, memory-mapped from the cache), the
    angle (radians) and target label (float32) of each window, and its end time (us)."""

    path: Path
    events: SparseEvents
    angles: np.ndarray
    labels: np.ndarray
    t_end: np.ndarray
    meta: dict[str, Any]

    @property
    def n_windows(self) -> int:
        return int(len(self.t_end))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.events.shape
        return int(c), int(h), int(w)

    def frames(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Dense uint16 frames [hi - lo, 2, H, W] of windows ``lo .. hi - 1``."""
        return self.events.frames(lo, self.n_windows if hi is None else hi)


def _key_params(cfg: DataConfig) -> dict[str, Any]:
    """The settings that change a prepared recording's arrays (the cache key)."""
    return {"window_us": int(cfg.window_us), "downsample": int(cfg.downsample),
            "trim_start": int(cfg.trim_start), "trim_end": int(cfg.trim_end),
            "target": str(cfg.target), "madgwick_gain": float(cfg.madgwick_gain)}


def make_target_map(cfg: DataConfig) -> TargetMap:
    """The label map of ``cfg`` (a DataError for an unusable scale or offset)."""
    try:
        return TargetMap.from_config(cfg)
    except ValueError:
        raise DataError(f"data.target_scale={cfg.target_scale} / data.target_offset="
                        f"{cfg.target_offset}: the scale must be a finite non-zero number and "
                        "the offset finite") from None


# ----------------------------------------------------------------------------- prepare
def prepare_recording(path: str | os.PathLike[str], cfg: DataConfig,
                      target_map: TargetMap | None = None) -> Prepared:
    """Events, angles and labels of one recording, from the cache when possible.

    A cache hit reads the entry (memory-mapped events) after verifying its checksums; an entry
    of another format or with damaged arrays is rebuilt with a warning. A miss checks that
    dv-processing can decode the file (in a child process; ``SNNEXP_DECODE_CHECK=0`` skips
    this), estimates the cache size against ``data.cache_limit_gb`` and the free space, then
    streams the events into the store and runs the Madgwick filter.
    """
    path = absolute(path)
    check_path(path)
    if int(cfg.window_us) < 1 or int(cfg.downsample) < 1:
        raise DataError(f"data.window_us={cfg.window_us} and data.downsample={cfg.downsample} "
                        "must be positive integers")
    tmap = target_map or make_target_map(cfg)
    start = time.perf_counter()
    if not cfg.cache:
        sha = C.file_sha256(path)
        prep = _prepare_uncached(path, cfg, sha, tmap)
        log.info("prepared %s (%d windows, not cached) in %.1f s", path, prep.n_windows,
                 time.perf_counter() - start)
        return prep
    root = absolute(cfg.cache_dir)
    sha = C.file_sha256(path, root)
    entry = root / C.entry_name(path.stem, C.cache_key(sha, _key_params(cfg)))
    if C.is_complete(entry):
        loaded = _open_entry(entry, path)
        if loaded is not None:
            return _prepared(path, *loaded, tmap)
    C.clean_stale(root)
    _check_decodable(path, sha, root)
    _check_size(path, cfg, root)
    try:
        with C.atomic_entry(entry) as tmp:
            meta = _build(path, cfg, sha, tmp)
            meta["checksums"] = C.checksums(tmp)
            C.write_meta(tmp, meta)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise C.no_space(root, path) from None
        raise DataError(f"cannot write the cache entry {entry} ({exc.strerror or exc}); use a "
                        "writable data.cache_dir=PATH or data.cache=false") from None
    loaded = _open_entry(entry, path, fresh=True)
    if loaded is None:
        raise DataError(f"cache entry {entry} cannot be read back: check the disk under "
                        "data.cache_dir (or set data.cache=false)")
    log.info("prepared %s (%d windows, %d events) in %.1f s, cached in %s", path,
             loaded[3]["n_windows"], loaded[3]["n_events_kept"], time.perf_counter() - start,
             entry)
    return _prepared(path, *loaded, tmap)


def _prepared(path: Path, events: SparseEvents, angles: np.ndarray, t_end: np.ndarray,
              meta: dict[str, Any], tmap: TargetMap) -> Prepared:
    meta = dict(meta, path=str(path))
    meta.pop("checksums", None)
    labels = np.asarray(tmap.to_target(angles), dtype=np.float32)
    return Prepared(path, events, angles, labels, t_end, meta)


def _open_entry(entry: Path, path: Path, fresh: bool = False
                ) -> tuple[SparseEvents, np.ndarray, np.ndarray, dict[str, Any]] | None:
    """The arrays of a verified entry; a damaged or foreign-format one is removed (warning)."""
    try:
        meta = C.read_meta(entry)
        problem = C.verify(entry, meta)
    except (OSError, ValueError) as exc:
        meta, problem = {}, f"meta.json unreadable ({exc})"
    if problem is None:
        try:
            arrays = _load_arrays(entry, meta)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            arrays, problem = None, str(exc)
        if arrays is not None:
            return arrays
    if not fresh:
        log.warning("cache entry %s of %s is not usable (%s); building it again", entry, path,
                    problem)
        shutil.rmtree(entry, ignore_errors=True)
    return None


def _load_arrays(directory: Path, meta: dict[str, Any]
                 ) -> tuple[SparseEvents, np.ndarray, np.ndarray, dict[str, Any]] | None:
    offsets = np.load(directory / C.OFFSETS)
    angles = np.load(directory / C.ANGLES)
    t_end = np.load(directory / C.T_END)
    n = int(meta["n_windows"])
    if not len(offsets) - 1 == len(angles) == len(t_end) == n:
        raise ValueError("array lengths differ from meta.json")
    events = load_sparse(directory / C.EVENTS, offsets, int(meta["itemsize"]),
                         tuple(meta["input_shape"]))
    if len(events.data) != events.n_events * events.itemsize:
        raise ValueError("events.bin does not match the window offsets")
    meta = dict(meta, cache=str(directory) if meta.get("cache") != "none" else None)
    return events, angles, t_end, meta


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


def estimate_bytes(path: Path, cfg: DataConfig) -> int:
    """About the cache size of ``path``: 24 bytes per window plus at most the file's size for
    the events (2-4 bytes each, where an AEDAT4 file spends more per event)."""
    with open_recording(path) as rd:
        lo, hi = rd.time_range()
    windows = max(0, hi - lo) // max(1, int(cfg.window_us))
    return int(windows * BYTES_PER_WINDOW + path.stat().st_size)


def _check_size(path: Path, cfg: DataConfig, directory: Path) -> None:
    need = estimate_bytes(path, cfg)
    limit = getattr(cfg, "cache_limit_gb", None)
    C.check_space(directory, need, limit, f"recording {path} at data.window_us={cfg.window_us}")


def _prepare_uncached(path: Path, cfg: DataConfig, sha: str, tmap: TargetMap) -> Prepared:
    """Build into a private temporary folder and keep the arrays in memory."""
    _check_decodable(path, sha, None)
    tmp = Path(tempfile.mkdtemp(prefix="snnexp-prepare-"))
    try:
        _check_size(path, cfg, tmp)
        meta = _build(path, cfg, sha, tmp)
        events, angles, t_end, meta = _load_arrays(tmp, dict(meta, cache="none"))
        events.data = np.array(events.data)  # into RAM: the folder goes away
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DataError(f"the disk under {tmp.parent} filled up while preparing {path}; "
                            "free some space or set TMPDIR to another disk") from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _prepared(path, events, angles, t_end, meta, tmap)


def _build(path: Path, cfg: DataConfig, sha: str, out_dir: Path) -> dict[str, Any]:
    """Decode ``path`` into ``out_dir``: events.bin, offsets.npy, angles.npy, t_end.npy."""
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
        imu_first, imu_last = int(imu.t[0]), int(imu.t[-1])
        packets = rd.iter_events()
        first = next((p for p in packets if len(p)), None)
        if first is None:
            raise DataError(f"recording {path} has an event stream without events: record a "
                            "scene that moves (or check the camera's bias settings)")
        ev_first = int(first.t[0])
        # the last event is known only at the end: count into the largest possible grid
        # (the IMU's end bounds the common range) and cut afterwards
        bound, _ = make_grid(max(ev_first, imu_first), imu_last, w, trim_start, trim_end)
        writer = SparseWriter(out_dir / C.EVENTS, bound, width, height, downsample=f)
        n_events, ev_last = 0, int(first.t[-1])
        try:
            for pk in _chain(first, packets):
                writer.add(pk)
                ev_last = int(pk.t[-1]) if len(pk) else ev_last
                n_events += len(pk)
            start, end = common_range(f"recording {path}", ev_first, ev_last, imu_first,
                                      imu_last)
            grid, total = make_grid(start, end, w, trim_start, trim_end)
            _check_windows(path, cfg, start, end, total, grid.n_windows)
            if not writer.ordered:  # packets out of time order: place every event again
                writer.start_placing()
                for pk in rd.iter_events():
                    writer.place(pk)
            kept = writer.close(grid.n_windows)
        except BaseException:
            writer.abort()
            raise
    counts = writer.counts[:grid.n_windows]
    _warn_gaps(path, counts, w)
    np.save(out_dir / C.OFFSETS, writer.offsets(grid.n_windows))
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
            "input_shape": [int(s) for s in shape], "itemsize": int(writer.itemsize),
            "n_events": int(n_events), "n_events_kept": int(kept),
            "file_bytes": int(path.stat().st_size), "imu_samples": len(imu),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def find_gaps(counts: np.ndarray, min_windows: int) -> list[tuple[int, int]]:
    """(first window, length) of every run of at least ``min_windows`` empty windows."""
    empty = np.concatenate([[False], np.asarray(counts) == 0, [False]])
    edges = np.flatnonzero(empty[1:] != empty[:-1])
    starts, stops = edges[0::2], edges[1::2]
    return [(int(a), int(b - a)) for a, b in zip(starts, stops) if b - a >= min_windows]


def _warn_gaps(path: Path, counts: np.ndarray, window_us: int) -> None:
    """Warn with numbers when the recording has long stretches without events."""
    gaps = find_gaps(counts, max(2, int(np.ceil(GAP_S * 1e6 / window_us))))
    if not gaps:
        return
    empty = sum(n for _, n in gaps)
    first, longest = max(gaps, key=lambda g: g[1])
    log.warning("recording %s has %d gap(s) without events of >= %g s: %d of its %d windows "
                "(%.0f %%) are empty; the longest lasts %.1f s from %.1f s on. Cut the "
                "recording into parts without the gaps (or trim them) if the camera was off",
                path, len(gaps), GAP_S, empty, len(counts), 100.0 * empty / max(1, len(counts)),
                longest * window_us * 1e-6, first * window_us * 1e-6)


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


def build_data(cfg: DataConfig, seed: int = 0, *, require_sequences: bool = True) -> Any:
    """Prepare every recording of the run and return its :class:`DataBundle` (see
    :mod:`snnexp.data.bundle`)."""
    from snnexp.data.bundle import build_bundle

    return build_bundle(cfg, seed, require_sequences=require_sequences)
