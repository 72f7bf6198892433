"""The wrapper around every command run: clear one-line errors, output dir, W&B closed, signals.

Hydra writes its record of a run (config, overrides) into ``.hydra.new/`` of the run directory;
the command adopts it as ``.hydra/`` once its own checks passed (:func:`commit_hydra_record`),
so a refused resume never rewrites the record of the run it refused to continue.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from snnexp.errors import SnnexpError

DEBUG_ENV = "SNNEXP_DEBUG"  # set by the CLI from debug=true (inherited by launcher workers)
HYDRA_PENDING, HYDRA_RECORD = ".hydra.new", ".hydra"
# What a failed command may leave behind in a run directory it created: nothing worth keeping.
_DISPOSABLE = {HYDRA_PENDING, HYDRA_RECORD, ".snnexp_write_test"}


# Ctrl-C, SLURM pre-emption / kill, a closed terminal: each stops a run cleanly.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived: unwind (finishing or abandoning the current write) and exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _hydra_context() -> tuple[str | None, bool, list[str], str | None]:
    """(output dir, multirun?, the job's command-line overrides, the sweep dir)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        return (hc.runtime.output_dir, multirun, list(hc.overrides.task),
                str(Path(hc.sweep.dir).resolve()) if multirun else None)
    except Exception:
        return None, False, [], None


def commit_hydra_record(output_dir: str | Path | None) -> None:
    """Adopt Hydra's pending record as the run's ``.hydra/`` unless the run already has one."""
    if output_dir is None:
        return
    pending, record = Path(output_dir) / HYDRA_PENDING, Path(output_dir) / HYDRA_RECORD
    if not pending.is_dir():
        return
    if record.exists():  # a resumed run keeps the record of how it was started
        shutil.rmtree(pending, ignore_errors=True)
    else:
        pending.rename(record)


def _discard_empty_run_dir(output_dir: str | None, command: str) -> bool:
    """Remove a run directory holding nothing but Hydra's record and the log; True if removed."""
    if not output_dir or secondary_rank():
        return False
    directory = Path(output_dir)
    shutil.rmtree(directory / HYDRA_PENDING, ignore_errors=True)
    try:
        names = {p.name for p in directory.iterdir()}
    except OSError:
        return False
    if names - _DISPOSABLE - {f"{command}.log"}:
        return False
    shutil.rmtree(directory, ignore_errors=True)
    return not directory.exists()


def _close_wandb(exit_code: int) -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        try:
            wandb.finish(exit_code=exit_code)
        except Exception:  # closing must never hide the real outcome
            pass


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT, SIGTERM (SLURM pre-emption) and SIGHUP raise :class:`Stopped` once; later ones
    only print a note.

    The exception unwinds the command: an atomic write in progress removes its temporary file
    and the previous file stays. A second Ctrl-C while that happens prints a note instead of a
    traceback.
    """
    def first(signum: int, _frame: Any) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, again)
        raise Stopped(signum)

    def again(signum: int, _frame: Any) -> None:
        print(f"snnexp: {signal.Signals(signum).name} again: already stopping, cleaning up",
              file=sys.stderr, flush=True)

    try:
        saved = {sig: signal.signal(sig, first) for sig in STOP_SIGNALS}
    except ValueError:  # not the main thread (a launcher's worker thread): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def resume_hint(command: str, output_dir: str | None, overrides: list[str],
                sweep_dir: str | None) -> str:
    """What was kept in ``output_dir`` and the command that continues from it."""
    if command != "train" or not output_dir:
        return "nothing to resume: rerun the command"
    out = Path(output_dir)
    last = out / "checkpoints" / "last.pt"
    if not last.is_file():
        return (f"no epoch had finished, so there is no checkpoint to resume from "
                f"({out} keeps the config and logs): rerun the command")
    try:
        epoch = len(json.loads((out / "history.json").read_text()))
        kept = f"kept {last} (epoch {epoch}) and the run's history"
    except (OSError, ValueError):
        kept = f"kept {last}"
    if sweep_dir:
        return f"{kept}; continue the sweep: the same command with hydra.sweep.dir={sweep_dir}"
    keep = [o for o in overrides
            if o.split("=", 1)[0].lstrip("+~") not in ("hydra.run.dir", "resume", "ckpt_path")]
    cmd = " ".join(shlex.quote(a) for a in ["snnexp", "train", *keep,
                                            f"hydra.run.dir={out}", "resume=true"])
    return f"{kept}; continue with: {cmd}"


def run_command(command: str, cfg: Any, func: Callable[[Any], Any]) -> Any:
    """Run ``func(cfg)``; turn known errors into one line; always report the output dir.

    In a multirun the error is re-raised after the line so Hydra marks the job as failed and
    goes on with the others; in a single run the process exits with status 2 (1 for
    unexpected errors, 128 + the signal's number after SIGINT / SIGTERM / SIGHUP).
    ``debug=true`` shows the traceback.
    A run directory left holding nothing but Hydra's record is removed.
    """
    output_dir, multirun, overrides, sweep_dir = _hydra_context()
    debug = os.environ.get(DEBUG_ENV) == "1"
    if command != "train":  # train adopts the record itself, after its resume check
        commit_hydra_record(output_dir)

    def where() -> None:
        if output_dir and not _discard_empty_run_dir(output_dir, command):
            print(f"output directory: {output_dir}", file=sys.stderr, flush=True)

    try:
        with stop_on_signals():
            result = func(cfg)
    except SnnexpError as exc:
        _close_wandb(1)
        print(f"snnexp {command}: error: {exc}", file=sys.stderr, flush=True)
        where()
        if debug or multirun:
            raise
        sys.exit(2)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        # the rest is quick; a further signal must not cut the report short
        for sig in STOP_SIGNALS:
            _ignore(sig)
        _close_wandb(255)
        name = signal.Signals(signum).name
        print(f"snnexp {command}: stopped by {name}; "
              f"{resume_hint(command, output_dir, overrides, sweep_dir)}",
              file=sys.stderr, flush=True)
        where()
        if debug:
            raise
        sys.exit(128 + int(signum))
    except Exception as exc:
        _close_wandb(1)
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        at = traceback.extract_tb(exc.__traceback__)[-1]
        print(f"snnexp {command}: unexpected error: {type(exc).__name__}: {first} "
              f"(at {os.path.basename(at.filename)}:{at.lineno}; rerun with debug=true "
              "for the traceback)", file=sys.stderr, flush=True)
        where()
        if multirun:
            raise
        sys.exit(1)
    _close_wandb(0)
    if output_dir and not secondary_rank():
        print(f"output directory: {output_dir}", flush=True)
    return result


def _ignore(sig: int) -> None:
    try:
        signal.signal(sig, signal.SIG_IGN)
    except ValueError:
        pass


def secondary_rank() -> bool:
    """A torchrun process other than rank 0: it trains but prints and writes nothing."""
    return os.environ.get("RANK", "0") != "0" and "WORLD_SIZE" in os.environ
