"""Orientation labels from the IMU: a Madgwick filter (IMU-only) and interpolation at window ends.

The reference runs ``ahrs.filters.Madgwick.updateIMU`` in a Python loop (gain 0.033, gyroscope
converted from deg/s to rad/s, initial quaternion from a filter built on the first sample at
1000 Hz, each later update with the real time step). :func:`madgwick_reference` is that loop;
:func:`madgwick_fast` is an operation-for-operation twin compiled with numba (a plain Python loop
when numba is missing) that agrees with it to ~1e-14 and is two orders of magnitude faster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from snnexp.config.schema import TARGETS

DEFAULT_GAIN = 0.033
INITIAL_FREQUENCY_HZ = 1000.0  # frequency of the filter that gives the initial quaternion


# ----------------------------------------------------------------------------- inputs
def _inputs(t: np.ndarray, acc: np.ndarray, gyro: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 copies: time steps in s, accelerometer (any unit), gyroscope deg/s -> rad/s."""
    t = np.asarray(t, dtype=np.int64).ravel()
    acc = np.ascontiguousarray(acc, dtype=np.float64).reshape(-1, 3)
    gyro = np.radians(np.ascontiguousarray(gyro, dtype=np.float64).reshape(-1, 3))
    if not len(t) == len(acc) == len(gyro):
        raise ValueError(f"IMU arrays differ in length: t {len(t)}, acc {len(acc)}, "
                         f"gyro {len(gyro)}")
    if len(t) == 0:
        raise ValueError("no IMU samples")
    dt = np.diff(t).astype(np.float64) * 1e-6
    return dt, acc, gyro


def initial_quaternion(acc: np.ndarray, gyro: np.ndarray) -> np.ndarray:
    """The reference's start: ``Madgwick(gyr, acc, frequency=1000).Q[0]`` on the first sample.

    ``gyro`` is in rad/s (only its shape matters: ahrs starts from the accelerometer).
    """
    from ahrs.filters import Madgwick

    acc0 = np.array(acc, dtype=np.float64).reshape(-1, 3)[:1]
    gyr0 = np.array(gyro, dtype=np.float64).reshape(-1, 3)[:1]
    return np.array(Madgwick(gyr=gyr0, acc=acc0, frequency=INITIAL_FREQUENCY_HZ).Q[0])


# ----------------------------------------------------------------------------- reference
def madgwick_reference(t: np.ndarray, acc: np.ndarray, gyro: np.ndarray,
                       gain: float = DEFAULT_GAIN) -> np.ndarray:
    """Quaternions [N, 4] (w, x, y, z) from the plain ``ahrs`` loop, as the notebook runs it.

    ``t`` in microseconds, ``acc`` in g, ``gyro`` in deg/s (the camera's units).
    """
    from ahrs.filters import Madgwick

    dt, acc, gyro = _inputs(t, acc, gyro)
    q = np.zeros((len(acc), 4))
    q[0] = initial_quaternion(acc, gyro)
    filt = Madgwick(frequency=INITIAL_FREQUENCY_HZ, gain=gain)
    for i in range(1, len(acc)):
        q[i] = filt.updateIMU(q[i - 1], gyro[i], acc[i], dt=dt[i - 1])
    return q


