"""`snnexp infer ckpt=PATH source=...`: per-window inference on a file, camera or stream."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from snnexp.config.schema import InferConfig
from snnexp.config.validate import to_schema
from snnexp.errors import ConfigError
from snnexp.outputs import atomic_path, refuse_existing


def _outputs(ic: InferConfig) -> tuple[Path, Path]:
    csv_path = Path(ic.output).expanduser() if ic.output else \
        Path(ic.paths.output_dir) / "predictions.csv"
    if csv_path.suffix.lower() != ".csv":
        raise ConfigError(f"output={csv_path}: infer writes a CSV file; name it *.csv")
    return csv_path, csv_path.with_name(csv_path.stem + ".summary.json")


def write_csv(result: Any, path: Path) -> None:
    """One row per window: index, end time, predicted angle, IMU label, step latency."""
    buf = io.StringIO()
    w = csv.writer(buf)
    has_label = result.label_deg is not None
    w.writerow(["window", "t_end_us", "angle_deg", *(["label_deg"] if has_label else []),
                "latency_ms"])
    for i in range(result.n_windows):
        lat = result.latency_s[i]
        w.writerow([i, int(result.t_end_us[i]), f"{result.angle_deg[i]:.6f}",
                    *([f"{result.label_deg[i]:.6f}"] if has_label else []),
                    "" if math.isnan(lat) else f"{lat * 1e3:.4f}"])
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def infer(cfg: InferConfig | DictConfig) -> dict[str, Any]:
    """Run ``cfg.ckpt`` on ``cfg.source``; write the CSV and the summary JSON."""
    from snnexp.inference.model import load_model
    from snnexp.inference.sources import open_source
    from snnexp.inference.stream import run_stream
    from snnexp.training.runtime import configure_threads

    ic = to_schema(cfg, InferConfig)
    for key in ("ckpt", "source"):
        if getattr(ic, key) in (None, "", "???"):
            raise ConfigError(f"config key '{key}' is missing: snnexp infer ckpt=PATH/best.pt "
                              "source=PATH.aedat4|camera|tcp://HOST:PORT")
    csv_path, summary_path = _outputs(ic)
    refuse_existing([csv_path, summary_path], ic.overwrite)
    configure_threads(ic.num_threads)
    model = load_model(ic.ckpt, ic.device, ic.engine)
    source = open_source(ic.source, ic.camera_serial)
    progress = _progress(ic.progress, model.window_us)
    try:
        result = run_stream(model, source, realtime=ic.realtime, initial_angle=ic.initial_angle,
                            duration_s=ic.duration_s, execution=ic.execution,
                            max_batch_windows=ic.max_batch_windows,
                            on_window=progress)
    finally:
        source.close()
        if progress is not None:
            sys.stderr.write("\n")
    summary = result.summary()
    write_csv(result, csv_path)
    with atomic_path(summary_path) as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    return {"summary": summary, "csv": str(csv_path), "summary_json": str(summary_path),
            "result": result}


def _progress(enabled: bool, window_us: int) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None

    def show(index: int, angle: float) -> None:
        if index % 50 == 0:
            sys.stderr.write(f"\rwindow {index}  t {index * window_us * 1e-6:8.2f} s  "
                             f"angle {angle:8.2f} deg")
            sys.stderr.flush()

    return show


def infer_command(cfg: DictConfig) -> dict[str, Any]:
    out = infer(cfg)
    s = out["summary"]
    lat = (f"latency p50 {s['latency_p50_ms']:.2f} ms, p99 {s['latency_p99_ms']:.2f} ms; "
           if "latency_p50_ms" in s else "")
    mae = f"; mae vs IMU {s['mae_deg']:.2f} deg" if "mae_deg" in s else ""
    print(f"{s['windows']} windows ({s['stream_s']:.2f} s of stream) in {s['wall_s']:.2f} s: "
          f"{lat}real-time factor {s.get('realtime_factor', float('nan')):.2f}{mae}")
    print(f"wrote {out['csv']} and {out['summary_json']}")
    return out["summary"]
