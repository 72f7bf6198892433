"""Real-time factor of `snnexp infer` with the reference network at 346 x 260, 10 ms windows.

    python -m benchmarks.bench_infer [--seconds 2] [--threads 1,2] [--reps 2]

Simulates a DAVIS346-sized recording (346 x 260, IMU), builds the reference network
(experiment=reference: SEW-ResNet, BatchNorm, hidden 512, no downsampling), saves it as a
checkpoint and replays the file through `snnexp infer`'s streaming path as fast as possible:
reading, slicing into windows and one network step per window. For each execution (the
engine's fused kernels with K = 1, the per-step reference path) and torch thread count,
alternated within this one run: per-window step latency p50 / p99 and the real-time factor
(stream time / wall time; > 1 keeps up with a live camera). The weights are untrained (step
time does not depend on them: dense convolutions). Writes results/infer.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, ensure_allocator, machine


def _checkpoint(rec: Path, out: Path) -> Path:
    import torch
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from snnexp.config.schema import TrainConfig
    from snnexp.config.store import register_schemas
    from snnexp.config.validate import to_schema
    from snnexp.data.frames import frame_shape
    from snnexp.data.targets import TargetMap
    from snnexp.models import build_network
    from snnexp.training import checkpoint as C

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="snnexp.conf", version_base="1.3"):
        cfg = compose("train", ["experiment=reference", f"data.paths=[{rec}]", "data.trim_end=0",
                                "logger=none", f"paths.output_dir={out}", f"paths.log_dir={out}"])
    GlobalHydra.instance().clear()
    tc = to_schema(cfg, TrainConfig)
    shape = frame_shape(346, 260, tc.data.downsample)
    torch.manual_seed(0)
    net = build_network(tc.model, tc.norm, shape)
    path = out / "reference.pt"
    C.atomic_save({"format": C.FORMAT, "version": C.VERSION, "model": net.state_dict(),
                   "config": OmegaConf.to_container(cfg, resolve=True),
                   "data": {"input_shape": list(shape),
                            "target_map": TargetMap.from_config(tc.data).as_dict(),
                            "window_us": tc.data.window_us,
                            "recordings": [{"width": 346, "height": 260}]}}, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0, help="length of the recording")
    ap.add_argument("--threads", default="1,2", help="torch thread counts, alternated")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    ensure_allocator("benchmarks.bench_infer")
    import torch

    from snnexp.config.schema import SimConfig
    from snnexp.data.simulate import simulate_recording
    from snnexp.inference.model import load_model
    from snnexp.inference.sources import open_source
    from snnexp.inference.stream import run_stream

    threads = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory(prefix="snnexp-bench-infer-") as tmp:
        rec = simulate_recording(SimConfig(duration_s=args.seconds, width=346, height=260,
                                           seed=3), Path(tmp) / "rec.aedat4")
        model = load_model(_checkpoint(rec, Path(tmp)), engine="auto")
        combos = [(e, t) for e in ("chunk", "step") for t in threads]
        runs: dict[str, list[dict[str, Any]]] = {f"{e}/{t}": [] for e, t in combos}
        for rep in range(args.reps):
            for e, t in combos:
                torch.set_num_threads(t)
                src = open_source(str(rec))
                try:
                    s = run_stream(model, src, execution=e).summary()
                finally:
                    src.close()
                runs[f"{e}/{t}"].append(s)
                print(f"rep {rep} {e} threads {t}: {s['windows']} windows, latency p50 "
                      f"{s['latency_p50_ms']:.2f} ms p99 {s['latency_p99_ms']:.2f} ms, "
                      f"real-time factor {s['realtime_factor']:.2f} (network only "
                      f"{s['compute_realtime_factor']:.2f})", flush=True)
    m = machine()
    result = {"machine": m, "isa": torch.backends.cpu.get_cpu_capability(),
              "network": "experiment=reference (SEW, BatchNorm, hidden 512), 346x260, 10 ms",
              "runs": runs}
    out = RESULTS_DIR / "results" / "infer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"ISA {result['isa']}, {m['cpu']}, {m['cores']} cores")
    for key, r in runs.items():
        best = max(x["realtime_factor"] for x in r)
        p50 = min(x["latency_p50_ms"] for x in r)
        p99 = min(x["latency_p99_ms"] for x in r)
        print(f"{key} threads: best real-time factor {best:.2f}, latency p50 {p50:.2f} ms, "
              f"p99 {p99:.2f} ms")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
