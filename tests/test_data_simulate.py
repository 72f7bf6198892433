"""The built-in simulated recording: determinism, motion, IMU, events, file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from snnexp.config.schema import SimConfig
from snnexp.data.frames import events_to_frames, make_grid
from snnexp.data.recording import Events, read_recording
from snnexp.data.simulate import (
    T0_US,
    motion,
    simulate_arrays,
    simulate_imu,
    simulate_recording,
    simulated_roll_deg,
)

SMALL = SimConfig(duration_s=2.0, width=64, height=48, seed=4)


def test_same_config_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    a, b = simulate_arrays(SMALL), simulate_arrays(SMALL)
    for name in "txyp":
        assert getattr(a.events, name).tobytes() == getattr(b.events, name).tobytes()
    assert a.imu.acc.tobytes() == b.imu.acc.tobytes()
    assert a.imu.gyro.tobytes() == b.imu.gyro.tobytes()
    other = simulate_arrays(SimConfig(duration_s=2.0, width=64, height=48, seed=5))
    assert len(other.events) != len(a.events) or not np.array_equal(other.events.x, a.events.x)
    p1 = simulate_recording(SMALL, tmp_path / "one.aedat4")
    p2 = simulate_recording(SMALL, tmp_path / "two.aedat4")
    assert p1.read_bytes() == p2.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.aedat4", "two.aedat4"]


def test_written_file_reads_back_as_a_camera_recording(tmp_path: Path) -> None:
    sim = SimConfig(duration_s=2.0, width=320, height=240, seed=1, camera_name="SIM_X")
    arrays = simulate_arrays(sim)
    rec = read_recording(simulate_recording(sim, tmp_path / "sub" / "sim.aedat4"))
    assert (rec.camera_name, rec.width, rec.height) == ("SIM_X", 320, 240)
    np.testing.assert_array_equal(rec.events.t, arrays.events.t)
    np.testing.assert_array_equal(rec.events.x, arrays.events.x)
    np.testing.assert_array_equal(rec.imu.gyro, arrays.imu.gyro.astype(np.float32))
    assert rec.events.x.max() < 320 and rec.events.y.max() < 240
    assert np.all(np.diff(rec.events.t) >= 0)
    assert rec.events.t[0] >= T0_US and rec.events.t[-1] < T0_US + 2_000_000
    np.testing.assert_array_equal(np.diff(rec.imu.t), 1000)  # 1 kHz


def test_motion_stays_in_range_with_reversals_and_peak_speed() -> None:
    sim = SimConfig(duration_s=120.0)
    m = motion(sim)
    t = np.linspace(0, sim.duration_s, 120_001)
    roll, rate = m.roll_deg(t), m.rate_deg_s(t)
    assert roll.min() >= sim.roll_min_deg and roll.max() <= sim.roll_max_deg
    assert roll.max() - roll.min() > 0.8 * (sim.roll_max_deg - sim.roll_min_deg)  # covers it
    assert 0.6 * sim.max_speed_deg_s < np.abs(rate).max() <= sim.max_speed_deg_s + 1e-9
    assert np.sum(np.diff(np.sign(rate)) != 0) >= 6  # reversals
    np.testing.assert_allclose(np.gradient(roll, t), rate, atol=0.05)  # rate is d roll / dt


def test_imu_is_consistent_with_the_motion() -> None:
    sim = SimConfig(duration_s=3.0, seed=9)
    imu = simulate_imu(sim)
    t_s = (imu.t - T0_US) * 1e-6
    true = simulated_roll_deg(sim, imu.t)
    rate = motion(sim).rate_deg_s(t_s)
    bias = imu.gyro.mean(0) - np.array([rate.mean(), 0, 0])
    assert np.linalg.norm(bias) == np.float64(np.linalg.norm(bias))
    assert abs(np.linalg.norm(bias) - sim.gyro_bias_deg_s) < 0.05
    assert np.std(imu.gyro[:, 0] - rate) < 2 * sim.gyro_noise_deg_s
    expected_acc = np.stack([np.zeros_like(true), np.sin(np.radians(true)),
                             np.cos(np.radians(true))], 1)
    assert np.abs(imu.acc - expected_acc).max() < 6 * sim.accel_noise_g
    assert np.all(np.linalg.norm(imu.gyro, axis=1) > 0)  # never exactly zero


def test_events_come_from_the_whole_image_at_a_reasonable_rate() -> None:
    sim = SimConfig(duration_s=4.0, width=96, height=72, seed=0)
    ev = simulate_arrays(sim).events
    rate_per_pixel = len(ev) / (sim.duration_s * sim.width * sim.height)
    assert 0.2 < rate_per_pixel < 5.0  # a few M events / minute at 346 x 260
    assert 0.3 < ev.p.mean() < 0.7
    grid, _ = make_grid(int(ev.t[0]), int(ev.t[-1]), 10_000)
    counts = events_to_frames(ev, sim.width, sim.height, grid, downsample=8).sum(axis=(0, 1))
    assert (counts > 0).mean() > 0.9  # every 8 x 8 block sees events, not only the horizon
    # more events while the camera turns fast than while it is slow
    speed = np.abs(motion(sim).rate_deg_s((grid.ends() - T0_US) * 1e-6))
    per_window = events_to_frames(ev, sim.width, sim.height, grid).sum(axis=(1, 2, 3))
    fast, slow = speed > np.quantile(speed, 0.7), speed < np.quantile(speed, 0.3)
    assert per_window[fast].mean() > 2 * per_window[slow].mean()


def test_roll_is_visible_in_the_events() -> None:
    """The horizon's orientation in the event image is -roll (the camera turns by roll, the
    scene appears turned the other way)."""
    sim = SimConfig(duration_s=4.0, width=128, height=96, seed=6, noise_rate_hz=0.0)
    ev = simulate_arrays(sim).events
    grid, _ = make_grid(int(ev.t[0]), int(ev.t[-1]), 50_000)
    frames = events_to_frames(ev, sim.width, sim.height, grid).sum(axis=1).astype(float)
    roll = simulated_roll_deg(sim, grid.ends() - 25_000)
    errors = []
    for img, r in zip(frames, roll):
        if img.sum() < 500:
            continue
        y, x = np.nonzero(img > np.quantile(img[img > 0], 0.8))  # the strongest edge
        w = img[y, x]
        cov = np.cov(np.stack([x, y]), aweights=w)
        vals, vecs = np.linalg.eigh(cov)
        angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1]))  # main axis, image coords
        errors.append(abs((angle + r + 90) % 180 - 90))  # line orientations are mod 180
    assert len(errors) >= 10 and np.median(errors) < 3


def test_events_streamed_in_segments_equal_the_whole_simulation() -> None:
    from snnexp.data.simulate import iter_events

    sim = SimConfig(duration_s=3.0, width=40, height=30, seed=4, noise_rate_hz=0.0)
    whole = Events.concatenate(list(iter_events(sim, segment_s=10.0)))
    parts = list(iter_events(sim, segment_s=0.7))
    assert len(parts) == 5 and len(whole) > 1000
    pieces = Events.concatenate(parts)
    for name in ("t", "x", "y", "p"):
        np.testing.assert_array_equal(getattr(pieces, name), getattr(whole, name))
    noisy = SimConfig(duration_s=3.0, width=40, height=30, seed=4, noise_rate_hz=5.0)
    chunks = list(iter_events(noisy, segment_s=0.7))
    t = np.concatenate([c.t for c in chunks])
    assert np.all(np.diff(t) >= 0) and len(t) > len(whole)  # noise merged in time order
