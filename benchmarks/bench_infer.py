"""Real-time factor of `snnexp infer` with the reference network at 346 x 260, 10 ms windows.

    python -m benchmarks.bench_infer [--seconds 2] [--threads 1,2] [--reps 2] [--batch 8]

Simulates a DAVIS346-sized recording (346 x 260, IMU), builds the reference network
(experiment=reference: SEW-ResNet, BatchNorm, hidden 512, no downsampling), saves it as a
checkpoint and replays the file through `snnexp infer`'s streaming path as fast as possible:
reading, slicing into windows and one network step per window. The weights are untrained
but the BatchNorm statistics are calibrated on the recording, so that the layers fire at a
trained network's rates (the sparse paths' time depends on it; the activity is printed).
Executions, each per torch thread count, alternated within this one run: ``chunk`` (the
engine's fused kernels with K = 1 and the sparse hidden layer, `snnexp infer`'s default),
``before`` (the same K = 1 chunk through the per-module PyTorch / SpikingJelly path and the
dense hidden layer, as before the K = 1 kernels), ``step`` (the per-step reference path) and
``chunk-batchN`` (``max_batch_windows=N``). Per window: step latency p50 / p99 and the
real-time factor (stream time / wall time; > 1 keeps up with a live camera), the process's CPU
time per window (the wall figures on a shared machine include waiting for a core); also reading
and slicing time per window. Writes results/infer.json with the ISA and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
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


def _calibrate(net: Any, frames: Any, k: int = 10) -> None:
    """BatchNorm running statistics from the recording's own windows (cumulative average over
    chunks of ``k``), as training leaves them: every layer then sees normalised inputs and fires
    at a trained network's rates. An untrained network with fresh statistics (mean 0, var 1)
    is almost silent after its stem, which the sparse paths would turn into a flattering
    figure."""
    import torch

    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    net.reset_state()
    net.set_output_membrane(torch.zeros(1))
    with torch.no_grad():
        for i in range(0, len(frames) - k + 1, k):
            net.forward_chunk(frames[i:i + k, None])
    for m, mo in zip(norms, momenta):
        m.momentum = mo
    net.eval()
    net.reset_state()


def _activity(net: Any, frames: Any) -> dict[str, float]:
    """Fraction of nonzero values (spikes, SEW sums) leaving the stem and entering the hidden
    layer, over the given windows run one by one."""
    import torch

    seen: dict[str, list[float]] = {"stem": [], "fc_hidden_input": []}
    stem = net.stages[0].adapt
    hooks = [stem.register_forward_hook(
                 lambda m, a, out: seen["stem"].append(float((out != 0).float().mean()))),
             net.fc_hidden.register_forward_pre_hook(
                 lambda m, a: seen["fc_hidden_input"].append(float((a[0] != 0).float().mean())))]
    net.reset_state()
    net.set_output_membrane(torch.zeros(1))
    try:
        with torch.no_grad():
            for f in frames:
                net.forward_chunk(f[None, None])
    finally:
        for h in hooks:
            h.remove()
        net.reset_state()
    return {k: sum(v[5:]) / max(1, len(v[5:])) for k, v in seen.items()}


def _framing(rec: Path, model: Any) -> dict[str, float]:
    """Reading the file's event packets, and cutting them into frames (WindowSlicer), per
    window in ms: what `snnexp infer` does around the network."""
    import time

    from snnexp.inference.slicer import WindowSlicer
    from snnexp.inference.sources import open_source

    src = open_source(str(rec))
    try:
        t0 = time.perf_counter()
        packets = [p for kind, p in src.packets() if kind == "events" and len(p)]
        read = time.perf_counter() - t0
    finally:
        src.close()
    slicer = WindowSlicer(int(packets[0].t[0]), model.window_us, 346, 260, model.downsample)
    t0 = time.perf_counter()
    windows = sum(1 for p in packets for _ in slicer.add(p))
    sliced = time.perf_counter() - t0
    return {"windows": windows, "packets": len(packets),
            "read_ms_per_window": read / windows * 1e3,
            "slice_ms_per_window": sliced / windows * 1e3}


# execution name -> (run_stream execution, max_batch_windows, the K = 1 kernels and the sparse
# hidden layer on); "before" is the K = 1 chunk path as it was (engine modules' per-module
# PyTorch / SpikingJelly path at K = 1, dense hidden layer), for a side-by-side ratio
EXECUTIONS = {"before": ("chunk", 1, False), "chunk": ("chunk", 1, True),
              "step": ("step", 1, True)}


def _configure(net: Any, fused: bool) -> None:
    from snnexp.engine import modules

    modules.single_step_fuses = (lambda: False) if not fused else _SINGLE_STEP_FUSES
    for m in net.modules():
        if isinstance(m, modules.EngineModule):
            m.frozen = fused


def main() -> None:
    global _SINGLE_STEP_FUSES
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0, help="length of the recording")
    ap.add_argument("--threads", default="1,2", help="torch thread counts, alternated")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--batch", default="8", help="max_batch_windows values measured besides 1")
    args = ap.parse_args()
    ensure_allocator("benchmarks.bench_infer")
    import numpy as np
    import torch

    from snnexp.config.schema import SimConfig
    from snnexp.data.pipeline import prepare_recording
    from snnexp.data.simulate import simulate_recording
    from snnexp.engine import modules, native
    from snnexp.inference.model import load_model
    from snnexp.inference.sources import open_source
    from snnexp.inference.stream import run_stream

    _SINGLE_STEP_FUSES = modules.single_step_fuses
    executions = dict(EXECUTIONS)
    for b in (int(v) for v in args.batch.split(",") if v):
        executions[f"chunk-batch{b}"] = ("chunk", b, True)
    threads = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory(prefix="snnexp-bench-infer-") as tmp:
        rec = simulate_recording(SimConfig(duration_s=args.seconds, width=346, height=260,
                                           seed=3), Path(tmp) / "rec.aedat4")
        model = load_model(_checkpoint(rec, Path(tmp)), engine="auto")
        prep = prepare_recording(rec, model.config.data)
        frames = torch.from_numpy(np.asarray(prep.frames(), dtype=np.float32))
        _calibrate(model.net, frames)
        activity = _activity(model.net, frames[:60])
        framing = _framing(rec, model)
        print(f"activity (nonzero fraction): stem spikes {activity['stem']:.3f}, hidden layer "
              f"input {activity['fc_hidden_input']:.3f}; reading "
              f"{framing['read_ms_per_window']:.3f} ms and slicing "
              f"{framing['slice_ms_per_window']:.3f} ms per window "
              f"({framing['packets']} packets)", flush=True)
        combos = [(e, t) for e in executions for t in threads]
        runs: dict[str, list[dict[str, Any]]] = {f"{e}/{t}": [] for e, t in combos}
        for rep in range(args.reps):
            for e, t in combos:
                execution, batch, fused = executions[e]
                torch.set_num_threads(t)
                _configure(model.net, fused)
                src = open_source(str(rec))
                cpu0 = time.process_time()
                try:
                    s = run_stream(model, src, execution=execution,
                                   max_batch_windows=batch).summary()
                finally:
                    src.close()
                    _configure(model.net, True)
                # CPU time of the process (all its threads) per window: on a shared machine the
                # wall figures include waiting for a core, this does not (one thread: about
                # the wall time on an idle core)
                s["cpu_ms_per_window"] = (time.process_time() - cpu0) / s["windows"] * 1e3
                s["cpu_realtime_factor"] = s["window_us"] * 1e-3 / s["cpu_ms_per_window"]
                runs[f"{e}/{t}"].append(s)
                print(f"rep {rep} {e} threads {t}: {s['windows']} windows, latency p50 "
                      f"{s['latency_p50_ms']:.2f} ms p99 {s['latency_p99_ms']:.2f} ms, "
                      f"real-time factor {s['realtime_factor']:.2f} (network only "
                      f"{s['compute_realtime_factor']:.2f}); CPU {s['cpu_ms_per_window']:.2f} "
                      f"ms per window", flush=True)
    m = machine()
    load = os.getloadavg()
    result = {"machine": m, "isa": torch.backends.cpu.get_cpu_capability(),
              "kernel_isa": native.isa(), "load_average_1_5_15": list(load),
              "network": "experiment=reference (SEW, BatchNorm, hidden 512), 346x260, 10 ms, "
                         "BatchNorm statistics calibrated on the recording",
              "activity": activity, "framing": framing, "runs": runs}
    out = RESULTS_DIR / "results" / "infer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"ISA {result['isa']} (kernels {result['kernel_isa']}), {m['cpu']}, {m['cores']} "
          f"cores, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    for key, r in runs.items():
        best = max(x["realtime_factor"] for x in r)
        p50 = min(x["latency_p50_ms"] for x in r)
        p99 = min(x["latency_p99_ms"] for x in r)
        cpu = min(x["cpu_ms_per_window"] for x in r)
        print(f"{key} threads: best real-time factor {best:.2f}, latency p50 {p50:.2f} ms, "
              f"p99 {p99:.2f} ms; CPU {cpu:.2f} ms per window")
    print(f"wrote {out}")


_SINGLE_STEP_FUSES: Any = None

if __name__ == "__main__":
    main()
