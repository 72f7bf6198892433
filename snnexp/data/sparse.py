"""The sparse event store of a prepared recording: its events, grouped by window, as frame cells.

An event becomes one *cell* of its (downsampled) frame, ``(polarity * H + y) * W + x``, stored
little-endian in 2 bytes when the frame has at most 65 536 cells, else in 3 (or 4) bytes. Events
are grouped by window: ``offsets[i] .. offsets[i + 1]`` are the events of window ``i``. A frame
is built when a batch needs it (:mod:`snnexp.data.framing`), so the store grows with the events,
not with duration x resolution (a DAVIS346 recording at full resolution: 3 bytes per event,
about a third of its AEDAT4 file).

:class:`SparseWriter` streams event packets into the store; packets in time order (what cameras
and dv-processing deliver) are appended as they come, anything else is placed in a second pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snnexp.data.frames import N_CHANNELS, WindowGrid, _pixel_indices, frame_shape


def cell_itemsize(cells: int) -> int:
    """Bytes per stored event for a frame of ``cells`` cells (2, 3 or 4)."""
    if cells <= 1 << 16:
        return 2
    return 3 if cells <= 1 << 24 else 4


def encode(cells: np.ndarray, itemsize: int) -> bytes:
    """Little-endian bytes of ``cells`` in ``itemsize`` bytes each."""
    if itemsize == 2:
        return cells.astype("<u2").tobytes()
    wide = cells.astype("<u4")
    if itemsize == 4:
        return wide.tobytes()
    return wide.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


def decode(raw: np.ndarray, itemsize: int) -> np.ndarray:
    """int64 cells of the bytes ``raw`` (uint8, a multiple of ``itemsize`` long)."""
    raw = np.asarray(raw, dtype=np.uint8)
    if itemsize == 2:
        return raw.view("<u2").astype(np.int64)
    if itemsize == 4:
        return raw.view("<u4").astype(np.int64)
    b = raw.reshape(-1, 3).astype(np.int64)
    return b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)


@dataclass
class SparseEvents:
    """Events of ``n_windows`` windows as frame cells (see the module docstring).

    ``data`` holds the raw bytes (uint8, usually memory-mapped), ``offsets`` int64 [N + 1]
    the first event of each window (in events, not bytes), ``shape`` the frame (2, H, W).
    """

    data: np.ndarray
    offsets: np.ndarray
    itemsize: int
    shape: tuple[int, int, int]

    @property
    def n_windows(self) -> int:
        return int(len(self.offsets) - 1)

    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])

    def cells(self, lo: int, hi: int) -> np.ndarray:
        """Cells (int64) of the events of windows ``lo .. hi - 1``."""
        a, b = int(self.offsets[lo]), int(self.offsets[hi])
        return decode(self.data[a * self.itemsize:b * self.itemsize], self.itemsize)

    def frames(self, lo: int, hi: int) -> np.ndarray:
        """Dense uint16 frames [hi - lo, 2, H, W] of windows ``lo .. hi - 1`` (saturating)."""
        from snnexp.data.framing import frame_windows

        return frame_windows(self, lo, hi)

    def events_per_window(self) -> np.ndarray:
        return np.diff(self.offsets)


class SparseWriter:
    """Stream event packets of ``grid`` into ``path`` (raw cells, grouped by window).

    ``add`` counts every packet; while the packets come in window order their cells are
    appended at once. If one arrives out of order, :attr:`ordered` turns False and the caller
    feeds all packets again to :meth:`place` (a counting sort into the final positions).
    """

    def __init__(self, path: str | os.PathLike[str], grid: WindowGrid, width: int, height: int,
                 downsample: int = 1) -> None:
        self.path = Path(path)
        self.grid = grid
        self.downsample = int(downsample)
        self.shape = frame_shape(width, height, downsample)
        c, h, w = self.shape
        self.itemsize = cell_itemsize(c * h * w)
        self.counts = np.zeros(grid.n_windows, dtype=np.int64)
        self.ordered = True
        self.used = 0
        self._last = 0
        self._fh: Any = open(self.path, "wb", buffering=8 << 20)
        self._mm: np.ndarray | None = None
        self._cursor: np.ndarray | None = None

    def _cells(self, events: Any) -> tuple[np.ndarray, np.ndarray]:
        _, h, w = self.shape
        return _pixel_indices(events, self.grid, h, w, self.downsample)

    def add(self, events: Any) -> None:
        """Count one packet (any order; events outside the grid or frame are ignored)."""
        k, cells = self._cells(events)
        if len(k) == 0:
            return
        self.used += len(k)
        lo, hi = int(k.min()), int(k.max()) + 1
        self.counts[lo:hi] += np.bincount(k - lo, minlength=hi - lo)
        if self.ordered and (int(k[0]) < self._last or bool(np.any(k[1:] < k[:-1]))):
            self.ordered = False
        self._last = max(self._last, hi - 1)
        if self.ordered:
            self._fh.write(encode(cells, self.itemsize))

    def offsets(self, n_windows: int | None = None) -> np.ndarray:
        """int64 [n + 1] offsets of the first ``n_windows`` windows (all by default)."""
        n = self.grid.n_windows if n_windows is None else int(n_windows)
        out = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(self.counts[:n], out=out[1:])
        return out

    def start_placing(self) -> None:
        """Begin the second pass: the file is reserved at its final size (all windows)."""
        self._fh.close()
        total = int(self.counts.sum())
        with open(self.path, "wb") as fh:
            if total:
                os.posix_fallocate(fh.fileno(), 0, total * self.itemsize)  # ENOSPC now, not later
        self._mm = (np.memmap(self.path, dtype=np.uint8, mode="r+", shape=(total * self.itemsize,))
                    if total else np.zeros(0, np.uint8))
        self._cursor = self.offsets()[:-1].copy()

    def place(self, events: Any) -> None:
        """Second pass: write each event's cell at its window's next free position."""
        assert self._mm is not None and self._cursor is not None
        k, cells = self._cells(events)
        if len(k) == 0:
            return
        order = np.argsort(k, kind="stable")
        k, cells = k[order], cells[order]
        first = np.r_[0, np.flatnonzero(k[1:] != k[:-1]) + 1]
        rank = np.arange(len(k)) - np.repeat(first, np.diff(np.r_[first, len(k)]))
        pos = self._cursor[k] + rank
        np.add.at(self._cursor, k[first], np.diff(np.r_[first, len(k)]))
        raw = np.frombuffer(encode(cells, self.itemsize), np.uint8).reshape(-1, self.itemsize)
        idx = pos[:, None] * self.itemsize + np.arange(self.itemsize)
        self._mm[idx.ravel()] = raw.ravel()

    def close(self, n_windows: int) -> int:
        """Finish the file, keeping the events of the first ``n_windows`` windows; returns the
        number of events kept."""
        keep = int(self.counts[:int(n_windows)].sum())
        if self._mm is not None:
            if isinstance(self._mm, np.memmap):
                self._mm.flush()
            self._mm = None
        else:
            self._fh.close()
        with open(self.path, "r+b") as fh:
            fh.truncate(keep * self.itemsize)
            fh.flush()
            os.fsync(fh.fileno())
        return keep

    def abort(self) -> None:
        self._mm = None
        if not self._fh.closed:
            self._fh.close()


def load_sparse(data_path: Path, offsets: np.ndarray, itemsize: int,
                shape: tuple[int, int, int]) -> SparseEvents:
    """Memory-map the raw cells at ``data_path`` (an empty file gives an empty array)."""
    size = data_path.stat().st_size
    data = (np.memmap(data_path, dtype=np.uint8, mode="r", shape=(size,)) if size
            else np.zeros(0, np.uint8))
    return SparseEvents(data, np.asarray(offsets, dtype=np.int64), int(itemsize),
                        (N_CHANNELS, int(shape[1]), int(shape[2])))
