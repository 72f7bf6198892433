"""Event frames: events cut into fixed time windows, counted per polarity and pixel.

Window ``i`` of a :class:`WindowGrid` covers ``[origin + i * window, origin + (i + 1) * window)``
and becomes one uint16 frame ``[2, H, W]`` (channel 0 = OFF, 1 = ON, like tonic's ``ToFrame``).
Counting is vectorised (``np.bincount`` on flat indices, or ``np.unique`` when a packet spans a
large sparse range) and works in chunks, so temporary memory stays bounded. Counts saturate at
:data:`MAX_COUNT` instead of wrapping. Training frames are built from the sparse store instead
(:mod:`snnexp.data.framing`); these functions are the plain reference and serve whole arrays of
events.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from snnexp.errors import DataError

OFF_CHANNEL = 0
ON_CHANNEL = 1
N_CHANNELS = 2
FRAME_DTYPE = np.uint16
MAX_COUNT = int(np.iinfo(FRAME_DTYPE).max)
CHUNK_EVENTS = 1 << 22  # events counted at once by events_to_frames (bounds temporary memory)


@dataclass(frozen=True)
class WindowGrid:
    """``n_windows`` consecutive windows of ``window_us`` starting at ``origin_us``."""

    origin_us: int
    window_us: int
    n_windows: int

    def __post_init__(self) -> None:
        if self.window_us <= 0:
            raise ValueError(f"window_us must be positive, got {self.window_us}")
        if self.n_windows < 0:
            raise ValueError(f"n_windows must be >= 0, got {self.n_windows}")

    @property
    def end_us(self) -> int:
        """End (exclusive) of the last window."""
        return int(self.origin_us + self.n_windows * self.window_us)

    def starts(self) -> np.ndarray:
        """Start time (us, int64) of every window."""
        return self.origin_us + np.arange(self.n_windows, dtype=np.int64) * self.window_us

    def ends(self) -> np.ndarray:
        """End time (us, int64) of every window: where its label is taken."""
        return self.origin_us + np.arange(1, self.n_windows + 1, dtype=np.int64) * self.window_us

    def window_index(self, t: np.ndarray) -> np.ndarray:
        """Window index of each timestamp (may be < 0 or >= n_windows: outside the grid)."""
        return (np.asarray(t, dtype=np.int64) - self.origin_us) // self.window_us


def make_grid(start_us: int, end_us: int, window_us: int, trim_start: int = 0,
              trim_end: int = 0) -> tuple[WindowGrid, int]:
    """The complete windows in ``[start_us, end_us]`` minus the trimmed ones.

    Returns the grid and the number of complete windows before trimming; the grid is empty
    (n_windows 0) when the trims take everything.
    """
    total = max(0, (int(end_us) - int(start_us)) // int(window_us))
    n = max(0, total - int(trim_start) - int(trim_end))
    return WindowGrid(int(start_us) + int(trim_start) * int(window_us), int(window_us), n), total


def common_range(name: str | os.PathLike[str], ev_first: int, ev_last: int, imu_first: int,
                 imu_last: int) -> tuple[int, int]:
    """The time range covered by both events and IMU: (max of firsts, min of lasts)."""
    start, end = max(int(ev_first), int(imu_first)), min(int(ev_last), int(imu_last))
    if start >= end:
        raise DataError(
            f"{name}: events ({int(ev_first)} .. {int(ev_last)} us) and IMU ({int(imu_first)} .. "
            f"{int(imu_last)} us) do not overlap in time; use a recording whose event and IMU "
            "streams were recorded together")
    return start, end


def frame_shape(width: int, height: int, downsample: int = 1) -> tuple[int, int, int]:
    """(channels, H, W) of a frame: the sensor size divided by ``downsample`` (remainder cut)."""
    return N_CHANNELS, int(height) // int(downsample), int(width) // int(downsample)


# ----------------------------------------------------------------------------- counting
def _pixel_indices(events: Any, grid: WindowGrid, height: int, width: int, downsample: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Window index and in-frame flat index ``(channel * H + y) * W + x`` of the usable events.

    Usable: inside the grid and inside the (downsampled) frame.
    """
    t = np.asarray(events.t, dtype=np.int64)
    if len(t) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    k = (t - grid.origin_us) // grid.window_us
    x = np.asarray(events.x).astype(np.int64, copy=False)
    y = np.asarray(events.y).astype(np.int64, copy=False)
    if downsample != 1:
        x, y = x // downsample, y // downsample
    ch = (np.asarray(events.p) > 0).astype(np.int64)  # OFF 0, ON 1
    ok = (k >= 0) & (k < grid.n_windows) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
    pix = (ch * height + y) * width + x
    if not ok.all():
        k, pix = k[ok], pix[ok]
    return k, pix


