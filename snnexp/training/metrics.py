"""Regression metrics of predictions against labels (target units and degrees)."""

from __future__ import annotations

import numpy as np


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MSE, L1 and relative error ||pred - y|| / ||y|| over all positions (target units)."""
    pred = np.asarray(pred, dtype=np.float64).ravel()
    target = np.asarray(target, dtype=np.float64).ravel()
    if pred.size == 0:
        return {"mse": float("nan"), "l1": float("nan"), "rel": float("nan")}
    diff = pred - target
    norm = np.linalg.norm(target)
    return {
        "mse": float(np.mean(diff**2)),
        "l1": float(np.mean(np.abs(diff))),
        "rel": float(np.linalg.norm(diff) / norm) if norm > 0 else float("nan"),
    }


def degree_metrics(pred_deg: np.ndarray, target_deg: np.ndarray) -> dict[str, float]:
    """Absolute error in degrees: mean (MAE), std and max."""
    err = np.abs(np.asarray(pred_deg, np.float64) - np.asarray(target_deg, np.float64)).ravel()
    if err.size == 0:
        return {"mae_deg": float("nan"), "std_deg": float("nan"), "max_deg": float("nan")}
    return {"mae_deg": float(err.mean()), "std_deg": float(err.std()), "max_deg": float(err.max())}
