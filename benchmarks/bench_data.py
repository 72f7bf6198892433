"""Data benchmarks on a simulated full-resolution recording (snnexp.data).

* event decoding + framing (+ labelling) throughput of an uncached prepare, in events/s;
* labelling: the compiled Madgwick filter vs the plain ``ahrs`` loop (speed ratio, max angle
  difference in radians) on the recording's IMU stream, alternated over repetitions;
* framing: training frames/s at the reference size (2 x 260 x 346, SEW + BN, B=4, K=10) with
  frames built on the fly from the sparse cache (in a DataLoader worker) vs read from a dense
  frame cache (memory-mapped .npy, the layout before the sparse cache), alternated;
* cold vs cached start of a run: the time a training run needs to reach its first training
  step (``Trainer.setup()`` -- data, network, optimizer, logger -- plus the first batch), with
  an empty data cache vs the cache the cold run filled, each run in a new process, on
  recordings with the built-in data's settings (4x4 downsampling) of 60 s (the built-in one)
  and 300 s; measured from the run's start (imports done) and for the whole process (Python
  start and imports included); also ``prepare_recording`` alone.

    python -m benchmarks.bench_data [--duration 20] [--start-durations 60,300] [--reps 3]
                                    [--framing-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
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
    parser.add_argument("--start-durations", default="60,300",
                        help="simulated seconds of the recordings for the cold / cached start")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--framing-only", action="store_true",
                        help="only the on-the-fly vs dense framing comparison")
    parser.add_argument("--framing-batches", type=int, default=3,
                        help="training batches (of 3 TBPTT chunks) per framing repetition")
    parser.add_argument("--framing-workers", type=int, default=1, help="data.num_workers")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (all cores)")
    args = parser.parse_args(argv)
    if args.framing_only:
        result = {"machine": machine(), "framing": framing(args.reps, args.framing_batches,
                                                          workers=args.framing_workers,
                                                          threads=args.threads)}
        print(f"wrote {write_json('data_framing', result)}")
        return result
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

    result["framing"] = framing(args.reps, args.framing_batches, workers=args.framing_workers,
                                threads=args.threads)
    result["start"] = [start(float(d), args.reps) for d in args.start_durations.split(",") if d]
    print(f"wrote {write_json('data', result)}")
    return result


def framing(reps: int, n_batches: int, duration: float = 6.0, workers: int = 1,
            threads: int | None = None) -> dict[str, Any]:
    """Training frames/s with frames built on the fly (sparse cache, one DataLoader worker) vs
    copied from a dense memory-mapped frame cache, alternated A/B over ``reps``."""
    import torch

    from snnexp.config.schema import (
        DataConfig,
        LoggerConfig,
        NormConfig,
        SimConfig,
        TrainConfig,
        TrainerConfig,
    )
    from snnexp.data.simulate import simulate_recording
    from snnexp.training.loop import Trainer
    from snnexp.training.tbptt import run_sequence

    seq, batch = 31, 4  # 3 TBPTT chunks of K = 10 per batch
    with tempfile.TemporaryDirectory() as tmp:
        path = simulate_recording(SimConfig(duration_s=duration, seed=5), Path(tmp) / "r.aedat4")
        data_cfg = DataConfig(paths=[str(path)], cache_dir=str(Path(tmp) / "cache"),
                              downsample=1, seq_length=seq, batch_size=batch,
                              num_workers=workers)
        cfg = TrainConfig(data=data_cfg, logger=LoggerConfig(name="none"),
                          norm=NormConfig(kind="bn"),
                          trainer=TrainerConfig(progress=False, num_threads=threads))
        trainer = Trainer(cfg, Path(tmp) / "run")
        trainer.setup()
        data = trainer.data
        prep = data.prepared[0]
        dense = np.lib.format.open_memmap(Path(tmp) / "frames.npy", mode="w+", dtype=np.uint16,
                                          shape=(prep.n_windows, *prep.input_shape))
        for lo in range(0, prep.n_windows, 200):
            dense[lo:lo + 200] = prep.frames(lo, min(prep.n_windows, lo + 200))
        dense.flush()
        del dense

        class Dense:  # the cache layout before: frames [N, 2, H, W] memory-mapped
            frames = np.load(Path(tmp) / "frames.npy", mmap_mode="r")
            labels = prep.labels

        def dense_batches(epoch: int):
            order = data.train_order(epoch)
            for lo in range(0, len(order), batch):
                refs = [data.train_refs[int(i)] for i in order[lo:lo + batch]]
                frames = np.empty((seq, len(refs), *prep.input_shape), np.uint16)
                labels = np.empty((seq, len(refs)), np.float32)
                for b, r in enumerate(refs):
                    frames[:, b] = Dense.frames[r.start:r.start + seq]
                    labels[:, b] = Dense.labels[r.start:r.start + seq]
                yield torch.from_numpy(frames), torch.from_numpy(labels)

        def run(batches) -> float:
            n, start_t = 0, time.perf_counter()
            for i, (frames, labels) in enumerate(batches):
                if i == n_batches:
                    break
                run_sequence(trainer.model, frames, labels, k=10, optimizer=trainer.optimizer,
                             execution="chunk")
                n += frames.shape[0] * frames.shape[1]
            return n / (time.perf_counter() - start_t)

        assert data.num_train_sequences >= n_batches * batch
        fb = next(iter(data.train_batches(0)))[0]
        db = next(dense_batches(0))[0]
        assert fb.equal(db)  # the same frames either way
        run(data.train_batches(0))  # warm-up (kernels, allocator)
        sparse_fps, dense_fps = [], []
        for rep in range(reps):
            for kind in (("sparse", "dense") if rep % 2 == 0 else ("dense", "sparse")):
                if kind == "sparse":
                    sparse_fps.append(run(data.train_batches(rep + 1)))
                else:
                    dense_fps.append(run(dense_batches(rep + 1)))
        trainer.close()
        event_bytes = prep.events.data.nbytes + prep.events.offsets.nbytes
        dense_bytes = prep.n_windows * int(np.prod(prep.input_shape)) * 2
    ratio = [a / b for a, b in zip(sparse_fps, dense_fps)]
    out = {"shape": list(prep.input_shape), "batch": batch, "seq": seq, "batches": n_batches,
           "workers": workers, "threads": threads,
           "sparse_fps": summary(sparse_fps), "dense_fps": summary(dense_fps),
           "ratio": summary(ratio), "sparse_bytes": event_bytes, "dense_bytes": dense_bytes}
    print(f"framing, training at 2x260x346: on the fly {np.median(sparse_fps):.1f} frames/s vs "
          f"dense cache {np.median(dense_fps):.1f} frames/s: {np.median(ratio):.3f}x "
          f"[{min(ratio):.3f}-{max(ratio):.3f}]; cache {event_bytes / 1e6:.1f} MB vs "
          f"{dense_bytes / 1e6:.0f} MB", flush=True)
    return out


def _time_to_first_step(data_cfg: Any, out_dir: Path) -> float:
    """Seconds from a run's start (setup) until its first training step can run."""
    from snnexp.config.schema import LoggerConfig, TrainConfig, TrainerConfig
    from snnexp.training.loop import Trainer

    cfg = TrainConfig(data=data_cfg, logger=LoggerConfig(name="none"),
                      trainer=TrainerConfig(progress=False))
    start_t = time.perf_counter()
    trainer = Trainer(cfg, out_dir)
    trainer.setup()
    frames, labels = next(iter(trainer.data.train_batches(1)))
    elapsed = time.perf_counter() - start_t
    assert frames.shape[0] == labels.shape[0] > cfg.trainer.tbptt_k
    trainer.close()
    return elapsed