# ----------------------------------------------------------------------------- compiled twin
def _madgwick_loop(q0: Any, dt: Any, ax: Any, ay: Any, az: Any, gx: Any, gy: Any, gz: Any,
                   gain: float, out: Any) -> None:
    """``ahrs`` ``updateIMU`` unrolled into scalar operations, in the same order.

    Works on numpy arrays under numba and on Python lists without it; ``out`` is [N][4].
    """
    qw, qx, qy, qz = q0[0], q0[1], q0[2], q0[3]
    out[0][0], out[0][1], out[0][2], out[0][3] = qw, qx, qy, qz
    for i in range(1, len(dt) + 1):
        # Quaternion(q): normalise the prior
        n = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        qw, qx, qy, qz = qw / n, qx / n, qy / n, qz / n
        wx, wy, wz = gx[i], gy[i], gz[i]
        if math.sqrt(wx * wx + wy * wy + wz * wz) == 0.0:
            out[i][0], out[i][1], out[i][2], out[i][3] = qw, qx, qy, qz
            continue
        # qDot = 0.5 * q.product([0, *gyr])   (eq. 12)
        dw = 0.5 * (qw * 0.0 - qx * wx - qy * wy - qz * wz)
        dx = 0.5 * (qw * wx + qx * 0.0 + qy * wz - qz * wy)
        dy = 0.5 * (qw * wy - qx * wz + qy * 0.0 + qz * wx)
        dz = 0.5 * (qw * wz + qx * wy - qy * wx + qz * 0.0)
        a0, a1, a2 = ax[i], ay[i], az[i]
        a_norm = math.sqrt(a0 * a0 + a1 * a1 + a2 * a2)
        if a_norm > 0.0:
            a0, a1, a2 = a0 / a_norm, a1 / a_norm, a2 / a_norm
            m = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
            pw, px, py, pz = qw / m, qx / m, qy / m, qz / m
            f0 = 2.0 * (px * pz - pw * py) - a0  # objective function (eq. 25)
            f1 = 2.0 * (pw * px + py * pz) - a1
            f2 = 2.0 * (0.5 - px * px - py * py) - a2
            if math.sqrt(f0 * f0 + f1 * f1 + f2 * f2) > 0.0:
                # gradient = J.T @ f   (eq. 26, 34)
                g0 = -2.0 * py * f0 + 2.0 * px * f1 + 0.0 * f2
                g1 = 2.0 * pz * f0 + 2.0 * pw * f1 + -4.0 * px * f2
                g2 = -2.0 * pw * f0 + 2.0 * pz * f1 + -4.0 * py * f2
                g3 = 2.0 * px * f0 + 2.0 * py * f1 + 0.0 * f2
                gn = math.sqrt(g0 * g0 + g1 * g1 + g2 * g2 + g3 * g3)
                g0, g1, g2, g3 = g0 / gn, g1 / gn, g2 / gn, g3 / gn
                dw -= gain * g0  # (eq. 33)
                dx -= gain * g1
                dy -= gain * g2
                dz -= gain * g3
        h = dt[i - 1]
        qw, qx, qy, qz = qw + dw * h, qx + dx * h, qy + dy * h, qz + dz * h  # (eq. 13)
        n = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        qw, qx, qy, qz = qw / n, qx / n, qy / n, qz / n
        out[i][0], out[i][1], out[i][2], out[i][3] = qw, qx, qy, qz


_KERNEL: Callable[..., None] | None = None


def _kernel() -> Callable[..., None] | None:
    """The numba-compiled loop (cached on disk by numba), or None without numba."""
    global _KERNEL
    if _KERNEL is None:
        try:
            import numba
        except ImportError:
            return None
        _KERNEL = numba.njit(cache=True, nogil=True)(_madgwick_loop)
    return _KERNEL


def madgwick_fast(t: np.ndarray, acc: np.ndarray, gyro: np.ndarray,
                  gain: float = DEFAULT_GAIN) -> np.ndarray:
    """Quaternions [N, 4] (w, x, y, z), the same as :func:`madgwick_reference`, compiled."""
    dt, acc, gyro = _inputs(t, acc, gyro)
    q0 = initial_quaternion(acc, gyro)
    cols = [np.ascontiguousarray(acc[:, j]) for j in range(3)]
    cols += [np.ascontiguousarray(gyro[:, j]) for j in range(3)]
    kernel = _kernel()
    if kernel is not None:
        out = np.empty((len(acc), 4))
        kernel(q0, dt, *cols, float(gain), out)
        return out
    rows = [[0.0] * 4 for _ in range(len(acc))]  # pure-Python fallback on lists (no numba)
    _madgwick_loop(q0.tolist(), dt.tolist(), *(c.tolist() for c in cols), float(gain), rows)
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


