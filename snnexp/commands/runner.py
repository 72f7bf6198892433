"""The wrapper around every command run: clear one-line errors, output dir, W&B closed."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from snnexp.errors import SnnexpError


def _hydra_context() -> tuple[str | None, bool]:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return hc.runtime.output_dir, hc.mode == RunMode.MULTIRUN
    except Exception:
        return None, False


def _close_wandb(exit_code: int) -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        try:
            wandb.finish(exit_code=exit_code)
        except Exception:  # closing must never hide the real outcome
            pass


def run_command(command: str, cfg: Any, func: Callable[[Any], Any]) -> Any:
    """Run ``func(cfg)``; turn known errors into one line; always report the output dir.

    In a multirun the error is re-raised after the line so Hydra marks the job as failed and
    goes on with the others; in a single run the process exits with status 2 (1 for
    unexpected errors). ``debug=true`` or HYDRA_FULL_ERROR=1 shows the full traceback.
    """
    output_dir, multirun = _hydra_context()
    full_error = os.environ.get("SNNEXP_USER_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR"))
    debug = bool(cfg.get("debug", False)) or full_error == "1"
    try:
        result = func(cfg)
    except SnnexpError as exc:
        _close_wandb(1)
        print(f"snnexp {command}: error: {exc}", file=sys.stderr, flush=True)
        if output_dir:
            print(f"output directory: {output_dir}", file=sys.stderr, flush=True)
        if debug or multirun:
            raise
        sys.exit(2)
    except KeyboardInterrupt:
        _close_wandb(255)
        print(f"snnexp {command}: interrupted", file=sys.stderr, flush=True)
        if output_dir:
            print(f"output directory: {output_dir}", file=sys.stderr, flush=True)
        sys.exit(130)
    except Exception as exc:
        _close_wandb(1)
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(f"snnexp {command}: unexpected error: {type(exc).__name__}: {first} "
              f"(at {os.path.basename(where.filename)}:{where.lineno}; rerun with debug=true "
              "for the traceback)", file=sys.stderr, flush=True)
        if output_dir:
            print(f"output directory: {output_dir}", file=sys.stderr, flush=True)
        if multirun:
            raise
        sys.exit(1)
    _close_wandb(0)
    if output_dir and not secondary_rank():
        print(f"output directory: {output_dir}", flush=True)
    return result


def secondary_rank() -> bool:
    """A torchrun process other than rank 0: it trains but prints and writes nothing."""
    return os.environ.get("RANK", "0") != "0" and "WORLD_SIZE" in os.environ
