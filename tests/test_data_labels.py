"""Madgwick labels: compiled twin vs the ahrs loop, accuracy on the simulator, target angles,
interpolation at window ends."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from snnexp.config.schema import TARGETS, SimConfig
from snnexp.data.labels import (
    imu_angles,
    initial_quaternion,
    interp_extrapolate,
    labels_at,
    madgwick_fast,
    madgwick_reference,
    quaternion_angles,
)
from snnexp.data.recording import read_recording
from snnexp.data.simulate import simulate_imu, simulate_recording, simulated_roll_deg


def _imu_stream(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A camera-like stream: jittered ~1 kHz timestamps, tumbling motion, zero-gyro samples."""
    rng = np.random.default_rng(seed)
    t = 1_700_000_000_000_000 + np.cumsum(rng.integers(950, 1050, n))
    sim = simulate_imu(SimConfig(duration_s=n / 1000.0, seed=seed))
    acc, gyro = sim.acc[:n].copy(), sim.gyro[:n].copy()
    gyro[:, 1] += 40 * np.sin(np.arange(n) / 300.0)  # rotate about every axis
    gyro[:, 2] += 25 * np.cos(np.arange(n) / 170.0)
    gyro[50:60] = 0.0  # ahrs returns the prior unchanged when the gyro vector is exactly 0
    acc[70] = 0.0  # and skips the correction when the accelerometer is 0
    return t, acc, gyro


def test_fast_matches_ahrs_loop() -> None:
    t, acc, gyro = _imu_stream(3000)
    q_ref = madgwick_reference(t, acc, gyro, gain=0.033)
    q_fast = madgwick_fast(t, acc, gyro, gain=0.033)
    assert np.abs(q_fast - q_ref).max() < 1e-9
    for target in TARGETS:
        a, b = quaternion_angles(q_fast, target), quaternion_angles(q_ref, target)
        assert np.abs(np.angle(np.exp(1j * (a - b)))).max() < 1e-6, target
    np.testing.assert_allclose(q_fast[50:60], np.repeat(q_fast[49:50], 10, 0), atol=1e-15)


def test_initial_quaternion_is_the_reference_start() -> None:
    from ahrs.common.orientation import acc2q

    acc = np.array([[0.1, 0.5, 0.8]])
    np.testing.assert_allclose(initial_quaternion(acc, np.zeros((1, 3))), acc2q(acc[0].copy()))


def test_madgwick_roll_tracks_the_simulated_roll(tmp_path: Path) -> None:
    sim = SimConfig(duration_s=5.0, width=48, height=36, seed=3)
    rec = read_recording(simulate_recording(sim, tmp_path / "sim.aedat4"))
    roll = imu_angles(rec.imu.t, rec.imu.acc, rec.imu.gyro, "roll", 0.033)
    true = np.radians(simulated_roll_deg(sim, rec.imu.t))
    err = np.degrees(np.angle(np.exp(1j * (roll - true))))
    assert np.sqrt(np.mean(err ** 2)) < 2.0
    assert np.abs(err[500:]).max() < 2.0


def test_target_angles_of_known_rotations() -> None:
    a = 0.7

    def rot(axis: int) -> np.ndarray:
        q = np.zeros(4)
        q[0], q[1 + axis] = math.cos(a / 2), math.sin(a / 2)
        return q

    assert quaternion_angles(rot(0), "roll") == pytest.approx(a)
    assert quaternion_angles(rot(1), "pitch") == pytest.approx(a)
    assert quaternion_angles(rot(2), "yaw") == pytest.approx(a)
    assert quaternion_angles(rot(2), "roll") == pytest.approx(0.0)
    with pytest.raises(ValueError, match="optical_roll"):
        quaternion_angles(rot(0), "heading")


@pytest.mark.parametrize("theta_deg", [-150.0, -60.0, 0.0, 35.0, 120.0])
def test_optical_roll_for_an_inivation_mounted_imu(theta_deg: float) -> None:
    """A still camera turned by theta about its optical axis (IMU x right, y down, z forward):
    the accelerometer reads 'up' = (-sin theta, -cos theta, 0) g."""
    th = math.radians(theta_deg)
    rng = np.random.default_rng(0)
    n = 3000
    t = np.arange(n, dtype=np.int64) * 1000
    acc = np.array([-math.sin(th), -math.cos(th), 0.0]) + rng.normal(0, 0.01, (n, 3))
    gyro = rng.normal(0, 0.2, (n, 3))
    angle = imu_angles(t, acc, gyro, "optical_roll")
    assert math.degrees(abs(np.angle(np.exp(1j * (angle[-1] - th))))) < 1.0


def test_labels_interpolate_at_window_ends() -> None:
    imu_t = 1_700_000_000_000_000 + np.cumsum(np.full(2000, 997))
    angles = np.sin(np.arange(2000) / 150.0)
    ends = imu_t[0] + 2500 + np.arange(150) * 10_000
    expected = np.interp((ends - imu_t[0]).astype(float), (imu_t - imu_t[0]).astype(float), angles)
    np.testing.assert_allclose(labels_at(ends, imu_t, angles), expected, atol=1e-12)


def test_labels_extrapolate_linearly_and_unwrap() -> None:
    xp = np.array([0.0, 1.0, 2.0])
    np.testing.assert_allclose(interp_extrapolate([-1.0, 3.0, 1.5], xp, [0.0, 1.0, 3.0]),
                               [-1.0, 5.0, 2.0])
    # samples on both sides of +-pi: the label between them is near pi, not 0
    t = np.array([0, 1000, 2000], dtype=np.int64)
    ang = np.array([math.pi - 0.02, -math.pi + 0.02, -math.pi + 0.06])
    mid = labels_at(np.array([500]), t, ang)[0]
    assert abs(abs(mid) - math.pi) < 1e-9
    assert labels_at(np.array([1500]), t, ang)[0] == pytest.approx(-math.pi + 0.04)


def test_labels_tolerate_repeated_imu_timestamps() -> None:
    t = np.array([0, 1000, 1000, 2000, 3000], dtype=np.int64)
    ang = np.array([0.0, 0.1, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(labels_at(np.array([1500, 2500, 4000]), t, ang), [0.15, 0.25, 0.4])