# ----------------------------------------------------------------------------- angles
def quaternion_angles(q: np.ndarray, target: str = "roll") -> np.ndarray:
    """Angle in radians of quaternion(s) ``q`` [..., 4] (w, x, y, z) for ``target``.

    roll, pitch, yaw: the ZYX Euler angles about x, y, z (roll as in the reference).
    optical_roll: rotation about the optical axis of an iniVation camera (IMU x right, y down,
    z forward), from the estimated gravity direction in the sensor frame; 0 when upright.
    """
    q = np.asarray(q, dtype=np.float64)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    if target == "roll":
        return np.arctan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    if target == "pitch":
        return np.arcsin(np.clip(2.0 * (w * y - z * x), -1.0, 1.0))
    if target == "yaw":
        return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    if target == "optical_roll":
        # 'up' in the sensor frame is (2(xz - wy), 2(wx + yz), 1 - 2(x^2 + y^2)); the camera
        # turned by theta about z sees it at (-sin theta, -cos theta, .)
        return np.arctan2(2.0 * (w * y - x * z), -2.0 * (w * x + y * z))
    raise ValueError(f"unknown target {target!r}; allowed values are {', '.join(TARGETS)}")


def imu_angles(t: np.ndarray, acc: np.ndarray, gyro: np.ndarray, target: str = "roll",
               gain: float = DEFAULT_GAIN) -> np.ndarray:
    """``target`` angle (radians, float64 [N]) at every IMU sample, via :func:`madgwick_fast`.

    ``t`` in microseconds, ``acc`` in g, ``gyro`` in deg/s.
    """
    if target not in TARGETS:
        quaternion_angles(np.array([1.0, 0.0, 0.0, 0.0]), target)  # raises the ValueError
    return quaternion_angles(madgwick_fast(t, acc, gyro, gain), target)


# ----------------------------------------------------------------------------- interpolation
def interp_extrapolate(x: Sequence[float] | np.ndarray, xp: Sequence[float] | np.ndarray,
                       fp: Sequence[float] | np.ndarray) -> np.ndarray:
    """``np.interp`` inside [xp[0], xp[-1]], linear extrapolation from the end segments outside.

    ``xp`` must be strictly increasing.
    """
    x = np.asarray(x, dtype=np.float64)
    xp = np.asarray(xp, dtype=np.float64)
    fp = np.asarray(fp, dtype=np.float64)
    out = np.interp(x, xp, fp)
    if len(xp) < 2:
        return out
    lo, hi = x < xp[0], x > xp[-1]
    if lo.any():
        slope = (fp[1] - fp[0]) / (xp[1] - xp[0])
        out[lo] = fp[0] + (x[lo] - xp[0]) * slope
    if hi.any():
        slope = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
        out[hi] = fp[-1] + (x[hi] - xp[-1]) * slope
    return out


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles mapped into [-pi, pi]; values already inside are returned unchanged."""
    a = np.array(a, dtype=np.float64)
    out = (a > math.pi) | (a < -math.pi)
    if out.any():
        a[out] = (a[out] + math.pi) % (2.0 * math.pi) - math.pi
    return a


def labels_at(t_query: np.ndarray, imu_t: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Angles (radians) at times ``t_query`` (us): linear interpolation with extrapolation.

    The angle series is unwrapped first (no false jump across +-pi) and the result is wrapped
    back into [-pi, pi]. Repeated IMU timestamps keep their last sample.
    """
    t_query = np.asarray(t_query, dtype=np.int64)
    imu_t = np.asarray(imu_t, dtype=np.int64)
    angles = np.asarray(angles, dtype=np.float64)
    if len(imu_t) != len(angles) or len(imu_t) == 0:
        raise ValueError(f"need matching, non-empty IMU times ({len(imu_t)}) and angles "
                         f"({len(angles)})")
    if np.any(imu_t[1:] < imu_t[:-1]):
        order = np.argsort(imu_t, kind="stable")
        imu_t, angles = imu_t[order], angles[order]
    keep = np.ones(len(imu_t), dtype=bool)
    keep[:-1] = imu_t[1:] != imu_t[:-1]
    imu_t, angles = imu_t[keep], np.unwrap(angles[keep])
    t0 = imu_t[0]
    out = interp_extrapolate((t_query - t0).astype(np.float64),
                             (imu_t - t0).astype(np.float64), angles)
    return wrap_angle(out)