# What every run imports whatever the cache holds (torch.optim imports torch._dynamo, ~1 s, at
# the first optimizer); done before the clock starts in the "run" measurement.
_RUN_IMPORTS = ("import torch, torch._dynamo, snnexp.training.loop, snnexp.data.pipeline, "
                "snnexp.models")


def _first_step_in_new_process(data_cfg: Any, out_dir: Path) -> tuple[float, float]:
    """A run to its first training step in a fresh interpreter (as a re-run: nothing of an
    earlier run in memory). Returns (seconds from the run's start, i.e. after the imports;
    seconds of the whole process up to then, interpreter start and imports included)."""
    from omegaconf import OmegaConf

    cfg_file = out_dir.with_suffix(".yaml")
    cfg_file.write_text(OmegaConf.to_yaml(OmegaConf.structured(data_cfg)))
    code = (f"import sys, time; {_RUN_IMPORTS}; from pathlib import Path; "
            "from omegaconf import OmegaConf; from snnexp.config.schema import DataConfig; "
            "from benchmarks.bench_data import _time_to_first_step; "
            "cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), "
            "OmegaConf.load(sys.argv[1]))); print(_time_to_first_step(cfg, Path(sys.argv[2])))")
    start_t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, str(cfg_file), str(out_dir)],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"the timed run failed: {done.stderr.strip()[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1]), time.perf_counter() - start_t


