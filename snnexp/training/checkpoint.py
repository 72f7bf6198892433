"""Atomic checkpoint writes and safe (weights-only) loading.

A checkpoint holds tensors and plain data only (dicts, lists, str, numbers, None), so it loads
with ``torch.load(weights_only=True)``: a file carrying a pickled object that would run code is
refused before anything of it executes.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from snnexp.errors import CheckpointError, StorageError

FORMAT = "snnexp-checkpoint"
VERSION = 1


def atomic_save(obj: Any, path: str | os.PathLike[str],
                on_replaced: Callable[[], None] | None = None) -> Path:
    """Write ``obj`` with torch.save to a temp file beside ``path``, fsync it, then rename.

    A crash at any point leaves either the previous complete file or the new one.
    ``on_replaced`` runs right after the rename (before the directory's fsync, which can take
    a while): bookkeeping of what is on disk must not miss a stop signal that lands there.
    """
    return _atomic_write(path, "wb", lambda fh: torch.save(obj, fh), on_replaced)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a small text file (JSON, YAML) atomically: temp file, fsync, rename."""
    return _atomic_write(path, "w", lambda fh: fh.write(text))


def _atomic_write(path: str | os.PathLike[str], mode: str,
                  write: Callable[[IO[Any]], object],
                  on_replaced: Callable[[], None] | None = None) -> Path:
    """``write`` into a temp file in ``path``'s directory, fsync, rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; files follow the umask
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        if on_replaced is not None:
            on_replaced()
    except (OSError, RuntimeError) as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, RuntimeError) and not _is_write_failure(exc):
            raise
        raise StorageError(_write_failure(path, exc)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _is_write_failure(exc: RuntimeError) -> bool:
    """torch.save reports a failed write (e.g. a full disk) as a RuntimeError."""
    text = str(exc).lower()
    return any(w in text for w in ("inline_container", "file write failed", "unexpected pos",
                                   "no space", "write"))


def _write_failure(path: Path, exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:120]
    try:
        free = f"{shutil.disk_usage(path.parent).free / 1e6:.0f} MB free there"
    except OSError:
        free = "free space unknown"
    kept = f"the previous {path.name} was kept" if path.exists() else "nothing was replaced"
    return (f"cannot write '{path}' ({reason}; {free}); {kept}: free disk space or write the run "
            "elsewhere with hydra.run.dir=PATH")


def _umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Load a checkpoint safely; raise CheckpointError with the reason and the fix."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"checkpoint '{path}' is a directory: pass a checkpoint file, e.g. "
                              f"{path / 'checkpoints' / 'best.pt'}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist: pass an existing file, e.g. "
                              "ckpt=outputs/train/runs/<run>/checkpoints/best.pt")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is junk
        raise CheckpointError(f"checkpoint '{path}' is corrupted or truncated (not a PyTorch "
                              "checkpoint archive); use another checkpoint, e.g. last.pt or "
                              "best.pt of the same run")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint '{path}' was refused: it holds objects that are not plain data "
            f"and could run code when loaded ({str(exc).splitlines()[0][:160]}); only load "
            "checkpoints written by snnexp from sources you trust") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError,
            IndexError, TypeError, AttributeError) as exc:  # what torch.load raises on junk
        raise CheckpointError(f"checkpoint '{path}' is corrupted or truncated "
                              f"({type(exc).__name__}); use another checkpoint, e.g. last.pt "
                              "or best.pt of the same run") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or "model" not in obj:
        raise CheckpointError(f"'{path}' is not an snnexp checkpoint (no model/config inside); "
                              "pass a best.pt / last.pt written by `snnexp train`")
    return obj
