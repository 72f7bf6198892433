"""Evaluation on the continuous test sequence(s): metrics, predictions CSV, monitors, plots."""

from __future__ import annotations

import csv
import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from snnexp.training.metrics import degree_metrics, regression_metrics
from snnexp.training.tbptt import run_sequence


@dataclass
class EvalResult:
    metrics: dict[str, float]
    plots: dict[str, Path] = field(default_factory=dict)
    predictions_csv: Path | None = None
    recordings: list[dict[str, Any]] = field(default_factory=list)  # per test part


_SUMMARY = ("mae_deg", "baseline_mae_deg", "mse", "rel", "steps")


def _window(n: int, window: list[int] | None) -> tuple[int, int]:
    if window:
        lo, hi = int(window[0]), int(window[1])
        return max(0, lo), min(n, hi)
    return int(n * 0.4), max(int(n * 0.6), int(n * 0.4) + 1)


@torch.no_grad()
def evaluate_and_report(net: nn.Module, data: Any, out_dir: str | Path, *, k: int,
                        transient: int = 0, monitor: str = "none", execution: str = "chunk",
                        window: list[int] | None = None, plots: bool = True) -> EvalResult:
    """Run every test sequence through ``net`` (eval mode) and write the report to ``out_dir``.

    Metrics (target units and degrees) cover the counted steps (after ``transient``) of the
    held-out test recordings when there are any (else of all test sequences); ``held_out_*`` /
    ``within_*`` summarise each group, ``metrics.json`` also lists every test part
    (``recordings``). ``baseline_*`` are the same for holding the initial angle, the trivial
    predictor that the SNN's integrator starts from.
    """
    from snnexp.models.monitors import Monitors

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net.eval()
    tmap = data.target_map
    rows: list[dict[str, Any]] = []
    preds_all, targets_all, base_all = [], [], []
    spikes: dict[str, list[np.ndarray]] = {}
    norms: dict[str, dict[str, list[np.ndarray]]] = {}
    events_all = []
    use_spikes, use_norms = monitor in ("spikes", "both"), monitor in ("norm", "both")
    names = [p.name for p in getattr(data, "test_parts", [])]
    for seq_idx, (frames, labels) in enumerate(data.test_batches()):
        mon = Monitors(net, spikes=use_spikes, norms=use_norms) if monitor != "none" \
            else nullcontext()
        with mon as m:
            out = run_sequence(net, frames, labels, k=k, transient=transient, execution=execution)
        if m is not None:
            for name, act in m.spike_activity().items():
                spikes.setdefault(name, []).append(np.asarray(act))
            for name, stats in m.norm_stats().items():
                dst = norms.setdefault(name, {})
                for stat, arr in stats.items():
                    dst.setdefault(stat, []).append(np.asarray(arr))
        pred, target = out.preds[:, 0], out.targets[:, 0]
        base = np.full_like(target, float(labels[0, 0]))
        events = frames[1:].reshape(frames.shape[0] - 1, -1).sum(dim=1).float().numpy()
        events_all.append(events)
        v = out.valid_from
        preds_all.append(pred[v:])
        targets_all.append(target[v:])
        base_all.append(base[v:])
        t_s = (np.arange(1, frames.shape[0]) + 1) * data.window_us * 1e-6
        pd, td, bd = tmap.to_degrees(pred), tmap.to_degrees(target), tmap.to_degrees(base)
        for i in range(len(pred)):
            rows.append({"sequence": seq_idx,
                         "recording": names[seq_idx] if seq_idx < len(names) else "",
                         "step": i + 1, "time_s": round(float(t_s[i]), 6),
                         "target": float(target[i]), "prediction": float(pred[i]),
                         "target_deg": float(td[i]), "prediction_deg": float(pd[i]),
                         "abs_error_deg": float(abs(pd[i] - td[i])),
                         "baseline_deg": float(bd[i]), "events": float(events[i]),
                         "counted": int(i >= v)})
    pred, target, base = map(np.concatenate, (preds_all, targets_all, base_all))
    parts = list(getattr(data, "test_parts", []))
    groups = [p.group for p in parts] if len(parts) == len(preds_all) else []
    headline = list(range(len(preds_all)))
    if "held_out" in groups:  # the headline figure is on recordings never trained on
        headline = [i for i, g in enumerate(groups) if g == "held_out"]
    cat = [np.concatenate([a[i] for i in headline]) for a in (preds_all, targets_all, base_all)]
    metrics = _metrics(*cat, tmap, window)
    for group in dict.fromkeys(groups):
        idx = [i for i, g in enumerate(groups) if g == group]
        gm = _metrics(*[np.concatenate([a[i] for i in idx]) for a in
                        (preds_all, targets_all, base_all)], tmap, None)
        metrics.update({f"{group}_{k}": gm[k] for k in _SUMMARY})
    recordings = []
    for i, part in enumerate(parts if groups else []):
        rm = _metrics(preds_all[i], targets_all[i], base_all[i], tmap, None)
        recordings.append({"sequence": i, "recording": part.name, "group": part.group,
                           "windows": part.windows, "first_window": part.lo,
                           "last_window": part.hi - 1, **{k: rm[k] for k in _SUMMARY}})
    report = dict(metrics, headline=("held_out" if "held_out" in groups else "all"),
                  recordings=recordings)
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=1))
    csv_path = out_dir / "predictions.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    images: dict[str, Path] = {}
    if plots:
        from snnexp.training import plots as P

        pd_all = np.array([r["prediction_deg"] for r in rows])
        td_all = np.array([r["target_deg"] for r in rows])
        images["prediction"] = P.plot_prediction(pd_all, td_all, out_dir / "prediction.png")
        images["abs_error"] = P.plot_abs_error(np.abs(pd_all - td_all), out_dir / "abs_error.png")
        if spikes:
            act = {n: np.concatenate(v) for n, v in spikes.items()}
            images["spikes"] = P.plot_spikes(act, np.concatenate(events_all),
                                             out_dir / "spike_activity.png")
        if norms:
            stats = {n: {s: np.concatenate(v) for s, v in d.items()} for n, d in norms.items()}
            images["norm_stats"] = P.plot_norm_stats(stats, out_dir / "norm_stats.png")
            images["amplification"] = P.plot_amplification(stats, out_dir / "amplification.png")
    return EvalResult(metrics=metrics, plots=images, predictions_csv=csv_path,
                      recordings=recordings)


def _metrics(pred: np.ndarray, target: np.ndarray, base: np.ndarray, tmap: Any,
             window: list[int] | None) -> dict[str, float]:
    pd, td, bd = tmap.to_degrees(pred), tmap.to_degrees(target), tmap.to_degrees(base)
    m = regression_metrics(pred, target)
    out = {"mse": m["mse"], "rel": m["rel"], **degree_metrics(pd, td)}
    lo, hi = _window(len(pred), window)
    wm = regression_metrics(pred[lo:hi], target[lo:hi])
    out.update({"window_mse": wm["mse"], "window_rel": wm["rel"],
                **{f"window_{k}": v for k, v in degree_metrics(pd[lo:hi], td[lo:hi]).items()}})
    bm = regression_metrics(base, target)
    out.update({"baseline_mse": bm["mse"], "baseline_rel": bm["rel"],
                **{f"baseline_{k}": v for k, v in degree_metrics(bd, td).items()}})
    out["steps"] = int(len(pred))
    out["window_start"], out["window_end"] = int(lo), int(hi)
    return out
