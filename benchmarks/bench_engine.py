"""Training / inference frames/s of the per-step reference loop vs the fast chunk engine.

Reference size: 2 x 260 x 346 frames, B = 4, K = 10, hidden 512, BatchNorm, each block type.
Per repetition both modes run the same sequence back to back (alternating which goes first, so
the shared CPU's load hits both alike), each timed on its second run (the first after a mode
switch pays page faults of the heap that the other mode reshaped). A frame is one time step of
one sample; the ratio of a repetition is fast fps / step fps. Also compares the float32 loss
curves of the two modes over 20 TBPTT chunks (same initial network, same data; three seeds),
and of the step mode on one thread vs two (rounding alone).

    python -m benchmarks.bench_engine [--reps 3] [--chunks 3] [--blocks sew,plain,spiking]
                                      [--march native|x86-64-v3|x86-64-v2]

``--march`` selects the kernels' build (``native.load``): x86-64-v3 is the AVX2 + FMA path,
x86-64-v2 the portable one. Re-executes itself with the allocator settings of the ``snnexp``
command (as the CLI does).
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from typing import Any

import torch

from benchmarks.common import ensure_allocator, machine, summary, write_json

SHAPE = (2, 260, 346)
B, K, HIDDEN = 4, 10, 512


def make_net(block: str, seed: int = 0) -> torch.nn.Module:
    from snnexp.config.schema import ModelConfig, NormConfig
    from snnexp.engine import prepare
    from snnexp.models import build_network

    torch.manual_seed(seed)
    return prepare(build_network(ModelConfig(block_type=block, hidden=HIDDEN),
                                 NormConfig(kind="bn"), SHAPE), "auto")


def make_data(steps: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Event-count-like frames (Poisson, mean 0.3) and a smooth random target."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.poisson(torch.full((steps, B, *SHAPE), 0.3), g)
    t = torch.linspace(0, 6.28, steps)[:, None]
    labels = torch.sin(t + torch.rand(1, B, generator=g) * 6.28)
    return frames, labels


def _timed(net: torch.nn.Module, frames: torch.Tensor, labels: torch.Tensor, execution: str,
           optimizer: torch.optim.Optimizer | None) -> float:
    """Frames/s of one run_sequence over ``frames``."""
    from snnexp.training.tbptt import run_sequence

    net.train(optimizer is not None)
    start = time.perf_counter()
    run_sequence(net, frames, labels, k=K, optimizer=optimizer, execution=execution)
    return (frames.shape[0] - 1) * frames.shape[1] / (time.perf_counter() - start)


def speed(block: str, reps: int, chunks: int) -> dict[str, Any]:
    """Alternate step / fast for training and inference; per-repetition fps and ratios."""
    net = make_net(block)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    frames, labels = make_data(K * chunks + 1)
    for _ in range(2):  # warm-up: kernels, oneDNN primitives, the allocator's heap
        for ex in ("step", "chunk"):
            _timed(net, frames, labels, ex, opt)
            with torch.no_grad():
                _timed(net, frames, labels, ex, None)
    out: dict[str, Any] = {}
    for phase, optimizer in (("train", opt), ("infer", None)):
        fps: dict[str, list[float]] = {"step": [], "fast": []}
        for rep in range(reps):
            order = ("step", "chunk") if rep % 2 == 0 else ("chunk", "step")
            for ex in order:
                with torch.set_grad_enabled(optimizer is not None):
                    # an untimed run first: switching modes re-faults freed heap pages here
                    _timed(net, frames, labels, ex, optimizer)
                    fps["fast" if ex == "chunk" else "step"].append(
                        _timed(net, frames, labels, ex, optimizer))
        ratios = [f / s for f, s in zip(fps["fast"], fps["step"])]
        out[phase] = {"step_fps": summary(fps["step"]), "fast_fps": summary(fps["fast"]),
                      "ratio": summary(ratios), "raw": fps}
        print(f"{block:8s} {phase:5s} step {out[phase]['step_fps']['median']:7.1f} fps  fast "
              f"{out[phase]['fast_fps']['median']:7.1f} fps  ratio "
              f"{out[phase]['ratio']['median']:.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]",
              flush=True)
    return out


def _curve(base: torch.nn.Module, frames: torch.Tensor, labels: torch.Tensor,
           execution: str) -> list[float]:
    from snnexp.training.tbptt import run_sequence

    net = copy.deepcopy(base).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    return run_sequence(net, frames, labels, k=K, optimizer=opt,
                        execution=execution).chunk_losses


def _rel(a: list[float], b: list[float]) -> list[float]:
    return [abs(y - x) / abs(x) for x, y in zip(a, b)]


def loss_curves(block: str, chunks: int = 20, seeds: tuple[int, ...] = (1,)) -> dict[str, Any]:
    """float32 per-chunk losses of step vs fast training from the same network and data, for
    each seed (network init and data); for the first seed also the step mode on one thread vs
    on all threads: how far rounding alone (another summation order) moves the reference."""
    out: dict[str, Any] = {"seeds": {}}
    for seed in seeds:
        base = make_net(block, seed=seed)
        frames, labels = make_data(K * chunks + 1, seed=seed)
        step, fast = _curve(base, frames, labels, "step"), _curve(base, frames, labels, "chunk")
        rel = _rel(step, fast)
        out["seeds"][seed] = {"step": step, "fast": fast, "max_rel_diff": max(rel),
                              "median_rel_diff": sorted(rel)[len(rel) // 2]}
        print(f"{block:8s} loss curves, seed {seed}, {chunks} chunks: max relative difference "
              f"{max(rel):.2%}, median {sorted(rel)[len(rel) // 2]:.2%}", flush=True)
        if seed == seeds[0]:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                step_1 = _curve(base, frames, labels, "step")
            finally:
                torch.set_num_threads(threads)
            rel_1 = _rel(step, step_1)
            out["step_1_thread"] = {"seed": seed, "step": step_1, "max_rel_diff": max(rel_1),
                                    "median_rel_diff": sorted(rel_1)[len(rel_1) // 2]}
            print(f"{block:8s} step mode, 1 vs {threads} threads, seed {seed}: max relative "
                  f"difference {max(rel_1):.2%}", flush=True)
    worst = max(r["max_rel_diff"] for r in out["seeds"].values())
    out.update(max_rel_diff=worst, within_5_percent=worst <= 0.05)
    return out


TORCH_ISA_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=3, help="chunks per timed sequence")
    parser.add_argument("--blocks", default="sew,plain,spiking")
    parser.add_argument("--loss-blocks", default="sew", help="blocks for the loss curves")
    parser.add_argument("--loss-chunks", type=int, default=20)
    parser.add_argument("--loss-seeds", default="1,2,3", help="seeds (init and data) of the "
                        "loss curves")
    parser.add_argument("--march", default="native", help="-march of the kernels' build")
    parser.add_argument("--out", default="engine", help="name of the results/*.json file")
    args = parser.parse_args(argv)
    from snnexp.engine import native

    native.load(args.march)
    print(f"kernels: {native.describe()}", flush=True)
    result: dict[str, Any] = {"machine": machine(), "native_kernels": native.available(),
                              "isa": native.isa(), "march": args.march,
                              # PyTorch's own kernels limited as on a narrower machine (run.py)
                              "torch_isa": {k: os.environ[k] for k in TORCH_ISA_VARS
                                            if k in os.environ},
                              "config": {"shape": SHAPE, "batch": B, "k": K, "hidden": HIDDEN,
                                         "reps": args.reps, "chunks": args.chunks},
                              "speed": {}, "loss_curves": {}}
    for block in filter(None, args.blocks.split(",")):
        result["speed"][block] = speed(block, args.reps, args.chunks)
    for block in filter(None, args.loss_blocks.split(",")):
        seeds = tuple(int(v) for v in args.loss_seeds.split(",") if v)
        result["loss_curves"][block] = loss_curves(block, args.loss_chunks, seeds)
    print(f"wrote {write_json(args.out, result)}")
    return result


if __name__ == "__main__":
    ensure_allocator("benchmarks.bench_engine")
    main()
