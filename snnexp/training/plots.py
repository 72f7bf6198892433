"""PNG plots of an evaluation (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_prediction(pred_deg: np.ndarray, target_deg: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(target_deg, label="target", lw=1.2)
    ax.plot(pred_deg, label="prediction", lw=1.0)
    ax.set(xlabel="step", ylabel="angle (deg)", title="Prediction vs target")
    ax.legend()
    return _save(fig, path)


def plot_abs_error(err_deg: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.plot(err_deg, lw=0.8, color="tab:red")
    ax.set(xlabel="step", ylabel="|error| (deg)",
           title=f"Absolute error (mean {np.mean(err_deg):.2f} deg)")
    return _save(fig, path)


def plot_spikes(activity: dict[str, np.ndarray], events: np.ndarray, path: Path) -> Path:
    fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    mean = np.mean([np.asarray(a, dtype=float) for a in activity.values()], axis=0)
    axes[0].plot(mean, lw=0.8)
    axes[0].set(ylabel="mean spikes / neuron", title="Network spike activity per step")
    axes[1].plot(events, lw=0.8, color="tab:gray")
    axes[1].set(xlabel="step", ylabel="input events", title="Input events per step")
    return _save(fig, path)


def plot_norm_stats(stats: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    names = list(stats)
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.2 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        s = stats[name]
        for key in ("in_std", "out_std", "out_mean"):
            if key in s:
                ax.plot(np.asarray(s[key]).reshape(len(s[key]), -1).mean(axis=1), label=key,
                        lw=0.8)
        ax.set_title(name, fontsize=8)
        ax.legend(fontsize=6, loc="upper right")
    axes[-1, 0].set_xlabel("step")
    return _save(fig, path)


def plot_amplification(stats: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    names, amp = [], []
    for name, s in stats.items():
        if "in_std" in s and "out_std" in s:
            ratio = np.asarray(s["out_std"], float) / np.maximum(np.asarray(s["in_std"], float),
                                                                 1e-12)
            names.append(name)
            amp.append(float(np.nanmean(ratio)))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names)), 3.5))
    ax.bar(range(len(names)), amp)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="std_out / std_in", title="Mean amplification per norm layer")
    return _save(fig, path)
