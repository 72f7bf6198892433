"""`snnexp summarize dirs=[...]`: one table of a sweep's jobs (settings and results).

Every training job writes ``final_metrics.json`` and Hydra's ``.hydra/overrides.yaml`` in its
directory; this command collects them below the given directories, prints a table of the swept
settings with best val MSE, test MAE (deg) and epochs, sorted, and writes summary.csv and a
summary.png bar chart.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from snnexp.config.schema import SummarizeConfig
from snnexp.config.validate import to_schema
from snnexp.errors import ConfigError

COLUMNS = ("val/mse_best", "test/mae_deg", "test/baseline_mae_deg", "epochs")
CLASS_COLUMNS = ("val/acc_best", "test/acc", "test/acc_top5", "epochs")  # task=classification


def columns_of(rows: list[dict]) -> tuple[str, ...]:
    """The metric columns: regression's, classification's (accuracy) or both in a mixed sweep."""
    kinds = {"val/acc_best" in r["metrics"] for r in rows}
    if kinds == {True}:
        return CLASS_COLUMNS
    if kinds == {False}:
        return COLUMNS
    return (*COLUMNS[:-1], *CLASS_COLUMNS)


def _descending(metric: str) -> bool:
    return "acc" in metric  # accuracies: best first means largest first


def find_runs(dirs: list[str]) -> list[Path]:
    """Run directories (holding final_metrics.json) at or below each of ``dirs``."""
    runs: list[Path] = []
    for d in dirs:
        root = Path(d).expanduser()
        if not root.is_dir():
            raise ConfigError(f"'{root}' is not a directory: pass multirun or run directories, "
                              "e.g. dirs=[outputs/train/multiruns/<sweep>]")
        runs += sorted(p.parent for p in root.rglob("final_metrics.json"))
    return list(dict.fromkeys(runs))


def _overrides(run: Path) -> dict[str, str]:
    path = run / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    from omegaconf import OmegaConf

    items = OmegaConf.to_container(OmegaConf.load(path)) or []
    out = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def collect(dirs: list[str], sort_by: str = "val/mse_best") -> tuple[list[str], list[dict]]:
    """(setting keys, rows) with one row per finished run, sorted by ``sort_by``."""
    rows = []
    for run in find_runs(dirs):
        metrics = json.loads((run / "final_metrics.json").read_text())
        rows.append({"run": str(run), "overrides": _overrides(run), "metrics": metrics})
    if not rows:
        raise ConfigError(f"no finished runs (final_metrics.json) below {', '.join(dirs)}")
    keys = sorted({k for r in rows for k in r["overrides"]
                   if len({row["overrides"].get(k) for row in rows}) > 1})
    cols = columns_of(rows)
    if sort_by == "val/mse_best" and cols == CLASS_COLUMNS:
        sort_by = "val/acc_best"  # the default sort of a classification sweep
    table = []
    for r in rows:
        row: dict[str, Any] = {k: r["overrides"].get(k, "") for k in keys}
        row.update({c: r["metrics"].get(c, float("nan")) for c in cols})
        row["run"] = r["run"]
        table.append(row)
    sign = -1.0 if _descending(sort_by) else 1.0
    table.sort(key=lambda row: sign * _num(row.get(sort_by), sign))
    return keys, table


def _num(value: Any, sign: float = 1.0) -> float:
    """``value`` as a number; a missing one sorts last (whichever the direction)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    return v if v == v else sign * float("inf")


def _metric_cols(rows: list[dict]) -> list[str]:
    present = {c for r in rows for c in r}
    return [c for c in dict.fromkeys((*COLUMNS, *CLASS_COLUMNS)) if c in present]


def format_table(keys: list[str], rows: list[dict]) -> str:
    cols = [*keys, *_metric_cols(rows)]

    def cell(v: Any) -> str:
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    width = {c: max(len(c), *(len(cell(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols)]
    lines += ["  ".join(cell(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def summarize(cfg: SummarizeConfig | DictConfig) -> dict[str, Any]:
    sc = to_schema(cfg, SummarizeConfig)
    if not sc.dirs:
        raise ConfigError("config key 'dirs' is empty: snnexp summarize "
                          "dirs=[outputs/train/multiruns/<sweep>]")
    keys, rows = collect(sc.dirs, sc.sort_by)
    out = Path(sc.output or sc.dirs[0]).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*keys, *_metric_cols(rows), "run"])
        writer.writeheader()
        writer.writerows(rows)
    _bar_chart(keys, rows, out / "summary.png")
    return {"keys": keys, "rows": rows, "table": format_table(keys, rows),
            "csv": str(out / "summary.csv"), "png": str(out / "summary.png")}


def _bar_chart(keys: list[str], rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [",".join(f"{k}={r[k]}" for k in keys) or Path(r["run"]).name for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(rows)), 4))
    metric = "val/mse_best" if "val/mse_best" in rows[0] else "val/acc_best"
    ax.bar(range(len(rows)), [float(r.get(metric, float("nan"))) for r in rows])
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel={"val/mse_best": "best val MSE", "val/acc_best": "best val accuracy"}[metric],
           title="Sweep summary")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize_command(cfg: DictConfig) -> None:
    out = summarize(cfg)
    print(out["table"])
    print(f"wrote {out['csv']} and {out['png']}")
