"""Event frames built on the fly from the sparse store, with optional augmentation.

:func:`frame_batch` turns B sequences of windows into uint16 frames [T, B, 2, H, W] with one
compiled pass over their events (numba): each event adds one count to its cell, saturating at
65 535. Augmentation (:class:`Augment`, off by default) is drawn per sequence from a seed, so a
batch is a function of (seed, epoch, batch) wherever it is built (DataLoader workers included):

- ``polarity_swap``: probability that a sequence's ON and OFF channels are swapped;
- ``shift_px``: the sequence is shifted by up to this many pixels in x and y (events moved
  outside the frame are dropped);
- ``drop``: probability that an event is dropped;
- ``noise_hz``: background-noise events added per pixel and second (uniform over cells).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from snnexp.data.sparse import SparseEvents, decode

MAX_COUNT = 65535


@dataclass(frozen=True)
class Augment:
    """Event-level augmentation of training sequences (see the module docstring)."""

    polarity_swap: float = 0.0
    shift_px: int = 0
    drop: float = 0.0
    noise_hz: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.polarity_swap > 0 or self.shift_px > 0 or self.drop > 0
                    or self.noise_hz > 0)

    @classmethod
    def from_config(cls, cfg: Any) -> Augment:
        if cfg is None:
            return cls()
        get = cfg.get if isinstance(cfg, dict) else lambda k, d: getattr(cfg, k, d)
        return cls(float(get("polarity_swap", 0.0)), int(get("shift_px", 0)),
                   float(get("drop", 0.0)), float(get("noise_hz", 0.0)))


def _frame_into(data: Any, offsets: Any, itemsize: int, lo: int, n: int, h: int, w: int,
                out: Any, b: int, flip: bool, dx: int, dy: int, drop: float,
                noise: float, seed: int) -> None:
    """Count windows ``lo .. lo + n - 1`` into ``out[:, b]`` (uint16 [T, B, 2 * H * W])."""
    hw = h * w
    transform = flip or dx != 0 or dy != 0
    if seed >= 0:
        np.random.seed(seed)
    for t in range(n):
        row = out[t, b]
        for i in range(offsets[lo + t], offsets[lo + t + 1]):
            if drop > 0.0 and np.random.random() < drop:
                continue
            j = i * itemsize
            c = np.int64(data[j]) | (np.int64(data[j + 1]) << 8)
            if itemsize >= 3:
                c |= np.int64(data[j + 2]) << 16
            if itemsize == 4:
                c |= np.int64(data[j + 3]) << 24
            if transform:
                p = c // hw
                r = c - p * hw
                y = r // w + dy
                x = r - (r // w) * w + dx
                if flip:
                    p = 1 - p
                if x < 0 or x >= w or y < 0 or y >= h:
                    continue
                c = (p * h + y) * w + x
            if row[c] < MAX_COUNT:
                row[c] += 1
        if noise > 0.0:
            for _ in range(np.random.poisson(noise)):
                c = np.random.randint(0, 2 * hw)
                if row[c] < MAX_COUNT:
                    row[c] += 1


_KERNEL: Callable[..., None] | None = None


def _kernel() -> Callable[..., None]:
    """The numba-compiled :func:`_frame_into` (cached on disk by numba)."""
    global _KERNEL
    if _KERNEL is None:
        import numba

        _KERNEL = numba.njit(cache=True, nogil=True)(_frame_into)
    return _KERNEL


def frame_batch(sources: Sequence[SparseEvents], columns: Sequence[tuple[int, int, int]],
                augment: Augment | None = None, seed: int = 0, window_us: int = 10_000
                ) -> np.ndarray:
    """uint16 frames [T, B, 2, H, W]: column b holds windows ``start .. start + T - 1`` of
    ``sources[rec]`` for ``columns[b] = (rec, start, T)``; ``augment`` drawn from ``seed``."""
    length = columns[0][2]
    c, h, w = sources[columns[0][0]].shape
    out = np.zeros((length, len(columns), c * h * w), dtype=np.uint16)
    kernel = _kernel()
    aug = augment if augment is not None and augment.active else None
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xA06]) if aug else None
    for b, (rec, start, n) in enumerate(columns):
        src = sources[rec]
        if aug is None:
            kernel(src.data, src.offsets, src.itemsize, start, n, h, w, out, b, False, 0, 0,
                   0.0, 0.0, -1)
            continue
        flip = bool(rng.random() < aug.polarity_swap)
        dx, dy = (int(v) for v in rng.integers(-aug.shift_px, aug.shift_px + 1, 2))
        noise = aug.noise_hz * h * w * window_us * 1e-6
        kernel(src.data, src.offsets, src.itemsize, start, n, h, w, out, b, flip, dx, dy,
               float(aug.drop), float(noise), int(rng.integers(0, 2**31 - 1)))
    return out.reshape(length, len(columns), c, h, w)


def frame_windows(src: SparseEvents, lo: int, hi: int) -> np.ndarray:
    """Dense uint16 frames [hi - lo, 2, H, W] of windows ``lo .. hi - 1`` of one store."""
    if hi <= lo:
        return np.zeros((0, *src.shape), dtype=np.uint16)
    return frame_batch([src], [(0, lo, hi - lo)])[:, 0]


def frames_reference(src: SparseEvents, lo: int, hi: int) -> np.ndarray:
    """The plain numpy version of :func:`frame_windows` (one bincount), for checks."""
    c, h, w = src.shape
    cells = decode(src.data[int(src.offsets[lo]) * src.itemsize:
                            int(src.offsets[hi]) * src.itemsize], src.itemsize)
    k = np.repeat(np.arange(hi - lo), np.diff(src.offsets[lo:hi + 1]))
    counts = np.bincount(k * (c * h * w) + cells, minlength=(hi - lo) * c * h * w)
    return np.minimum(counts, MAX_COUNT).astype(np.uint16).reshape(hi - lo, c, h, w)