def _add_counts(flat: np.ndarray, idx: np.ndarray) -> int:
    """Add one count per index into the uint16 1-d view ``flat``, saturating; returns the
    number of counts that did not fit."""
    if len(idx) == 0:
        return 0
    lo, hi = int(idx.min()), int(idx.max()) + 1
    span = hi - lo
    if span <= 16 * len(idx) + (1 << 16):  # dense enough: one bincount over the span
        tot = np.bincount(idx - lo, minlength=span)
        seg = flat[lo:hi]
        tot += seg
        saturated = 0
        if int(tot.max()) > MAX_COUNT:
            over = tot - MAX_COUNT
            saturated = int(over[over > 0].sum())
            np.minimum(tot, MAX_COUNT, out=tot)
        seg[...] = tot
        return saturated
    where, counts = np.unique(idx, return_counts=True)  # sparse: only the touched cells
    tot = flat[where].astype(np.int64) + counts
    saturated = 0
    if int(tot.max()) > MAX_COUNT:
        over = tot - MAX_COUNT
        saturated = int(over[over > 0].sum())
        np.minimum(tot, MAX_COUNT, out=tot)
    flat[where] = tot
    return saturated


def _flat_view(out: np.ndarray) -> np.ndarray:
    if out.dtype != FRAME_DTYPE or out.ndim != 4 or not out.flags.c_contiguous:
        raise ValueError("frames must be a C-contiguous uint16 array [N, 2, H, W]")
    return out.reshape(-1)


def accumulate(out: np.ndarray, events: Any, grid: WindowGrid, *, downsample: int = 1,
               first_window: int = 0) -> tuple[int, int]:
    """Add the counts of ``events`` into ``out`` [rows, 2, H, W] holding windows
    ``first_window .. first_window + rows - 1`` of ``grid``.

    Events outside those windows or the frame are ignored. Returns ``(used, saturated)``: the
    events counted and the counts lost to saturation at :data:`MAX_COUNT`.
    """
    flat = _flat_view(out)
    rows, _, h, w = out.shape
    k, pix = _pixel_indices(events, grid, h, w, downsample)
    k = k - first_window
    ok = (k >= 0) & (k < rows)
    if not ok.all():
        k, pix = k[ok], pix[ok]
    return len(k), _add_counts(flat, k * (N_CHANNELS * h * w) + pix)


def events_to_frames(events: Any, width: int, height: int, grid: WindowGrid,
                     downsample: int = 1, out: np.ndarray | None = None) -> np.ndarray:
    """uint16 frames [n_windows, 2, H // downsample, W // downsample] of ``events``.

    ``out`` (zeros, e.g. a memmap) receives the counts if given. Events are counted in chunks of
    :data:`CHUNK_EVENTS`, so temporary memory stays bounded.
    """
    shape = (grid.n_windows, *frame_shape(width, height, downsample))
    if out is None:
        out = np.zeros(shape, dtype=FRAME_DTYPE)
    elif tuple(out.shape) != shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {shape}")
    n = len(events.t)
    for lo in range(0, n, CHUNK_EVENTS):
        hi = min(n, lo + CHUNK_EVENTS)
        accumulate(out, _Slice(events, lo, hi), grid, downsample=downsample)
    return out


def frames_bincount(events: Any, width: int, height: int, grid: WindowGrid,
                    downsample: int = 1) -> np.ndarray:
    """The one-shot version of :func:`events_to_frames` (one bincount over the whole grid)."""
    c, h, w = frame_shape(width, height, downsample)
    k, pix = _pixel_indices(events, grid, h, w, downsample)
    counts = np.bincount(k * (c * h * w) + pix, minlength=grid.n_windows * c * h * w)
    return np.minimum(counts, MAX_COUNT).astype(FRAME_DTYPE).reshape(grid.n_windows, c, h, w)


class _Slice:
    """Events ``lo:hi`` as array views (no dependency on the Events class' slicing)."""

    def __init__(self, events: Any, lo: int, hi: int) -> None:
        self.t, self.x = events.t[lo:hi], events.x[lo:hi]
        self.y, self.p = events.y[lo:hi], events.p[lo:hi]
