"""Which recordings a run uses: ``data.paths`` / ``val_paths`` / ``test_paths`` expanded.

An entry is a file, a folder (every AEDAT4 file in it, recognised by content, sorted), a glob
pattern (``/data/run*.aedat4``, sorted) or ``builtin:SEED``: the built-in simulated recording
``data.sim`` with that seed, written to ``data.builtin_dir`` on first use. Only ``builtin:``
entries are ever simulated; a user path that does not exist is an error naming it. The file of
a built-in recording is named after its seed and a hash of its settings, so changed simulator
settings never reuse a file simulated with others. A recording listed twice is used once (with
a warning); one listed both for training and as held-out is an error.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
from pathlib import Path

from snnexp.config.schema import DataConfig, SimConfig
from snnexp.data.recording import MAGIC
from snnexp.errors import DataError

log = logging.getLogger(__name__)

BUILTIN = "builtin:"
_GLOB_CHARS = set("*?[")


def absolute(path: str | os.PathLike[str]) -> Path:
    """``path`` with ~ expanded, relative to the current directory (symlinks kept)."""
    p = Path(os.path.expanduser(os.fspath(path)))
    return p if p.is_absolute() else Path.cwd() / p


def builtin_sim(cfg: DataConfig, seed: int) -> SimConfig:
    """The simulator settings of built-in recording ``seed``: ``data.sim`` with that seed."""
    return dataclasses.replace(cfg.sim, seed=int(seed))


def builtin_path(cfg: DataConfig, seed: int) -> Path:
    """Where built-in recording ``seed`` lives: ``{builtin_dir}/sim_{W}x{H}_seed{seed}_{hash}``."""
    sim = builtin_sim(cfg, seed)
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(sim), sort_keys=True).encode())
    name = f"sim_{sim.width}x{sim.height}_{sim.duration_s:g}s_seed{seed}_{digest.hexdigest()[:8]}"
    return absolute(cfg.builtin_dir) / f"{name}.aedat4"


def _seed(entry: str, key: str) -> int:
    try:
        return int(entry[len(BUILTIN):])
    except ValueError:
        raise DataError(f"{key} entry '{entry}' is not a built-in recording: write builtin:SEED "
                        "with an integer seed, e.g. builtin:3") from None


def is_aedat4(path: Path) -> bool:
    """Whether ``path`` is a file starting with the AEDAT4 magic (whatever its name)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def expand(entries: list[str], cfg: DataConfig, key: str) -> list[tuple[Path, SimConfig | None]]:
    """The recordings of one list: (path, simulator settings if it is a built-in one)."""
    out: list[tuple[Path, SimConfig | None]] = []
    for raw in entries or []:
        entry = str(raw)
        if entry.startswith(BUILTIN):
            seed = _seed(entry, key)
            out.append((builtin_path(cfg, seed), builtin_sim(cfg, seed)))
            continue
        path = absolute(entry)
        if _GLOB_CHARS & set(entry) and not os.path.lexists(path):
            found = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
            if not found:
                raise DataError(f"{key} pattern '{entry}' matches no file: check the pattern")
            out += [(p, None) for p in found]
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and is_aedat4(p))
            if not found:
                raise DataError(f"{key} folder {path} holds no AEDAT4 recording: list the "
                                "recordings or their folder")
            out += [(p, None) for p in found]
        else:
            out.append((path, None))
    return out


def _identity(path: Path) -> str:
    return os.path.realpath(path)


def resolve(cfg: DataConfig) -> dict[str, list[tuple[Path, SimConfig | None]]]:
    """``{"train": [...], "val": [...], "test": [...]}`` of ``data.paths`` / ``val_paths`` /
    ``test_paths``, deduplicated; held-out recordings must not be trained on."""
    lists = {"train": expand(list(cfg.paths), cfg, "data.paths"),
             "val": expand(list(cfg.val_paths or []), cfg, "data.val_paths"),
             "test": expand(list(cfg.test_paths or []), cfg, "data.test_paths")}
    if not lists["train"]:
        raise DataError("data.paths is empty: list at least one AEDAT4 recording, e.g. "
                        "data.paths=[/data/rec.aedat4] (or use data=synthetic)")
    seen: dict[str, str] = {}
    keys = {"train": "data.paths", "val": "data.val_paths", "test": "data.test_paths"}
    for part, items in lists.items():
        kept = []
        for path, sim in items:
            ident = _identity(path)
            if ident in seen:
                if seen[ident] != part:
                    raise DataError(f"{path} is listed in both {keys[seen[ident]]} and "
                                    f"{keys[part]}: a held-out recording must not be trained on "
                                    "or validated on; list it once")
                log.warning("%s is listed twice in %s; it is used once", path, keys[part])
                continue
            seen[ident] = part
            kept.append((path, sim))
        lists[part] = kept
    return lists


def ensure_builtin(path: Path, sim: SimConfig | None) -> None:
    """Simulate a missing built-in recording; a user path is never simulated."""
    if sim is None or os.path.lexists(path):
        return
    from snnexp.data.simulate import simulate_recording

    log.info("simulating the built-in recording %s (seed %d, %g s)", path, sim.seed,
             sim.duration_s)
    simulate_recording(sim, path)
