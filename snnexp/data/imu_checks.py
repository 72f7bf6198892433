"""Sanity checks of a recording's IMU stream before it becomes labels.

The Madgwick filter trusts its input: time stamps that run backwards, an accelerometer that
is stuck or reads in other units than g, or non-finite samples give wrong labels without any
error. :func:`check_imu` refuses such a stream with a :class:`~snnexp.errors.DataError` that
gives the numbers, and warns (with numbers) about gaps, over which labels are interpolated.
"""

from __future__ import annotations

import logging

import numpy as np

from snnexp.errors import DataError

log = logging.getLogger(__name__)

GRAVITY_RANGE_G = (0.7, 1.3)  # accepted median |acc| (g): gravity plus moderate motion
MAX_BACKWARD_US = 1_000  # total time the clock may run backwards (jitter) before refusing
STUCK_FRACTION = 0.5  # refuse when more than this share of samples repeats the previous reading
STUCK_ROTATION_DEG = 5.0  # ... while the gyroscope says the camera turned by more than this
GAP_WARN_US = 100_000  # warn about IMU gaps longer than this


def check_imu(t: np.ndarray, acc: np.ndarray, gyro: np.ndarray, source: str) -> list[str]:
    """Refuse an unusable IMU stream; return (and log) warnings about a doubtful one.

    ``t`` in microseconds, ``acc`` [N, 3] in g, ``gyro`` [N, 3] in deg/s; ``source`` names the
    recording in messages.
    """
    t = np.asarray(t, dtype=np.int64)
    acc, gyro = np.asarray(acc, dtype=np.float64), np.asarray(gyro, dtype=np.float64)
    fix = "repair or replace the recording (or leave it out of data.paths)"
    bad = ~(np.isfinite(acc).all(axis=1) & np.isfinite(gyro).all(axis=1))
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(f"recording {source}: {int(bad.sum())} of {len(t)} IMU samples hold NaN "
                        f"or infinite values (first at t={t[first]} us), which would make the "
                        f"labels NaN: {fix}")
    dt = np.diff(t)
    back = dt < 0
    if back.any():
        total = int(-dt[back].sum())
        first = int(np.argmax(back)) + 1
        if total > MAX_BACKWARD_US:
            raise DataError(
                f"recording {source}: the IMU time stamps run backwards {int(back.sum())} times "
                f"(by {total / 1e3:.1f} ms in total, first at sample {first}, t={t[first]} us), "
                f"so orientation labels would be wrong by the rotation in that time: {fix}")
    magnitude = np.linalg.norm(acc, axis=1)
    median_g = float(np.median(magnitude)) if len(magnitude) else 0.0
    low, high = GRAVITY_RANGE_G
    if not low <= median_g <= high:
        raise DataError(
            f"recording {source}: the accelerometer's median magnitude is {median_g:.3f} g, "
            f"expected about 1 g (gravity; accepted {low}-{high} g): the accelerometer is stuck, "
            f"disconnected or not in units of g, and every label would be off: {fix}")
    if len(acc) > 10:
        repeats = float(np.mean(np.all(acc[1:] == acc[:-1], axis=1)))
        # at rest a noise-free accelerometer may repeat itself; stuck is repeating while turning
        turned = np.cumsum(gyro[1:] * (np.maximum(dt, 0)[:, None] / 1e6), axis=0)
        rotation = float(np.max(np.linalg.norm(turned, axis=1))) if len(turned) else 0.0
        if repeats > STUCK_FRACTION and rotation > STUCK_ROTATION_DEG:
            raise DataError(
                f"recording {source}: the accelerometer repeats its previous reading in "
                f"{repeats:.0%} of the IMU samples while the gyroscope turns by up to "
                f"{rotation:.0f} deg (a stuck sensor), so the filter cannot correct its drift: "
                f"{fix}")
    warnings = []
    if back.any():
        warnings.append(f"the IMU time stamps run backwards {int(back.sum())} times by "
                        f"{int(-dt[back].sum())} us in total (jitter; samples are reordered)")
    gaps = dt > GAP_WARN_US
    if gaps.any():
        longest = int(np.argmax(dt))
        warnings.append(f"the IMU stream has {int(gaps.sum())} gaps longer than "
                        f"{GAP_WARN_US / 1e3:.0f} ms (longest {dt[longest] / 1e6:.3f} s after "
                        f"t={t[longest]} us); labels inside them are interpolated")
    for text in warnings:
        log.warning("warning: recording %s: %s", source, text)
    return warnings
