"""On-disk cache of prepared recordings: frames (.npy, memory-mapped), angles, window ends, meta.

An entry ``{cache_dir}/{stem}-{key}`` is keyed by the recording's content (sha256) and every
setting that changes its arrays (window, downsample, trims, target, Madgwick gain, format
version). The target map (scale, offset) is applied at load time and is not part of the key.

Entries are atomic: they are written into a hidden temporary directory
``.{name}.{host}~{pid}~{random}.tmp`` next to the entry and renamed into place when complete;
an interrupted build removes its temporary, and temporaries left by killed processes (dead pid on
this host) are removed by the next build. File hashes are remembered (by path, size, mtime and
inode) under ``{cache_dir}/hashes/`` so that a cache hit does not re-read the recording.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from snnexp.errors import DataError

FORMAT_VERSION = 1  # bump when the content of an entry changes meaning
META = "meta.json"
FRAMES = "frames.npy"
ANGLES = "angles.npy"
T_END = "t_end.npy"
HASH_DIR = "hashes"

_HASH_MEMO: dict[tuple[str, int, int, int], str] = {}


def _host() -> str:
    """This machine's name, made safe for a file name (no '~', '/', spaces)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname() or "localhost")


# ----------------------------------------------------------------------------- hashing
def _stat_key(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return str(path), int(st.st_size), int(st.st_mtime_ns), int(st.st_ino)


def file_sha256(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
                ) -> str:
    """sha256 of the file's content (hex), remembered by (path, size, mtime, inode).

    With ``cache_dir`` the result is also stored on disk, so a later process skips reading a
    large file again.
    """
    path = Path(path)
    try:
        key = _stat_key(path)
    except OSError as exc:
        raise DataError(f"recording {path} cannot be read ({exc.strerror or exc}); check "
                        "data.paths and the file's permissions") from None
    if key in _HASH_MEMO:
        return _HASH_MEMO[key]
    memo_file = None
    if cache_dir is not None:
        name = hashlib.sha256(key[0].encode()).hexdigest()[:32] + ".json"
        memo_file = Path(cache_dir) / HASH_DIR / name
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            d = json.loads(memo_file.read_text())
            if tuple(d["stat"]) == key and len(d["sha256"]) == 64:
                _HASH_MEMO[key] = d["sha256"]
                return d["sha256"]
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(8 << 20):
                h.update(block)
    except OSError as exc:
        raise DataError(f"recording {path} cannot be read ({exc.strerror or exc}); check "
                        "data.paths and the file's permissions") from None
    digest = h.hexdigest()
    _HASH_MEMO[key] = digest
    if memo_file is not None:
        with contextlib.suppress(OSError):
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_file.with_name(f"{memo_file.stem}.{_host()}~{os.getpid()}.part")
            tmp.write_text(json.dumps({"stat": list(key), "sha256": digest}))
            os.replace(tmp, memo_file)
    return digest


# ----------------------------------------------------------------------------- keys
def cache_key(sha256: str, params: dict[str, Any]) -> str:
    """Short hex key of the content hash and the array-changing settings."""
    blob = json.dumps({"sha256": sha256, "format": FORMAT_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def entry_name(stem: str, key: str) -> str:
    """Directory name of an entry: the recording's file stem (made safe) and the key."""
    return f"{re.sub(r'[^A-Za-z0-9_.+-]', '_', stem).lstrip('.') or 'rec'}-{key}"


def is_complete(entry: Path) -> bool:
    """Whether ``entry`` is a finished cache entry (meta.json is written last)."""
    return (entry / META).is_file() and (entry / FRAMES).is_file()


def read_meta(entry: Path) -> dict[str, Any]:
    return json.loads((entry / META).read_text())


# ----------------------------------------------------------------------------- temporaries
_TMP_RE = re.compile(r"^\.(?P<prefix>.+)~(?P<pid>\d+)~(?P<rand>[0-9a-f]+)\.tmp$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def clean_stale(cache_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary entries of dead processes of this host; returns what was removed."""
    root = Path(cache_dir)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    suffix = "." + _host()
    for p in root.iterdir():
        m = _TMP_RE.match(p.name)
        if not m or not m["prefix"].endswith(suffix):
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_entry(entry: Path) -> Iterator[Path]:
    """A temporary directory that becomes ``entry`` when the block completes.

    On any exception (KeyboardInterrupt included) the temporary is removed and nothing appears
    at ``entry``. If another process completed the same entry meanwhile, its copy is kept.
    """
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.parent / f".{entry.name}.{_host()}~{os.getpid()}~{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.rename(tmp, entry)
        except OSError:
            if not is_complete(entry):  # a half-written foreign entry should not exist; replace
                shutil.rmtree(entry, ignore_errors=True)
                os.rename(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    (directory / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
