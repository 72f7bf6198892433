"""`snnexp summarize dirs=[...]`: one table of a sweep's jobs (settings and results).

Every training job writes ``final_metrics.json`` and Hydra's ``.hydra/overrides.yaml`` in its
directory; this command collects them below the given directories, prints a table of the swept
settings with best val MSE, test MAE (deg) and epochs, sorted, and writes summary.csv and a
summary.png bar chart. Jobs whose results cannot be read are skipped and named; jobs without
results yet are named as unfinished. When a sweep repeats settings over seeds, jobs are grouped
by their settings except the seed, and each metric is reported as mean +- std over n seeds
(summary_by_setting.csv, summary.md).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from snnexp.config.schema import SummarizeConfig
from snnexp.config.validate import to_schema
from snnexp.errors import ConfigError

COLUMNS = ("val/mse_best", "test/mae_deg", "test/baseline_mae_deg", "epochs")
SEED_KEYS = ("seed",)  # settings that repeat a job rather than change it
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


def find_jobs(dirs: list[str]) -> list[Path]:
    """Job directories (holding final_metrics.json or Hydra's record) at or below ``dirs``."""
    jobs: list[Path] = []
    for d in dirs:
        root = Path(d).expanduser()
        if not root.is_dir():
            raise ConfigError(f"'{root}' is not a directory: pass multirun or run directories, "
                              "e.g. dirs=[outputs/train/multiruns/<sweep>]")
        found = {p.parent for p in root.rglob("final_metrics.json")}
        found |= {p.parent.parent for p in root.rglob(".hydra/overrides.yaml")
                  if (p.parent.parent / "checkpoints").is_dir()}
        jobs += sorted(found)
    return list(dict.fromkeys(jobs))


def find_runs(dirs: list[str]) -> list[Path]:
    """Run directories (holding final_metrics.json) at or below each of ``dirs``."""
    return [j for j in find_jobs(dirs) if (j / "final_metrics.json").is_file()]


def _overrides(run: Path) -> dict[str, str]:
    path = run / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    from omegaconf import OmegaConf

    try:
        items = OmegaConf.to_container(OmegaConf.load(path)) or []
    except Exception:
        return {}
    out = {}
    for item in items if isinstance(items, list) else []:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def _read_metrics(run: Path) -> dict[str, Any]:
    """The job's final metrics; ValueError naming what is wrong with the file."""
    path = run / "final_metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} cannot be read ({exc})") from None
    if not isinstance(metrics, dict):
        raise ValueError(f"{path} does not hold a metrics mapping")
    return metrics


def collect(dirs: list[str], sort_by: str = "val/mse_best"
            ) -> tuple[list[str], list[dict], list[str]]:
    """(setting keys, rows, problems): one row per finished job, sorted by ``sort_by``.

    ``problems`` names each job that was skipped (unreadable results) or has not finished.
    """
    rows, problems = [], []
    for job in find_jobs(dirs):
        if not (job / "final_metrics.json").is_file():
            problems.append(f"{job}: not finished (no final_metrics.json; a re-run of the sweep "
                            "continues it)")
            continue
        try:
            metrics = _read_metrics(job)
        except ValueError as exc:
            problems.append(f"skipped: {exc}")
            continue
        rows.append({"run": str(job), "overrides": _overrides(job), "metrics": metrics})
    if not rows:
        why = f" ({'; '.join(problems)})" if problems else ""
        raise ConfigError(f"no finished runs (final_metrics.json) below {', '.join(dirs)}{why}: "
                          "pass the directory of a sweep or run, e.g. "
                          "dirs=[outputs/train/multiruns/<sweep>]")
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
    return keys, table, problems


def aggregate_seeds(keys: list[str], rows: list[dict], sort_by: str = "val/mse_best"
                    ) -> tuple[list[str], Any] | None:
    """Per setting (swept keys except the seed): mean, std and n of every metric.

    None when the jobs do not repeat settings over seeds.
    """
    import pandas as pd

    settings = [k for k in keys if k not in SEED_KEYS]
    if not any(k in SEED_KEYS for k in keys):
        return None
    cols = _metric_cols(rows)
    frame = pd.DataFrame(rows)
    frame[cols] = frame[cols].apply(pd.to_numeric, errors="coerce")
    grouped = frame.groupby(settings, sort=False, dropna=False) if settings else \
        frame.assign(_all="all").groupby("_all")
    stats = grouped[cols].agg(["mean", "std", "count"])
    stats.columns = [f"{metric} {stat}" for metric, stat in stats.columns]
    stats["n"] = grouped.size()
    stats = stats.reset_index().drop(columns=["_all"], errors="ignore")
    if sort_by == "val/mse_best" and "val/mse_best mean" not in stats:
        sort_by = "val/acc_best"  # a classification sweep
    if f"{sort_by} mean" in stats:
        stats = stats.sort_values(f"{sort_by} mean", ascending=not _descending(sort_by))
    return settings, stats.reset_index(drop=True)


def _pm(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "nan"
    return f"{mean:.4g} +- {std:.2g}" if math.isfinite(std) else f"{mean:.4g}"


def format_aggregate(settings: list[str], stats: Any, markdown: bool = False) -> str:
    """The per-setting table: settings, metric mean +- std, n."""
    cols = [c[:-len(" mean")] for c in stats.columns if c.endswith(" mean")]
    head = [*settings, *cols, "n"]
    body = [[str(r[k]) for k in settings]
            + [_pm(r[f"{c} mean"], r[f"{c} std"]) for c in cols] + [str(int(r["n"]))]
            for _, r in stats.iterrows()]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    width = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    rows = [head, *body]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, width)) for r in rows)


def _num(value: Any, sign: float = 1.0) -> float:
    """``value`` as a number; a missing one sorts last (whichever the direction)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    return v if math.isfinite(v) else sign * float("inf")


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
    """Collect the jobs below ``cfg.dirs``; write summary.csv, .png (and per-setting tables)."""
    sc = to_schema(cfg, SummarizeConfig)
    if not sc.dirs:
        raise ConfigError("config key 'dirs' is empty: snnexp summarize "
                          "dirs=[outputs/train/multiruns/<sweep>]")
    keys, rows, problems = collect(sc.dirs, sc.sort_by)
    out = Path(sc.output or sc.dirs[0]).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*keys, *_metric_cols(rows), "run"])
        writer.writeheader()
        writer.writerows(rows)
    _bar_chart(keys, rows, out / "summary.png")
    result = {"keys": keys, "rows": rows, "table": format_table(keys, rows),
              "csv": str(out / "summary.csv"), "png": str(out / "summary.png"),
              "problems": problems}
    agg = aggregate_seeds(keys, rows, sc.sort_by)
    if agg is not None:
        settings, stats = agg
        stats.to_csv(out / "summary_by_setting.csv", index=False)
        (out / "summary.md").write_text(format_aggregate(settings, stats, markdown=True) + "\n")
        result.update(by_setting=format_aggregate(settings, stats), stats=stats,
                      by_setting_csv=str(out / "summary_by_setting.csv"),
                      markdown=str(out / "summary.md"))
    return result


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
    import sys

    out = summarize(cfg)
    print(out["table"])
    if "by_setting" in out:
        print(f"\nmean +- std over seeds, per setting:\n{out['by_setting']}")
    print(f"wrote {out['csv']}, {out['png']}"
          + (f", {out['by_setting_csv']} and {out['markdown']}" if "by_setting" in out else ""))
    for problem in out["problems"]:
        print(f"snnexp summarize: warning: {problem}", file=sys.stderr)
