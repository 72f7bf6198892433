"""torch.profiler breakdown of one training chunk and one inference chunk of the fast engine.

    python -m benchmarks.profile_engine [--block sew] [--rows 25] [--march x86-64-v3]

Reference size (2 x 260 x 346, B = 4, K = 10, hidden 512, BatchNorm); one warm-up chunk each.
Prints the ops sorted by self CPU time (what besides the convolutions costs time).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.bench_engine import K, make_data, make_net
from benchmarks.common import ensure_allocator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--block", default="sew")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--phase", default="train,infer")
    parser.add_argument("--march", default="native", help="-march of the kernels' build")
    args = parser.parse_args(argv)
    from snnexp.engine import native

    native.load(args.march)
    from torch.profiler import ProfilerActivity, profile

    from snnexp.training.tbptt import run_sequence

    net = make_net(args.block)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    frames, labels = make_data(K + 1)
    for phase in args.phase.split(","):
        optimizer = opt if phase == "train" else None
        net.train(optimizer is not None)
        with torch.set_grad_enabled(optimizer is not None):
            for _ in range(2):
                run_sequence(net, frames, labels, k=K, optimizer=optimizer)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run_sequence(net, frames, labels, k=K, optimizer=optimizer)
        print(f"=== {args.block} {phase}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows,
                                        max_name_column_width=40))


if __name__ == "__main__":
    ensure_allocator("benchmarks.profile_engine")
    main()
