"""The sparse event store and frames built from it on the fly: counts, sizes, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from snnexp.config.schema import DataConfig, SimConfig
from snnexp.data.frames import WindowGrid, events_to_frames, frame_shape, make_grid
from snnexp.data.framing import Augment, frame_batch, frames_reference
from snnexp.data.pipeline import prepare_recording
from snnexp.data.recording import Events
from snnexp.data.simulate import simulate_recording
from snnexp.data.sparse import SparseWriter, cell_itemsize, decode, encode, load_sparse

T0 = 1_700_000_000_000_000


def random_events(width: int, height: int, n: int, seconds: float, seed: int = 0) -> Events:
    rng = np.random.default_rng(seed)
    return Events(T0 + np.sort(rng.integers(0, int(seconds * 1e6), n)),
                  rng.integers(0, width, n), rng.integers(0, height, n), rng.integers(0, 2, n))


def write_store(tmp_path: Path, ev: Events, grid: WindowGrid, width: int, height: int,
                f: int = 1, packets: list[Events] | None = None):
    w = SparseWriter(tmp_path / "events.bin", grid, width, height, downsample=f)
    packets = packets or [ev[lo:lo + 4096] for lo in range(0, len(ev), 4096)]
    for pk in packets:
        w.add(pk)
    if not w.ordered:
        w.start_placing()
        for pk in packets:
            w.place(pk)
    w.close(grid.n_windows)
    return load_sparse(tmp_path / "events.bin", w.offsets(), w.itemsize,
                       frame_shape(width, height, f)), w


@pytest.mark.parametrize("width,height,f,itemsize", [(64, 48, 1, 2), (346, 260, 1, 3),
                                                     (346, 260, 4, 2), (640, 480, 2, 3)])
def test_frames_from_the_store_equal_counting_the_events(tmp_path: Path, width: int, height: int,
                                                         f: int, itemsize: int) -> None:
    ev = random_events(width, height, 40_000, 0.2, seed=width)
    grid, _ = make_grid(int(ev.t[0]) + 3_000, int(ev.t[-1]), 7_000)
    store, w = write_store(tmp_path, ev, grid, width, height, f)
    assert w.ordered and store.itemsize == itemsize
    expected = events_to_frames(ev, width, height, grid, downsample=f)
    np.testing.assert_array_equal(store.frames(0, grid.n_windows), expected)
    np.testing.assert_array_equal(frames_reference(store, 0, grid.n_windows), expected)
    np.testing.assert_array_equal(store.frames(3, 9), expected[3:9])
    assert store.n_events == int(expected.sum())
    assert len(store.data) == store.n_events * itemsize  # nothing but the used events


def test_out_of_order_packets_are_placed_in_a_second_pass(tmp_path: Path) -> None:
    ev = random_events(64, 48, 30_000, 0.3, seed=5)
    grid, _ = make_grid(int(ev.t[0]) + 5_000, int(ev.t[-1]), 7_000)
    packets = [ev[lo:min(lo + 4096, 20_000)] for lo in range(0, 20_000, 4096)]
    packets += [ev[20_000:][::-1], ev[100:200]]  # an unsorted packet, then old windows again
    store, w = write_store(tmp_path, ev, grid, 64, 48, packets=packets)
    assert not w.ordered
    expected = (events_to_frames(ev, 64, 48, grid).astype(np.int64)
                + events_to_frames(ev[100:200], 64, 48, grid))
    np.testing.assert_array_equal(store.frames(0, grid.n_windows), expected)


def test_cells_round_trip_in_every_width() -> None:
    for cells in (1 << 16, 1 << 24, 1 << 26):
        size = cell_itemsize(cells)
        x = np.random.default_rng(0).integers(0, cells, 1000)
        assert np.array_equal(decode(np.frombuffer(encode(x, size), np.uint8), size), x)
    assert [cell_itemsize(c) for c in (2 * 65 * 86, 2 * 260 * 346, 1 << 25)] == [2, 3, 4]


def test_counts_saturate_and_batches_stack_sequences(tmp_path: Path) -> None:
    n = 65_535 + 7
    ev = Events(np.full(n, T0), np.zeros(n), np.zeros(n), np.ones(n))
    store, _ = write_store(tmp_path, ev, WindowGrid(T0, 10_000, 2), 4, 3)
    assert int(store.frames(0, 1)[0, 1, 0, 0]) == 65_535
    ev2 = random_events(16, 12, 5000, 0.1, seed=2)
    grid, _ = make_grid(int(ev2.t[0]), int(ev2.t[-1]), 5_000)
    (tmp_path / "b").mkdir()
    other, _ = write_store(tmp_path / "b", ev2, grid, 16, 12)
    frames = frame_batch([other, other], [(0, 2, 5), (1, 9, 5)])
    assert frames.shape == (5, 2, 2, 12, 16) and frames.dtype == np.uint16
    np.testing.assert_array_equal(frames[:, 1], other.frames(9, 14))


def test_augmentations_are_seeded_and_do_what_they_say(tmp_path: Path) -> None:
    ev = random_events(32, 24, 20_000, 0.2, seed=3)
    grid, _ = make_grid(int(ev.t[0]), int(ev.t[-1]), 10_000)
    store, _ = write_store(tmp_path, ev, grid, 32, 24)
    cols = [(0, 0, 10)]
    plain = frame_batch([store], cols)[:, 0].astype(np.int64)
    swap = frame_batch([store], cols, Augment(polarity_swap=1.0), seed=1)[:, 0]
    np.testing.assert_array_equal(swap, plain[:, ::-1])  # ON <-> OFF
    shifted = frame_batch([store], cols, Augment(shift_px=3), seed=4)[:, 0].astype(np.int64)
    dy, dx = next((dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                  if np.array_equal(shifted[..., max(dy, 0):24 + min(dy, 0),
                                            max(dx, 0):32 + min(dx, 0)],
                                    plain[..., max(-dy, 0):24 - max(dy, 0),
                                          max(-dx, 0):32 - max(dx, 0)]))
    assert (dy, dx) != (0, 0) and shifted.sum() < plain.sum()  # moved; some fell off the edge
    assert frame_batch([store], cols, Augment(drop=1.0), seed=1).sum() == 0
    half = frame_batch([store], cols, Augment(drop=0.5), seed=1).sum()
    assert abs(half / plain.sum() - 0.5) < 0.05
    noise = Augment(noise_hz=50.0)  # 50 / pixel / s over 32 x 24 pixels and 10 ms: ~384 a frame
    extra = frame_batch([store], cols, noise, seed=1).astype(np.int64).sum() - plain.sum()
    assert abs(extra / 10 - 384) < 60
    again = frame_batch([store], cols, Augment(0.5, 2, 0.3, 10.0), seed=9)
    np.testing.assert_array_equal(again, frame_batch([store], cols, Augment(0.5, 2, 0.3, 10.0),
                                                     seed=9))
    assert not np.array_equal(again, frame_batch([store], cols, Augment(0.5, 2, 0.3, 10.0),
                                                 seed=10))


@pytest.fixture(scope="module")
def davis_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sim = SimConfig(duration_s=1.0, width=346, height=260, seed=1)
    return simulate_recording(sim, tmp_path_factory.mktemp("davis") / "rec.aedat4")


@pytest.mark.parametrize("f,window_us", [(1, 10_000), (2, 10_000), (4, 10_000), (8, 1_000),
                                         (1, 100)])
def test_cache_is_smaller_than_the_recording(davis_file: Path, tmp_path: Path, f: int,
                                             window_us: int) -> None:
    prep = prepare_recording(davis_file, DataConfig(paths=[str(davis_file)], downsample=f,
                                                    window_us=window_us,
                                                    cache_dir=str(tmp_path / "cache")))
    entry = Path(prep.meta["cache"])
    size = sum(p.stat().st_size for p in entry.iterdir())
    assert size <= 1.5 * davis_file.stat().st_size, (size, davis_file.stat().st_size)
    assert prep.events.n_events == prep.meta["n_events_kept"] > 0
