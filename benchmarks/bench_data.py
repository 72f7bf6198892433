"""Data benchmarks on a simulated full-resolution recording (snnexp.data).

* event decoding + framing (+ labelling) throughput of an uncached prepare, in events/s;
* labelling: the compiled Madgwick filter vs the plain ``ahrs`` loop (speed ratio, max angle
  difference in radians) on the recording's IMU stream, alternated over repetitions;
* cold vs cached start: ``prepare_recording`` with an empty cache vs a filled one.

    python -m benchmarks.bench_data [--duration 20] [--reps 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ensure_allocator, machine, summary, write_json


def _time(fn, *args) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="simulated seconds")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    from snnexp.config.schema import DataConfig, SimConfig
    from snnexp.data import labels as L
    from snnexp.data.pipeline import prepare_recording
    from snnexp.data.simulate import simulate_imu, simulate_recording

    sim = SimConfig(duration_s=args.duration)
    result: dict[str, Any] = {"machine": machine(), "recording": dataclasses.asdict(sim)}
    with tempfile.TemporaryDirectory() as tmp:
        path = simulate_recording(sim, Path(tmp) / "sim.aedat4")
        cfg = DataConfig(paths=[str(path)], cache=False)

        # decoding + framing (+ labelling), uncached
        times, n_events = [], 0
        for _ in range(args.reps):
            dt, prep = _time(prepare_recording, path, cfg)
            times.append(dt)
            n_events = int(prep.meta.get("n_events", 0))
        result["prepare_uncached"] = {"seconds": summary(times), "n_events": n_events,
                                      "events_per_s": n_events / min(times),
                                      "windows": prep.n_windows}
        print(f"prepare (decode + frames + labels): {n_events / min(times):,.0f} events/s "
              f"({n_events} events, {min(times):.2f} s)", flush=True)

        # labelling: compiled vs ahrs loop, alternated
        imu = simulate_imu(sim)
        L.madgwick_fast(imu.t[:100], imu.acc[:100], imu.gyro[:100])  # compile / load cache
        fast_t, ref_t, max_diff = [], [], 0.0
        for _ in range(args.reps):
            t_ref, q_ref = _time(L.madgwick_reference, imu.t, imu.acc, imu.gyro)
            t_fast, q_fast = _time(L.madgwick_fast, imu.t, imu.acc, imu.gyro)
            ref_t.append(t_ref)
            fast_t.append(t_fast)
            for target in ("roll", "pitch", "yaw"):
                d = L.wrap_angle(L.quaternion_angles(q_fast, target)
                                 - L.quaternion_angles(q_ref, target))
                max_diff = max(max_diff, float(np.max(np.abs(d))))
        ratios = [r / f for r, f in zip(ref_t, fast_t)]
        result["labelling"] = {"samples": len(imu.t), "ahrs_s": summary(ref_t),
                               "fast_s": summary(fast_t), "ratio": summary(ratios),
                               "max_angle_diff_rad": max_diff}
        print(f"labelling: {len(imu.t)} samples, ahrs {np.median(ref_t):.2f} s, fast "
              f"{np.median(fast_t) * 1e3:.1f} ms, ratio {np.median(ratios):.0f}x, max angle "
              f"difference {max_diff:.1e} rad", flush=True)

        # cold vs cached start
        cold, warm = [], []
        for rep in range(args.reps):
            cached = DataConfig(paths=[str(path)], cache=True,
                                cache_dir=str(Path(tmp) / f"cache{rep}"))
            cold.append(_time(prepare_recording, path, cached)[0])
            warm.append(_time(prepare_recording, path, cached)[0])
        ratios = [c / w for c, w in zip(cold, warm)]
        result["start"] = {"cold_s": summary(cold), "cached_s": summary(warm),
                           "ratio": summary(ratios)}
        print(f"start: cold {np.median(cold):.2f} s, cached {np.median(warm) * 1e3:.1f} ms, "
              f"ratio {np.median(ratios):.0f}x", flush=True)
    print(f"wrote {write_json('data', result)}")
    return result


if __name__ == "__main__":
    ensure_allocator("benchmarks.bench_data")
    main()
