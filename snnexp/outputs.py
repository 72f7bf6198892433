"""Output files of view / infer / export: never overwrite unless asked, never truncate.

Files are written to a temporary name in the target folder and renamed at the end
(:func:`atomic_path`), so an interrupted or failed run leaves any previous file intact.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from snnexp.errors import ConfigError


def refuse_existing(paths: list[Path], overwrite: bool, key: str = "output") -> None:
    """A ConfigError naming the first existing file of ``paths`` unless ``overwrite``."""
    for p in paths:
        if p.is_dir():
            raise ConfigError(f"{key}={p} is a directory: name a file, e.g. {key}={p / 'out'}")
        if p.exists() and not overwrite:
            raise ConfigError(f"output file {p} already exists: choose another {key}=PATH or "
                              "pass overwrite=true to replace it")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) that replaces it when the block ends
    without error, and is removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
