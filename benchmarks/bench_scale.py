"""Data at scale: a long simulated full-resolution recording, prepared and trained on.

Simulates (once, streamed) a ``--minutes`` long 346 x 260 recording with the built-in data's
settings, then, each in a fresh process: prepares it cold (decode, sparse cache, labels) at
full resolution (downsample 1, 10 ms windows), reporting wall time, the peak resident memory
of the process (and of the decodability check's child) and the cache size against the file;
then runs a training setup on it (the reference network at 2 x 260 x 346) to its first
optimizer step (one TBPTT chunk of the first batch), reporting the time and peak memory.

    python -m benchmarks.bench_scale [--minutes 60] [--dir /tmp/snnexp-scale]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ensure_allocator, machine, write_json

_PREPARE = r"""
import json, resource, sys, time
from snnexp.config.schema import DataConfig
from snnexp.data.pipeline import prepare_recording
cfg = DataConfig(paths=[sys.argv[1]], cache_dir=sys.argv[2], downsample=1)
t = time.perf_counter()
prep = prepare_recording(sys.argv[1], cfg)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "windows": prep.n_windows, "events": prep.events.n_events,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "child_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                  / 1024, "cache": prep.meta["cache"]}))
"""

_FIRST_STEP = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from snnexp.config.schema import DataConfig, LoggerConfig, NormConfig, TrainConfig, TrainerConfig
from snnexp.training.loop import Trainer
from snnexp.training.tbptt import run_sequence
data = DataConfig(paths=[sys.argv[1]], cache_dir=sys.argv[2], downsample=1,
                  seq_length=int(sys.argv[4]), batch_size=4, num_workers=1)
cfg = TrainConfig(data=data, logger=LoggerConfig(name="none"), norm=NormConfig(kind="bn"),
                  trainer=TrainerConfig(progress=False))
trainer = Trainer(cfg, Path(sys.argv[3]))
trainer.setup()
t_setup = time.perf_counter() - t0
frames, labels = next(iter(trainer.data.train_batches(1)))
t_batch = time.perf_counter() - t0
k = cfg.trainer.tbptt_k
out = run_sequence(trainer.model, frames[:k + 1], labels[:k + 1], k=k,
                   optimizer=trainer.optimizer, execution=cfg.trainer.execution)
t_step = time.perf_counter() - t0
trainer.close()
print(json.dumps({"setup_s": t_setup, "first_batch_s": t_batch, "first_step_s": t_step,
                  "optimizer_steps": out.optimizer_steps, "batch_shape": list(frames.shape),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _child(code: str, *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1])
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--dir", default="/tmp/snnexp-scale", help="recording, cache, run")
    args = parser.parse_args(argv)
    from omegaconf import OmegaConf

    from snnexp.config.schema import SimConfig
    from snnexp.data.simulate import simulate_recording

    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    conf = OmegaConf.load(Path(__file__).parents[1] / "conf" / "data" / "synthetic.yaml")
    sim = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SimConfig), conf.sim,
                                              {"duration_s": args.minutes * 60.0}))
    rec = root / f"sim_{args.minutes:g}min.aedat4"
    result: dict[str, Any] = {"machine": machine(), "minutes": args.minutes}
    if not rec.exists():
        t = time.perf_counter()
        simulate_recording(sim, rec)
        result["simulate_s"] = time.perf_counter() - t
        print(f"simulated {rec} in {result['simulate_s']:.0f} s", flush=True)
    result["file_mb"] = rec.stat().st_size / 1e6
    cache = root / "cache"
    prep = _child(_PREPARE, str(rec), str(cache))
    prep["cache_mb"] = _size(Path(prep["cache"])) / 1e6
    prep["cache_over_file"] = prep["cache_mb"] / result["file_mb"]
    result["prepare"] = prep
    print(f"prepare (cold, 346x260, 10 ms windows): {prep['seconds']:.0f} s, {prep['events']:,} "
          f"events, {prep['windows']} windows; peak RSS {prep['peak_rss_mb']:.0f} MB (decode "
          f"check child {prep['child_peak_rss_mb']:.0f} MB); cache {prep['cache_mb']:.0f} MB = "
          f"{prep['cache_over_file']:.2f}x the {result['file_mb']:.0f} MB file", flush=True)
    seq = min(2000, int(prep["windows"] * 0.07))  # the reference's 2000 on long recordings
    step = _child(_FIRST_STEP, str(rec), str(cache), str(root / "run"), str(seq))
    result["first_step"] = step
    print(f"first training step (cached, reference network, batch {step['batch_shape']}): "
          f"setup {step['setup_s']:.1f} s, first batch {step['first_batch_s']:.1f} s, first "
          f"optimizer step {step['first_step_s']:.1f} s; peak RSS {step['peak_rss_mb']:.0f} MB",
          flush=True)
    print(f"wrote {write_json('scale', result)}")
    return result


if __name__ == "__main__":
    ensure_allocator("benchmarks.bench_scale")
    main()
