"""Second-epoch data time of data=tonic: the project's frame cache vs tonic's DiskCachedDataset.

Writes an N-MNIST-sized fixture (``--samples`` samples of ``--events`` events over 300 ms in
tonic's NMNIST layout), frames it once through tonic's transforms (Denoise 10 ms, ToFrame 10 ms:
31 frames of 2 x 34 x 34) into both caches, then times, alternated per repetition in one
process, one epoch of padded training batches (``--batch`` samples) from each warm cache:

- ``snnexp``: :func:`snnexp.data.tonic_data.build_tonic` (reads its one ``.npz`` entry) and
  every batch of ``ClassBundle.train_batches`` (frames built from the cached event cells);
- ``tonic``: ``tonic.DiskCachedDataset`` over the same tonic dataset and transform (one HDF5
  file per sample, lzf-compressed dense frames), every sample read and the batch padded and
  stacked the same way.

    python -m benchmarks.bench_tonic_cache [--samples 2000] [--reps 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import ensure_allocator, machine, summary, write_json


def _cfg(root: Path, cache: Path, batch: int):
    from snnexp.config.schema import DataConfig

    return DataConfig(dataset="NMNIST", root=str(root), cache_dir=str(cache), cache=True,
                      denoise_us=10000, downsample=1, window_us=10000, n_time_bins=None,
                      split=[0.9, 0.1, 0.0], batch_size=batch, download=False,
                      limit_samples=None)


def _snnexp_epoch(cfg) -> tuple[int, list[int]]:
    """(samples served, the training samples' indices in the official training set)."""
    from snnexp.data.tonic_data import build_tonic

    data = build_tonic(cfg, seed=0)
    return sum(int(f.shape[1]) for f, _, _ in data.train_batches(1)), data.roles["train"]


def _tonic_epoch(cached, order: np.ndarray, batch: int) -> int:
    n = 0
    for lo in range(0, len(order), batch):
        items = [cached[int(i)] for i in order[lo:lo + batch]]
        steps = max(f.shape[0] for f, _ in items)
        frames = np.zeros((steps, len(items), *items[0][0].shape[1:]), np.uint16)
        for b, (f, _) in enumerate(items):
            frames[:f.shape[0], b] = f
        lengths = torch.tensor([f.shape[0] for f, _ in items])
        labels = torch.tensor([int(y) for _, y in items])
        torch.from_numpy(frames), lengths, labels
        n += len(items)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=2000, help="training samples (test: 1/6)")
    ap.add_argument("--events", type=int, default=4000, help="events per sample")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    ensure_allocator("benchmarks.bench_tonic_cache")
    torch.set_num_threads(1)
    import tonic

    from snnexp.data.tonic_data import TONIC_SETS, open_set, transform
    from tests.tonic_fixtures import write_nmnist

    work = Path(tempfile.mkdtemp(prefix="bench_tonic_"))
    try:
        per_class = max(1, args.samples // 10)
        write_nmnist(work / "data", (per_class, max(1, per_class // 6)), count=args.events,
                     duration_us=300_000)
        cfg = _cfg(work / "data", work / "cache", args.batch)
        t0 = time.perf_counter()
        _, train_index = _snnexp_epoch(cfg)
        cold_snnexp = time.perf_counter() - t0
        spec = TONIC_SETS["NMNIST"]
        ds = open_set(spec, work / "data", train=True, download=False)
        tf, _ = transform(cfg, tuple(ds.sensor_size))
        ds.transform = tf
        cached = tonic.DiskCachedDataset(ds, cache_path=str(work / "tonic_cache" / "train"))
        test = open_set(spec, work / "data", train=False, download=False)
        test.transform = tf
        cached_test = tonic.DiskCachedDataset(test, cache_path=str(work / "tonic_cache" / "test"))
        # the same samples as snnexp's epoch: its training role, in an epoch's shuffled order
        order = np.random.default_rng(0).permutation(np.asarray(train_index))
        t0 = time.perf_counter()  # both caches filled, as snnexp's first run frames both sets
        _tonic_epoch(cached, order, args.batch)
        _tonic_epoch(cached_test, np.arange(len(test)), args.batch)
        cold_tonic = time.perf_counter() - t0
        ev = open_set(spec, work / "data", True, False)[0][0]  # raw events (no transform)
        steps = {"Denoise": tonic.transforms.Denoise(filter_time=10000),
                 "ToFrame": tonic.transforms.ToFrame(sensor_size=(34, 34, 2),
                                                     time_window=10000.0,
                                                     include_incomplete=True)}
        per_sample_ms = {}
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(20):
                step(ev)
            per_sample_ms[name] = (time.perf_counter() - t0) / 20 * 1e3
        times: dict[str, list[float]] = {"snnexp": [], "tonic": []}
        for _ in range(args.reps):
            t0 = time.perf_counter()
            _snnexp_epoch(cfg)
            times["snnexp"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _tonic_epoch(cached, order, args.batch)
            times["tonic"].append(time.perf_counter() - t0)
        size_snnexp = sum(f.stat().st_size for f in (work / "cache").rglob("*") if f.is_file())
        size_tonic = sum(f.stat().st_size for f in (work / "tonic_cache").rglob("*")
                         if f.is_file())
        res = {"machine": machine(), "args": vars(args), "samples_epoch": len(order),
               "samples_framed": len(ds) + len(test), "transform_ms_per_sample": per_sample_ms,
               "first_epoch_s": {"snnexp": cold_snnexp, "tonic": cold_tonic},
               "warm_epoch_s": {k: summary(v) for k, v in times.items()},
               "cache_bytes": {"snnexp": size_snnexp, "tonic": size_tonic}}
        med = {k: res["warm_epoch_s"][k]["median"] for k in times}
        print(f"{res['machine']['cpu']} ({res['machine']['cpu_flags']}), "
              f"{len(ds) + len(test)} samples of {args.events} events framed, "
              f"{len(order)} per training epoch, batch {args.batch}")
        print(f"first run (framing train + test, writing the cache): snnexp {cold_snnexp:.2f} s,"
              f" tonic DiskCachedDataset {cold_tonic:.2f} s; per sample: Denoise "
              f"{per_sample_ms['Denoise']:.1f} ms, ToFrame {per_sample_ms['ToFrame']:.1f} ms")
        print(f"warm epoch (median of {args.reps}): snnexp {med['snnexp']:.3f} s, tonic "
              f"{med['tonic']:.3f} s; tonic / snnexp = {med['tonic'] / med['snnexp']:.1f}x")
        print(f"cache size: snnexp {size_snnexp / 1e6:.1f} MB, tonic {size_tonic / 1e6:.1f} MB")
        print(f"written {write_json('tonic_cache', res)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
