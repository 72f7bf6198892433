"""README's first command (`snnexp train`, defaults) per kernel path: epoch times and a projection.

    python -m benchmarks.bench_train [--epochs 2] [--rounds 2] [--isa native,x86-64-v3]

Runs the default training (built-in recording, SEW + RMS norm, ``trainer.max_epochs`` cut to
``--epochs``) once per kernel path in its own process, with the kernels built for that path
(``native.load``) and PyTorch's own kernels limited to the same instruction set (as on a machine
without wider ones; see ``benchmarks.run.TORCH_ISA_ENV``). The recording is simulated once
beforehand (as the first command's first run does; not counted). The paths' runs alternate over
``--rounds``; reports each path's epoch times (train + validation), their ratio to the first
path's in the same rounds, and the projected time of the default 30 epochs plus the setup and
test evaluation of a run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ensure_allocator, machine, write_json


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from snnexp.config.store import register_schemas

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="snnexp.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    GlobalHydra.instance().clear()
    return cfg


def child(march: str, epochs: int, work: Path) -> dict[str, Any]:
    """One training run with the kernels of ``march``; its epoch times and test MAE."""
    from snnexp.commands.train import train
    from snnexp.engine import native

    native.load(march)
    out = work / f"run_{march}_{os.getpid()}"
    cfg = _compose([f"paths.data_dir={work / 'data'}", f"paths.output_dir={out}",
                    f"paths.log_dir={work / 'outputs'}", "logger=none", "trainer.progress=false",
                    f"trainer.max_epochs={epochs}"])
    start = time.perf_counter()
    metrics, _ = train(cfg)
    total = time.perf_counter() - start
    history = json.loads((out / "history.json").read_text())
    epoch_s = [float(r["time_s"]) for r in history]
    return {"march": march, "isa": native.isa(), "epoch_s": epoch_s, "total_s": total,
            "test_mae_deg": metrics.get("test/mae_deg")}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from benchmarks.run import TORCH_ISA_ENV, kernel_paths
    from snnexp.engine import native

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternated runs per path")
    parser.add_argument("--isa", default=",".join(native.MARCHES))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # -march, internal
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.epochs, Path(args.work))), flush=True)
        return {}
    result: dict[str, Any] = {"machine": machine(), "epochs": args.epochs,
                              "rounds": args.rounds, "paths": {}}
    paths = kernel_paths([m for m in args.isa.split(",") if m])
    runs: dict[str, list[dict[str, Any]]] = {isa: [] for _, isa in paths}
    with tempfile.TemporaryDirectory() as tmp:
        # simulate the built-in recording once (the first command's first run does it too)
        subprocess.run([sys.executable, "-m", "benchmarks.bench_train", "--child", "native",
                        "--epochs", "1", "--work", tmp], check=True, capture_output=True)
        for rnd in range(args.rounds):  # alternated: a busy CPU slows every path alike
            for march, isa in paths if rnd % 2 == 0 else paths[::-1]:
                env = dict(os.environ, **TORCH_ISA_ENV.get(isa, {}))
                proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_train", "--child",
                                       march, "--epochs", str(args.epochs), "--work", tmp],
                                      env=env, check=True, capture_output=True, text=True)
                run = json.loads(proc.stdout.split("RESULT ", 1)[1])
                runs[isa].append(run)
                print(f"round {rnd + 1}: {isa:9s} (-march={march}) epochs {run['epoch_s']} s, "
                      f"run {run['total_s']:.1f} s, test MAE {run['test_mae_deg']:.2f} deg",
                      flush=True)
    first = paths[0][1]
    for march, isa in paths:
        epochs = [e for r in runs[isa] for e in r["epoch_s"]]
        epoch = statistics.median(epochs)
        overhead = statistics.median(r["total_s"] - sum(r["epoch_s"]) for r in runs[isa])
        ratio = statistics.median(sum(r["epoch_s"]) / sum(f["epoch_s"])
                                  for r, f in zip(runs[isa], runs[first]))
        projected = overhead + 30 * epoch
        result["paths"][isa] = {"march": march, "runs": runs[isa], "median_epoch_s": epoch,
                                "overhead_s": overhead, "epoch_ratio_to_first": ratio,
                                "projected_30_epochs_s": projected}
        print(f"{isa:9s} (-march={march}): median epoch {epoch:.1f} s ({ratio:.2f}x the "
              f"{first} path's, same rounds), setup + test {overhead:.0f} s: projected "
              f"`snnexp train` (30 epochs + test) {projected / 60:.1f} min", flush=True)
    print(f"wrote {write_json('train', result)}")
    return result


if __name__ == "__main__":
    ensure_allocator("benchmarks.bench_train")
    main()
