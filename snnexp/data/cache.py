"""On-disk cache of prepared recordings: sparse events (memory-mapped), angles, window ends, meta.

An entry ``{cache_dir}/{stem}-{key}`` is keyed by the recording's content (sha256) and every
setting that changes its arrays (window, downsample, trims, target, Madgwick gain, format
version). The target map (scale, offset) is applied at load time and is not part of the key.
Its arrays (:mod:`snnexp.data.sparse`: events as frame cells grouped by window, the window
offsets, angles, window ends) carry a CRC-32 per 4 MiB chunk in ``meta.json``, written with the
entry and verified when it is opened; an entry of another format version, with missing or
mismatching arrays is rebuilt (with a warning), never used.

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
import signal
import socket
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from snnexp.errors import DataError

FORMAT_VERSION = 2  # bump when the content of an entry changes meaning (1: dense frames)
META = "meta.json"
EVENTS = "events.bin"
OFFSETS = "offsets.npy"
ANGLES = "angles.npy"
T_END = "t_end.npy"
ARRAYS = (EVENTS, OFFSETS, ANGLES, T_END)
HASH_DIR = "hashes"
CHUNK_BYTES = 4 << 20  # bytes per checksummed chunk

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
    """Whether ``entry`` holds a finished cache entry of some format (meta.json is written
    last); :func:`verify` tells whether it can be used."""
    return (entry / META).is_file()


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


class Terminated(BaseException):
    """SIGTERM arrived while a cache entry was being built (raised to clean up, then exit)."""


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` during the block, unless a handler is installed."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def atomic_entry(entry: Path) -> Iterator[Path]:
    """A temporary directory that becomes ``entry`` when the block completes.

    On any exception (KeyboardInterrupt and SIGTERM included) the temporary is removed and
    nothing appears at ``entry``; a SIGTERM then ends the process as SIGTERM would. If another
    process completed the same entry meanwhile, its copy is kept.
    """
    tmp = entry.parent / f".{entry.name}.{_host()}~{os.getpid()}~{secrets.token_hex(4)}.tmp"
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise DataError(f"the cache folder {entry.parent} is not writable ({exc.strerror or exc}); "
                        "use a writable data.cache_dir=PATH or data.cache=false") from None
    try:
        with _terminate_cleanly():
            yield tmp
            try:
                os.rename(tmp, entry)
            except OSError:
                if not is_complete(entry):  # a half-written foreign entry: replace it
                    shutil.rmtree(entry, ignore_errors=True)
                    os.rename(tmp, entry)
    except Terminated:
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    (directory / META).write_text(json.dumps(meta, indent=1, sort_keys=True))


# ----------------------------------------------------------------------------- checksums
def file_checksums(path: Path, chunk: int = CHUNK_BYTES) -> dict[str, Any]:
    """Size and CRC-32 of every ``chunk`` bytes of ``path``."""
    crcs = []
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            crcs.append(zlib.crc32(block))
    return {"size": int(path.stat().st_size), "chunk": int(chunk), "crc32": crcs}


def checksums(directory: Path) -> dict[str, Any]:
    """Checksums of the arrays of an entry being written (stored in its meta.json)."""
    return {name: file_checksums(directory / name) for name in ARRAYS}


def verify(entry: Path, meta: dict[str, Any]) -> str | None:
    """None if ``entry``'s arrays match its meta (format, sizes, checksums), else the problem."""
    if meta.get("format") != FORMAT_VERSION:
        return f"format version {meta.get('format')} (this snnexp reads {FORMAT_VERSION})"
    sums = meta.get("checksums")
    if not isinstance(sums, dict) or set(sums) != set(ARRAYS):
        return "no checksums"
    for name in ARRAYS:
        path = entry / name
        want = sums[name]
        try:
            if path.stat().st_size != int(want["size"]):
                return f"{name} has {path.stat().st_size} bytes, {want['size']} were written"
            got = file_checksums(path, int(want["chunk"]))["crc32"]
        except (OSError, KeyError, TypeError, ValueError) as exc:
            return f"{name} cannot be read ({exc})"
        if got != list(want["crc32"]):
            bad = next(i for i, (a, b) in enumerate(zip(got, want["crc32"])) if a != b)
            return f"{name} differs from what was written (chunk {bad}: checksum mismatch)"
    return None


# ----------------------------------------------------------------------------- space
def free_bytes(directory: Path) -> int:
    """Free bytes for this user on the file system holding ``directory`` (or its parent)."""
    d = Path(directory)
    while not d.exists() and d != d.parent:
        d = d.parent
    st = os.statvfs(d)
    return int(st.f_bavail) * int(st.f_frsize)


def check_space(directory: Path, need: int, limit_gb: float | None, what: str) -> None:
    """Refuse a build of about ``need`` bytes over ``limit_gb`` or the free space."""
    gb = need / 1e9
    if limit_gb is not None and limit_gb > 0 and gb > limit_gb:
        raise DataError(f"{what} would need about {gb:.1f} GB of cache, more than "
                        f"data.cache_limit_gb={limit_gb:g}; raise data.cache_limit_gb, use a "
                        "longer data.window_us or data.cache=false")
    free = free_bytes(directory)
    if need > free:
        raise DataError(f"{what} would need about {gb:.2f} GB of cache but {directory} has "
                        f"{free / 1e9:.2f} GB free; free some space, point data.cache_dir at "
                        "another disk or use data.cache=false")


def no_space(directory: Path, what: str) -> DataError:
    return DataError(f"the disk under {directory} filled up while caching {what} (nothing "
                     "was kept); free some space, point data.cache_dir at another disk or use "
                     "data.cache=false")