def start(duration: float, reps: int) -> dict[str, Any]:
    """Cold (empty cache) vs cached time to the first training step, each run in a new
    process, alternated, on a recording with the built-in data's settings."""
    from omegaconf import OmegaConf

    from snnexp.config.schema import DataConfig
    from snnexp.data.pipeline import prepare_recording
    from snnexp.data.simulate import simulate_recording

    conf = OmegaConf.load(Path(__file__).parents[1] / "conf" / "data" / "synthetic.yaml")
    overrides = {"paths": [], "cache_dir": "", "sim": {"duration_s": duration}}
    base = OmegaConf.merge(OmegaConf.structured(DataConfig), conf, overrides)
    runs: dict[str, list[float]] = {"cold": [], "cached": [], "cold_process": [],
                                    "cached_process": [], "prepare_cold": [], "prepare_cached": []}
    with tempfile.TemporaryDirectory() as tmp:
        data_cfg = OmegaConf.to_object(base)
        path = simulate_recording(data_cfg.sim, Path(tmp) / "rec.aedat4")
        data_cfg.paths = [str(path)]
        for rep in range(reps):
            data_cfg.cache_dir = str(Path(tmp) / f"cache{rep}")
            for kind in ("cold", "cached"):  # the cold run fills the cache the cached one uses
                run_s, process_s = _first_step_in_new_process(data_cfg, Path(tmp) / f"{kind}{rep}")
                runs[kind].append(run_s)
                runs[f"{kind}_process"].append(process_s)
            data_cfg.cache_dir = str(Path(tmp) / f"prepare{rep}")
            runs["prepare_cold"].append(_time(prepare_recording, path, data_cfg)[0])
            runs["prepare_cached"].append(_time(prepare_recording, path, data_cfg)[0])
    ratio = [c / w for c, w in zip(runs["cold"], runs["cached"])]
    process_ratio = [c / w for c, w in zip(runs["cold_process"], runs["cached_process"])]
    prepare_ratio = [c / w for c, w in zip(runs["prepare_cold"], runs["prepare_cached"])]
    out = {"recording_s": duration, "downsample": data_cfg.downsample,
           **{f"{k}_s": summary(v) for k, v in runs.items()}, "ratio": summary(ratio),
           "process_ratio": summary(process_ratio), "prepare_ratio": summary(prepare_ratio)}
    med = np.median
    print(f"start, {duration:.0f} s recording: run start -> first training step "
          f"{med(runs['cold']):.2f} s cold vs {med(runs['cached']):.3f} s cached: "
          f"{med(ratio):.1f}x [{min(ratio):.1f}-{max(ratio):.1f}]; whole process (Python start "
          f"and imports included) {med(runs['cold_process']):.2f} s vs "
          f"{med(runs['cached_process']):.2f} s: {med(process_ratio):.1f}x; prepare_recording "
          f"alone {med(prepare_ratio):.0f}x", flush=True)
    return out


if __name__ == "__main__":
    ensure_allocator("benchmarks.bench_data")
    main()
