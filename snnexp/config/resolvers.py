"""OmegaConf resolvers used by conf/: stable, readable job directory names in sweeps.

Hydra's ``override_dirname`` lists *every* command-line override, so
``snnexp train -m norm=bn,rms trainer.max_epochs=1`` would name its jobs
``0_norm=bn,trainer.max_epochs=1``. Users compare jobs by what was swept, so the job
directory is ``<num>_<swept overrides>`` (``0_norm=bn``). The CLI records which keys the
command line sweeps (``SNNEXP_SWEEP_KEYS``) and which it fixes (``SNNEXP_FIXED_KEYS``) in the
environment, which Hydra's launchers pass on to their workers; keys a sweeper adds itself
(Optuna's search space) are not fixed, so they count as swept.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable

SWEEP_KEYS_ENV = "SNNEXP_SWEEP_KEYS"
FIXED_KEYS_ENV = "SNNEXP_FIXED_KEYS"
_SWEEP_FUNCS = ("choice(", "range(", "interval(", "glob(", "tag(", "shuffle(", "sort(")
_MAX_NAME = 120  # longer names are cut and given a hash suffix (file-system limits)
# keys that never name a job: where things go, how they are shown, how they resume
_NEVER_PREFIXES = ("hydra.", "paths.")
_NEVER_KEYS = {"ckpt_path", "resume", "trainer.progress", "logger.wandb.mode", "debug"}


def override_key(override: str) -> str | None:
    """``+model.hidden=8`` -> ``model.hidden``; None for flags and malformed items."""
    if "=" not in override or override.startswith("-"):
        return None
    return override.split("=", 1)[0].lstrip("+~")


def is_sweep(override: str) -> bool:
    """Whether a command-line override sweeps (``a=1,2`` or a sweep function)."""
    value = override.split("=", 1)[1] if "=" in override else ""
    if value.startswith(_SWEEP_FUNCS):
        return True
    depth, quote = 0, ""
    for ch in value:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            return True
    return False


def record_sweep_keys(argv: Iterable[str]) -> None:
    """Remember the swept and fixed override keys of this command line (for job names)."""
    swept, fixed = [], []
    for arg in argv:
        key = override_key(arg)
        if key is not None:
            (swept if is_sweep(arg) else fixed).append(key)
    os.environ[SWEEP_KEYS_ENV] = ",".join(swept)
    os.environ[FIXED_KEYS_ENV] = ",".join(fixed)


def _env_keys(name: str) -> set[str] | None:
    value = os.environ.get(name)
    return None if value is None else {k for k in value.split(",") if k}


def job_name(num: object, overrides: Iterable[str]) -> str:
    """``<num>_<swept overrides>``: stable across re-runs of the same sweep command."""
    swept, fixed = _env_keys(SWEEP_KEYS_ENV), _env_keys(FIXED_KEYS_ENV)
    parts = []
    for item in overrides:
        key = override_key(str(item))
        if key is None or key in _NEVER_KEYS or key.startswith(_NEVER_PREFIXES):
            continue
        if swept is not None and key not in swept and key in (fixed or set()):
            continue
        parts.append(str(item).lstrip("+~"))
    name = f"{num}_{','.join(parts)}" if parts else str(num)
    name = re.sub(r"[/\\\s:]+", "_", name)
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:_MAX_NAME - 9]}-{digest}"
    return name


def summary_dir(output: object, dirs: object) -> str:
    """Where ``snnexp summarize`` writes (its run directory): ``output``, else the first dir."""
    if output:
        return str(output)
    first = list(dirs)[0] if dirs else None  # type: ignore[call-overload]
    return str(first) if first else "."


def register_resolvers() -> None:
    """Register ``snnexp_job_name`` and ``snnexp_summary_dir`` (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("snnexp_job_name"):
        OmegaConf.register_new_resolver("snnexp_job_name", job_name)
    if not OmegaConf.has_resolver("snnexp_summary_dir"):
        OmegaConf.register_new_resolver("snnexp_summary_dir", summary_dir)
