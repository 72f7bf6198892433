"""Whether a run may continue from a checkpoint: the settings that shape training must match.

Continuing (``resume=true``, a re-run sweep, or ``ckpt_path=...``) restores optimizer, scheduler,
history and RNG states, which only make sense under the settings that produced them. Settings
that do not change what is learned (where files go, logging, progress bars, threads, the epoch
budget) may differ. A fine-tune start (``ckpt_path=... finetune=true``) takes the weights only
and accepts any settings of the same architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from snnexp.errors import ConfigError

# settings free to change when a run continues
FREE_PREFIXES = ("paths.", "logger.", "hydra.")
FREE_KEYS = {
    "ckpt_path", "resume", "finetune", "task_name", "tags", "evaluate_test", "monitor",
    "optimized_metric", "debug", "trainer.max_epochs", "trainer.progress", "trainer.num_threads",
    "trainer.device", "trainer.checkpoint_every", "trainer.early_stopping_patience",
    "trainer.engine", "trainer.kernel_march",  # how the chunks run, not what is learned
    "data.cache", "data.cache_dir", "data.cache_limit_gb", "data.num_workers",
    "data.builtin_dir",
}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values)."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) and value
                   else {f"{prefix}{key}": value})
    return out


def config_differences(stored: dict[str, Any], current: dict[str, Any]
                       ) -> list[tuple[str, Any, Any]]:
    """(key, stored value, current value) for every training-relevant setting that differs."""
    old, new = flatten(stored), flatten(current)
    missing = object()
    diffs = []
    for key in sorted(set(old) | set(new)):
        if key in FREE_KEYS or key.startswith(FREE_PREFIXES):
            continue
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            diffs.append((key, None if a is missing else a, None if b is missing else b))
    return diffs


def run_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides a run was started with (its ``.hydra/overrides.yaml``)."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    try:
        from omegaconf import OmegaConf

        items = OmegaConf.to_container(OmegaConf.load(path)) or []
    except Exception:
        return []
    return [str(i) for i in items
            if str(i).split("=", 1)[0].lstrip("+~") not in ("hydra.run.dir", "resume",
                                                             "ckpt_path", "finetune")]


def check_same_settings(stored: dict[str, Any], current: dict[str, Any], ckpt: Path,
                        run_dir: Path | None) -> None:
    """Refuse to continue from ``ckpt`` under settings other than those it was trained with."""
    diffs = config_differences(stored, current)
    if not diffs:
        return
    shown = ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in diffs[:6])
    more = f" and {len(diffs) - 6} more" if len(diffs) > 6 else ""
    how = ""
    if run_dir is not None:
        own = " ".join(run_overrides(run_dir))
        how = (f"continue with the run's own settings (snnexp train {own + ' ' if own else ''}"
               f"hydra.run.dir={run_dir} resume=true), or ")
    raise ConfigError(f"cannot continue from '{ckpt}': these settings differ from the ones it "
                      f"was trained with: {shown}{more}; {how}start a new run from its weights "
                      f"with ckpt_path={ckpt} finetune=true")
