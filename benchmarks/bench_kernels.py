"""Each native kernel alone, per kernel path (AVX-512 / AVX2 / portable), alternated in one process.

    python -m benchmarks.bench_kernels [--reps 7] [--isa native,x86-64-v3,x86-64-v2]

float32, channels_last, at the reference network's sizes (K = 10, B = 4: 40 frames): the stem
(conv3x3 2 -> 16 + BatchNorm + LIF at 260 x 346), the stage-0 spike convolutions (16 -> 16,
stride 2 at 260 x 346 and stride 1 at 130 x 173), and the tile kernels on 16 x 130 x 173
(batch statistics, BatchNorm + LIF forward and backward, LIF + max-pool). Every repetition runs
each kernel on each path back to back (the library is switched with ``native.load``), so a
busy CPU slows all paths alike; prints the median and best ms per call and each path's median
ratio to the first path's time of the same repetition. Only the kernels' instruction set
changes here: PyTorch's own ops are not involved.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import ensure_allocator, machine, summary, write_json

K, B = 10, 4


def cases() -> dict[str, Callable[[], object]]:
    """Kernel name -> a call of it on fixed random inputs."""
    from snnexp.engine import functions as f

    g = torch.Generator().manual_seed(0)
    cl = torch.channels_last
    lif = f.LifSpec(2.0, 1.0, None, True, 1, 2.0)
    frames = torch.poisson(torch.full((K * B, 2, 260, 346), 0.3), g)
    w_stem = torch.randn(16, 2, 3, 3, generator=g)
    ones, zeros = torch.ones(16), torch.zeros(16)
    big = (torch.rand(K * B, 16, 260, 346, generator=g) < 0.2).float().contiguous(memory_format=cl)
    mid = (torch.rand(K * B, 16, 130, 173, generator=g) < 0.2).float().contiguous(memory_format=cl)
    w = torch.randn(16, 16, 3, 3, generator=g)
    tab = f.spike_conv_tables(w, torch.float32)
    y = torch.randn(K * B, 16, 130, 173, generator=g).contiguous(memory_format=cl)
    y, geo = f.geometry(y, K)
    sc, sh = torch.rand(K, 16, generator=g) + 0.5, torch.rand(K, 16, generator=g)
    mean = torch.zeros(K, 16)
    gout = torch.randn_like(y)
    return {
        "stem conv+BN+LIF 2->16 @260x346": lambda: f.conv_lif(frames, w_stem, K, 0.0, lif, ones,
                                                              zeros, True),
        "spike conv 16->16 s2 @260x346": lambda: f.spike_conv(big, w, 2, 1, tab),
        "spike conv 16->16 s1 @130x173": lambda: f.spike_conv(mid, w, 1, 1, tab),
        "batch stats @16x130x173": lambda: f.batch_stats(y, geo),
        "BN+LIF forward @16x130x173": lambda: f.forward(y, geo, 0.0, lif, sc, sh),
        "BN+LIF backward @16x130x173": lambda: f.backward(y, geo, 0.0, lif, gout, None, sc, sh,
                                                          mean),
        "LIF+pool (inference) @16x130x173": lambda: f.lif_pool(y, K, 0.0, lif, ones, zeros),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from snnexp.engine import native

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--isa", default=",".join(native.MARCHES),
                        help="-march values of the kernel paths, comma-separated")
    args = parser.parse_args(argv)
    from benchmarks.run import kernel_paths

    paths = kernel_paths([m for m in args.isa.split(",") if m])
    calls = cases()
    times: dict[str, dict[str, list[float]]] = {n: {i: [] for _, i in paths} for n in calls}
    for rep in range(args.reps + 1):  # the first round warms up (page faults, tables)
        for march, isa in paths if rep % 2 else paths[::-1]:
            native.load(march)
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                if rep:
                    times[name][isa].append((time.perf_counter() - start) * 1e3)
    first = paths[0][1]
    result: dict[str, Any] = {"machine": machine(), "reps": args.reps,
                              "paths": [{"march": m, "isa": i} for m, i in paths], "kernels": {}}
    print(f"{'kernel':36s}" + "".join(f"{i + ' ms':>18s}" for _, i in paths))
    for name, per in times.items():
        row = {}
        for isa, ts in per.items():
            ratio = [t / t0 for t, t0 in zip(ts, per[first])]
            row[isa] = {"ms": summary(ts), "ratio_to_first": summary(ratio)}
        result["kernels"][name] = row
        print(f"{name:36s}" + "".join(
            f"{statistics.median(ts):8.2f} ({row[i]['ratio_to_first']['median']:4.2f}x)"
            for i, ts in per.items()), flush=True)
    print(f"wrote {write_json('kernels', result)}")
    return result


if __name__ == "__main__":
    ensure_allocator("benchmarks.bench_kernels")
    main()
