"""Event frames: shapes, counts (vs per-event counting and tonic), windows, downsampling."""

from __future__ import annotations

import numpy as np
import pytest

from snnexp.data.frames import (
    MAX_COUNT,
    OFF_CHANNEL,
    ON_CHANNEL,
    WindowGrid,
    accumulate,
    common_range,
    events_to_frames,
    frame_shape,
    frames_bincount,
    make_grid,
)
from snnexp.data.recording import Events
from snnexp.errors import DataError

T0 = 1_700_000_000_000_000


def random_events(width: int, height: int, n: int, seconds: float, seed: int = 0) -> Events:
    rng = np.random.default_rng(seed)
    return Events(T0 + np.sort(rng.integers(0, int(seconds * 1e6), n)),
                  rng.integers(0, width, n), rng.integers(0, height, n), rng.integers(0, 2, n))


def per_event_count(ev: Events, width: int, height: int, grid: WindowGrid, f: int = 1):
    """The plainest possible reference: np.add.at over (window, polarity, y, x)."""
    c, h, w = frame_shape(width, height, f)
    out = np.zeros((grid.n_windows, c, h, w), np.int64)
    k = (ev.t - grid.origin_us) // grid.window_us
    x, y = ev.x.astype(np.int64) // f, ev.y.astype(np.int64) // f
    m = (ev.t >= grid.origin_us) & (k < grid.n_windows) & (x < w) & (y < h)
    np.add.at(out, (k[m], ev.p[m].astype(np.int64), y[m], x[m]), 1)
    return out


@pytest.mark.parametrize("width,height", [(346, 260), (640, 480), (320, 240)])
def test_frames_match_per_event_count_and_tonic(width: int, height: int) -> None:
    from tonic.transforms import ToFrame

    ev = random_events(width, height, 60_000, 0.2)
    start, end = int(ev.t[0]), int(ev.t[-1])
    grid, total = make_grid(start, end, 10_000)
    assert total == (end - start) // 10_000 == grid.n_windows
    frames = events_to_frames(ev, width, height, grid)
    assert frames.shape == (grid.n_windows, 2, height, width) and frames.dtype == np.uint16
    np.testing.assert_array_equal(frames, per_event_count(ev, width, height, grid))
    np.testing.assert_array_equal(frames, frames_bincount(ev, width, height, grid))
    # tonic's ToFrame (channel = polarity, like ours) over the same windows
    to_frame = ToFrame(sensor_size=(width, height, 2), time_window=10_000, start_time=start,
                       end_time=grid.end_us)
    tonic_frames = to_frame(ev.to_structured())
    np.testing.assert_array_equal(frames, tonic_frames[:grid.n_windows])
    assert frames.sum() == ((ev.t >= start) & (ev.t < grid.end_us)).sum()


def test_channels_and_window_boundaries() -> None:
    ev = Events(np.array([T0, T0 + 9_999, T0 + 10_000, T0 + 25_000, T0 + 30_000]),
                np.array([1, 1, 2, 3, 0]), np.array([0, 0, 1, 2, 0]), np.array([1, 0, 1, 1, 0]))
    grid = WindowGrid(T0, 10_000, 3)  # [T0, T0+10ms), [.., +20ms), [.., +30ms)
    f = events_to_frames(ev, 4, 3, grid)
    assert f[0, ON_CHANNEL, 0, 1] == 1 and f[0, OFF_CHANNEL, 0, 1] == 1
    assert f[1, ON_CHANNEL, 1, 2] == 1 and f[2, ON_CHANNEL, 2, 3] == 1
    assert f.sum() == 4  # the event at the end of the last window is not in it
    np.testing.assert_array_equal(grid.ends(), T0 + np.array([10_000, 20_000, 30_000]))


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_downsampling_sums_blocks_and_drops_the_remainder(factor: int) -> None:
    width, height = 346, 260
    ev = random_events(width, height, 80_000, 0.05, seed=factor)
    grid, _ = make_grid(int(ev.t[0]), int(ev.t[-1]), 10_000)
    full = events_to_frames(ev, width, height, grid).astype(np.int64)
    small = events_to_frames(ev, width, height, grid, downsample=factor)
    h, w = height // factor, width // factor
    assert small.shape == (grid.n_windows, 2, h, w)
    blocks = full[:, :, :h * factor, :w * factor].reshape(grid.n_windows, 2, h, factor, w, factor)
    np.testing.assert_array_equal(small, blocks.sum(axis=(3, 5)))
    assert frame_shape(346, 260, 4) == (2, 65, 86)


def test_counts_saturate_instead_of_wrapping() -> None:
    n = MAX_COUNT + 10
    ev = Events(np.full(n, T0), np.zeros(n), np.zeros(n), np.ones(n))
    out = np.zeros((1, 2, 1, 1), np.uint16)
    used, saturated = accumulate(out, ev, WindowGrid(T0, 10_000, 1))
    assert out[0, ON_CHANNEL, 0, 0] == MAX_COUNT and saturated == 10 and used == n


def test_time_range_and_trimming() -> None:
    assert common_range("r", 100, 900, 250, 1200) == (250, 900)
    with pytest.raises(DataError, match="do not overlap"):
        common_range("r", 100, 200, 300, 400)
    grid, total = make_grid(1000, 1000 + 95_000, 10_000, trim_start=2, trim_end=3)
    assert total == 9 and grid.n_windows == 4 and grid.origin_us == 21_000
