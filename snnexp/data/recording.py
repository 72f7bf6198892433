"""AEDAT4 recordings: events + IMU in memory, read and written with dv-processing.

Reading streams the file packet by packet (vectorised numpy per packet). Every problem with a
file becomes a one-line :class:`~snnexp.errors.DataError` naming the path, the problem and the
fix. dv-processing can hang or crash on corrupt packets; :func:`check_decodable` decodes a file
in a child process first, so such a file becomes an error instead of a dead process.
"""

from __future__ import annotations

import mmap
import os
import queue
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snnexp.errors import DataError

MAGIC = b"#!AER-DAT4.0\r\n"
PACKET_EVENTS = 10_000  # events per written packet (dv-processing's own fragmentation size)
PACKET_IMU = 1_000  # IMU samples per written packet at most
DEFAULT_CAMERA = "snnexp"

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
_T_NAMES = ("t", "timestamp", "ts")
_P_NAMES = ("p", "polarity", "on", "pol")


def _dv() -> Any:
    """dv_processing, imported on first use (keeps ``import snnexp.data.recording`` light)."""
    import dv_processing

    return dv_processing


# ----------------------------------------------------------------------------- containers
def _as_rows(key: Any) -> Any:
    """An integer index as a one-row slice, so that indexing keeps the arrays 1-D."""
    if isinstance(key, (int, np.integer)):
        return slice(key, key + 1 if key != -1 else None)
    return key


@dataclass(eq=False)
class Events:
    """Events as four equally long arrays: t (int64 us), x, y (uint16), p (uint8, 1 = ON)."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray

    def __post_init__(self) -> None:
        self.t = np.ascontiguousarray(self.t, dtype=np.int64).reshape(-1)
        self.x = np.ascontiguousarray(self.x, dtype=np.uint16).reshape(-1)
        self.y = np.ascontiguousarray(self.y, dtype=np.uint16).reshape(-1)
        p = np.asarray(self.p).reshape(-1)
        if p.dtype != np.uint8:
            p = (p > 0).astype(np.uint8)  # bool, 0/1 or -1/+1 polarities
        self.p = np.ascontiguousarray(p)
        n = len(self.t)
        if not len(self.x) == len(self.y) == len(self.p) == n:
            raise ValueError(f"event arrays differ in length: t {n}, x {len(self.x)}, "
                             f"y {len(self.y)}, p {len(self.p)}")

    def __len__(self) -> int:
        return len(self.t)

    def __getitem__(self, key: Any) -> Events:
        key = _as_rows(key)
        return Events(self.t[key], self.x[key], self.y[key], self.p[key])

    def __repr__(self) -> str:
        span = f", t=[{self.t[0]}, {self.t[-1]}]" if len(self) else ""
        return f"Events(n={len(self)}{span})"

    @classmethod
    def empty(cls) -> Events:
        """No events."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.uint16), np.zeros(0, np.uint16),
                   np.zeros(0, np.uint8))

    @classmethod
    def concatenate(cls, parts: Sequence[Events]) -> Events:
        """One Events of ``parts`` in order."""
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(e, n) for e in parts]) for n in "txyp"))

    @classmethod
    def from_structured(cls, arr: np.ndarray) -> Events:
        """From a structured array with tonic-like (t, x, y, p/on) or dv-like
        (timestamp, x, y, polarity) fields."""
        names = arr.dtype.names or ()

        def pick(options: tuple[str, ...]) -> str:
            for name in options:
                if name in names:
                    return name
            raise ValueError(f"structured events need one of the fields {options}; got {names}")

        return cls(arr[pick(_T_NAMES)], arr["x"], arr["y"], arr[pick(_P_NAMES)])

    def to_structured(self) -> np.ndarray:
        """A tonic-like structured array with fields t, x, y, p."""
        out = np.empty(len(self), EVENT_DTYPE)
        out["t"], out["x"], out["y"], out["p"] = self.t, self.x, self.y, self.p
        return out

    def is_sorted(self) -> bool:
        """True if timestamps never decrease."""
        return bool(np.all(self.t[1:] >= self.t[:-1]))


@dataclass(eq=False)
class ImuSamples:
    """IMU samples in the camera's units: t (int64 us), acc [N, 3] in g, gyro [N, 3] in deg/s."""

    t: np.ndarray
    acc: np.ndarray
    gyro: np.ndarray

    def __post_init__(self) -> None:
        self.t = np.ascontiguousarray(self.t, dtype=np.int64).reshape(-1)
        self.acc = _float_xyz(self.acc, "acc")
        self.gyro = _float_xyz(self.gyro, "gyro")
        if not len(self.acc) == len(self.gyro) == len(self.t):
            raise ValueError(f"IMU arrays differ in length: t {len(self.t)}, "
                             f"acc {len(self.acc)}, gyro {len(self.gyro)}")

    def __len__(self) -> int:
        return len(self.t)

    def __getitem__(self, key: Any) -> ImuSamples:
        key = _as_rows(key)
        return ImuSamples(self.t[key], self.acc[key], self.gyro[key])

    def __repr__(self) -> str:
        span = f", t=[{self.t[0]}, {self.t[-1]}]" if len(self) else ""
        return f"ImuSamples(n={len(self)}{span})"

    @classmethod
    def empty(cls) -> ImuSamples:
        """No samples."""
        return cls(np.zeros(0, np.int64), np.zeros((0, 3), np.float32),
                   np.zeros((0, 3), np.float32))


def _float_xyz(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        a = a.reshape(-1, 3) if a.size % 3 == 0 else a
        if a.ndim != 2 or a.shape[1] != 3:
            raise ValueError(f"IMU {name} must have shape [N, 3], got {a.shape}")
    return np.ascontiguousarray(a)


@dataclass(eq=False)
class Recording:
    """One camera recording in memory (``path`` is None for a simulated, unsaved one)."""

    path: Path | None
    camera_name: str
    width: int
    height: int
    events: Events
    imu: ImuSamples

    def __repr__(self) -> str:
        return (f"Recording({self.path}, {self.camera_name!r}, {self.width}x{self.height}, "
                f"{self.events!r}, {self.imu!r})")


# ----------------------------------------------------------------------------- file checks
def _truncated(path: Path, detail: str) -> DataError:
    return DataError(f"recording {path} is truncated or corrupt ({detail}): copy or export it "
                     "again from the original")


def _dv_message(exc: BaseException) -> str:
    """The informative line of a dv-processing exception (they carry C++ stack traces)."""
    lines = []
    for line in str(exc).splitlines():
        line = line.strip()
        if line.startswith("Stacktrace"):
            break
        if line:
            lines.append(line)
    msg = lines[-1] if lines else type(exc).__name__
    return msg if len(msg) <= 200 else msg[:197] + "..."


def check_path(path: Path) -> None:
    """The recording path names an existing file (not a directory); else a one-line DataError."""
    if os.path.islink(path) and not path.exists():
        raise DataError(f"recording {path} is a broken symbolic link or a link loop: point "
                        "data.paths at the recording itself")
    if not path.exists():
        raise DataError(f"recording {path} does not exist: check data.paths (only the built-in "
                        "recordings, data.paths=[builtin:SEED], are simulated when missing)")
    if path.is_dir():
        raise DataError(f"recording {path} is a directory: list the .aedat4 files inside it in "
                        "data.paths")


def _check_file(path: Path) -> None:
    """Cheap checks before dv-processing sees the file: exists, readable, AEDAT4 header, and a
    consistent chain of packet headers up to the file's index (truncation shows up here)."""
    check_path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
            if not head:
                raise DataError(f"recording {path} is empty (0 bytes): the recording or the copy "
                                "was interrupted; copy or export it again")
            if head != MAGIC:
                _bad_magic(path, head)
            _check_structure(path, f)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise DataError(f"recording {path} cannot be read ({reason}): check that the file is "
                        "readable by this user (permissions, mount)") from None


def _bad_magic(path: Path, head: bytes) -> None:
    if MAGIC.startswith(head):
        raise _truncated(path, f"only {len(head)} bytes")
    if head.startswith(b"#!AER-DAT") and head[9:10] in (b"1", b"2", b"3"):
        version = head[9:12].decode("ascii", "replace")
        raise DataError(f"recording {path} is an AEDAT 2/3 file (AEDAT {version}): snnexp reads "
                        "AEDAT4; convert it to AEDAT4 with DV (dv-gui's converter)")
    raise DataError(f"recording {path} is not an AEDAT4 file (it does not start with "
                    "'#!AER-DAT4.0'): record or export it with DV as .aedat4")


def _check_structure(path: Path, f: Any) -> None:
    size = os.fstat(f.fileno()).st_size
    if size < len(MAGIC) + 4:
        raise _truncated(path, "header cut short")
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        (hsize,) = struct.unpack_from("<i", m, len(MAGIC))
        base = len(MAGIC) + 4
        if hsize <= 0 or base + hsize > size:
            raise _truncated(path, "header cut short")
        table = _data_table_position(m, base, hsize)
        if table is None:
            raise _truncated(path, "unreadable file header")
        end = size if table < 0 else table
        if table >= size:
            raise _truncated(path, "its packet index lies beyond the end of the file")
        pos = base + hsize
        while pos < end:
            if pos + 8 > end:
                raise _truncated(path, f"packet header cut at byte {pos}")
            stream, nbytes = struct.unpack_from("<ii", m, pos)
            if stream < 0 or nbytes <= 0:
                raise _truncated(path, f"invalid packet header at byte {pos}")
            pos += 8 + nbytes
        if pos != end:
            raise _truncated(path, f"last packet cut short, {pos - end} bytes missing")


def _data_table_position(m: Any, base: int, hsize: int) -> int | None:
    """dataTablePosition of the IOHeader flatbuffer (-1: no index), None if unparseable."""
    try:
        (root,) = struct.unpack_from("<I", m, base)
        tbl = base + root
        (vt_off,) = struct.unpack_from("<i", m, tbl)
        vt = tbl - vt_off
        (vt_size,) = struct.unpack_from("<H", m, vt)
        if not base <= vt < base + hsize or not base <= tbl < base + hsize or vt_size < 4:
            return None
        if vt_size < 8:
            return -1
        (field,) = struct.unpack_from("<H", m, vt + 6)  # field 1: dataTablePosition (int64)
        if field == 0:
            return -1
        return int(struct.unpack_from("<q", m, tbl + field)[0])
    except struct.error:
        return None


# ----------------------------------------------------------------------------- reading
class RecordingReader:
    """An open AEDAT4 file: metadata, events streamed per packet, IMU samples.

    Each :meth:`iter_events` / :meth:`read_imu` call reads the file from its start again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._alias = _AedatAlias(path)  # dv-processing insists on the .aedat4 suffix
        self._reader = self._open()
        names = list(self._reader.getStreamNames())
        self.stream_names = names
        self.event_stream = next((n for n in names if self._reader.isStreamOfEventType(n)), None)
        self.imu_stream = next((n for n in names if self._reader.isStreamOfImuType(n)), None)
        self.camera_name = str(self._reader.getCameraName())
        res = self._reader.getEventResolution(self.event_stream) if self.event_stream else None
        self.width, self.height = (int(res[0]), int(res[1])) if res else (0, 0)

    def _open(self) -> Any:
        try:
            return _dv().io.MonoCameraRecording(str(self._alias.path))
        except RuntimeError as e:
            raise _truncated(self.path, _dv_message(e)) from None

    @property
    def has_events(self) -> bool:
        return self.event_stream is not None

    @property
    def has_imu(self) -> bool:
        return self.imu_stream is not None

    def require_streams(self) -> None:
        """Raise a DataError unless the file has an event stream and an IMU stream."""
        streams = ", ".join(self.stream_names) or "none"
        if not self.has_events:
            raise DataError(f"recording {self.path} has no event stream (streams: {streams}): "
                            "record it with the event output enabled")
        if not self.has_imu:
            raise DataError(f"recording {self.path} has no IMU stream (streams: {streams}): the "
                            "orientation labels come from the IMU; record with the IMU enabled")

    def time_range(self) -> tuple[int, int]:
        """(first, last) timestamp over all streams, in microseconds."""
        lo, hi = self._reader.getTimeRange()
        return int(lo), int(hi)

    def iter_events(self) -> Iterator[Events]:
        """Yield the events packet by packet (empty if the file has no event stream)."""
        if self.event_stream is None:
            return
        reader = self._open()
        while True:
            try:
                store = reader.getNextEventBatch(self.event_stream)
            except RuntimeError as e:
                raise _truncated(self.path, _dv_message(e)) from None
            if store is None:
                return
            if len(store):
                yield Events.from_structured(store.numpy())

    def read_events(self) -> Events:
        """All events in one Events."""
        return Events.concatenate(list(self.iter_events()))

    def read_imu(self) -> ImuSamples:
        """All IMU samples (empty if the file has no IMU stream), values as stored (float32)."""
        if self.imu_stream is None:
            return ImuSamples.empty()
        reader = self._open()
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        while True:
            try:
                batch = reader.getNextImuBatch(self.imu_stream)
            except RuntimeError as e:
                raise _truncated(self.path, _dv_message(e)) from None
            if batch is None:
                break
            if len(batch):  # one small array per packet: memory stays ~28 bytes per sample
                t = np.fromiter((m.timestamp for m in batch), np.int64, len(batch))
                vals = np.array([(m.accelerometerX, m.accelerometerY, m.accelerometerZ,
                                  m.gyroscopeX, m.gyroscopeY, m.gyroscopeZ) for m in batch],
                                dtype=np.float32)  # exact: stored as float32
                parts.append((t, vals))
        if not parts:
            return ImuSamples.empty()
        t = np.concatenate([p[0] for p in parts])
        vals = np.concatenate([p[1] for p in parts])
        return ImuSamples(t, vals[:, :3], vals[:, 3:])

    def close(self) -> None:
        self._reader = None
        self._alias.close()


class _AedatAlias:
    """The path dv-processing may open for ``path``: itself when it ends in .aedat4, else a
    symbolic link named .aedat4 in a private temporary folder (the content decides, not the
    name: a recording named .bin is read like any other)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._dir: str | None = None
        if self.path.suffix != ".aedat4":
            self._dir = tempfile.mkdtemp(prefix="snnexp-aedat4-")
            link = Path(self._dir) / "recording.aedat4"
            os.symlink(os.path.abspath(path), link)
            self.path = link

    def close(self) -> None:
        if self._dir is not None:
            import shutil

            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> _AedatAlias:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def open_recording(path: str | os.PathLike, check: bool = False) -> Iterator[RecordingReader]:
    """Open an AEDAT4 recording for streaming; ``check`` first decodes it in a child process
    (:func:`check_decodable`), for files that may be corrupt."""
    path = Path(path)
    if check:
        check_decodable(path)
    else:
        _check_file(path)
    reader = RecordingReader(path)
    try:
        yield reader
    finally:
        reader.close()


def read_recording(path: str | os.PathLike, require: bool = True,
                   check: bool = False) -> Recording:
    """Read a whole recording. With ``require``, a file without events or IMU samples is a
    DataError; without it, missing streams come back empty."""
    path = Path(path)
    with open_recording(path, check=check) as rd:
        if require:
            rd.require_streams()
        events = rd.read_events()
        imu = rd.read_imu()
        rec = Recording(path, rd.camera_name, rd.width, rd.height, events, imu)
    if require and not len(events):
        raise DataError(f"recording {path} has an event stream without events: record a scene "
                        "that moves (or check the camera's bias settings)")
    if require and not len(imu):
        raise DataError(f"recording {path} has an IMU stream without samples: record with the "
                        "IMU enabled")
    return rec


# ----------------------------------------------------------------------------- writing
def event_packet(events: Events, fast: bool = True) -> Any:
    """A dv.EventStore holding ``events``. ``fast`` feeds dv from one list of tuples through
    ``map``; the plain path calls push_back per event (same result, for reference)."""
    dv = _dv()
    store = dv.EventStore()
    if fast:
        arr = np.empty(len(events), [("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "?")])
        arr["t"], arr["x"], arr["y"], arr["p"] = events.t, events.x, events.y, events.p
        deque(map(store.push_back, arr.tolist()), maxlen=0)
    else:
        for t, x, y, p in zip(events.t.tolist(), events.x.tolist(), events.y.tolist(),
                              events.p.tolist()):
            store.push_back(t, x, y, bool(p))
    return store


def _imu_packet(imu: ImuSamples) -> Any:
    dv = _dv()
    n = len(imu)
    zeros = [0.0] * n
    cols = [imu.acc[:, i].tolist() for i in range(3)] + [imu.gyro[:, i].tolist() for i in range(3)]
    measurements = map(dv.IMU, imu.t.tolist(), zeros, *cols, zeros, zeros, zeros)
    return dv.IMUPacket(dv.IMUPacket.ImuVector(measurements))


def _check_writable(events: Events | None, imu: ImuSamples | None, width: int | None,
                    height: int | None) -> None:
    if events is not None:
        if width is None or height is None or width <= 0 or height <= 0:
            raise ValueError("writing events needs the sensor width and height")
        if not events.is_sorted():
            raise ValueError("events must be sorted by timestamp to be written")
        if len(events) and (int(events.x.max()) >= width or int(events.y.max()) >= height):
            raise ValueError(f"event coordinates exceed the sensor size {width}x{height}")
    if imu is not None and np.any(imu.t[1:] < imu.t[:-1]):
        raise ValueError("IMU samples must be sorted by timestamp to be written")


def _write_streams(tmp: Path, camera_name: str, event_chunks: Iterable[Events] | None,
                   imu: ImuSamples | None, width: int | None, height: int | None,
                   fast: bool) -> None:
    """Write with dv's MonoCameraWriter, event and IMU packets interleaved in time order; the
    events come chunk by chunk (each checked, and in time order across chunks)."""
    dv = _dv()
    config = dv.io.MonoCameraWriter.Config(camera_name)
    if event_chunks is not None:
        config.addEventStream((int(width), int(height)))
    if imu is not None:
        config.addImuStream()
    writer = dv.io.MonoCameraWriter(str(tmp), config)
    written = 0  # IMU samples written so far
    last_t = None
    for events in event_chunks if event_chunks is not None else ():
        _check_writable(events, None, width, height)
        if len(events) and last_t is not None and int(events.t[0]) < last_t:
            raise ValueError("events must be sorted by timestamp to be written")
        for a in range(0, len(events), PACKET_EVENTS):
            chunk = events[a:a + PACKET_EVENTS]
            if imu is not None:  # the IMU samples up to this packet's last event go first
                until = int(np.searchsorted(imu.t, chunk.t[-1], side="right"))
                for b in range(written, until, PACKET_IMU):
                    writer.writeImuPacket(_imu_packet(imu[b:min(b + PACKET_IMU, until)]))
                written = max(written, until)
            writer.writeEvents(event_packet(chunk, fast=fast))
        last_t = int(events.t[-1]) if len(events) else last_t
    if imu is not None:
        for b in range(written, len(imu), PACKET_IMU):
            writer.writeImuPacket(_imu_packet(imu[b:b + PACKET_IMU]))
    del writer  # closing writes the file's index


def write_recording(path: str | os.PathLike, rec: Recording | None = None, *,
                    events: Events | None = None, imu: ImuSamples | None = None,
                    width: int | None = None, height: int | None = None,
                    camera_name: str | None = None, fast: bool = True,
                    event_chunks: Iterable[Events] | None = None) -> Path:
    """Write an AEDAT4 file with dv-processing's writer, atomically (a temporary file in the same
    folder, renamed at the end). Streams given as None are left out of the file; the events
    may come as ``event_chunks`` in time order instead (a long recording, never all in memory).
    Returns ``path``."""
    path = Path(path)
    if rec is not None:
        events = rec.events if events is None else events
        imu = rec.imu if imu is None else imu
        width = rec.width if width is None else width
        height = rec.height if height is None else height
        camera_name = rec.camera_name if camera_name is None else camera_name
    _check_writable(events, imu, width, height)
    if event_chunks is None and events is not None:
        event_chunks = [events]
    if event_chunks is not None and (width is None or height is None):
        raise ValueError("writing events needs the sensor width and height")
    path.parent.mkdir(parents=True, exist_ok=True)
    # dv's writer insists on the .aedat4 suffix
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.aedat4")
    try:
        _write_streams(tmp, camera_name or DEFAULT_CAMERA, event_chunks, imu, width, height,
                       fast)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ----------------------------------------------------------------------------- decodability
# Decodes every event and IMU packet, printing one line per packet (progress for the parent's
# stall detection); a dv exception becomes its informative line on stderr and exit code 3.
_CHILD_CODE = r"""
import sys
import dv_processing as dv
try:
    r = dv.io.MonoCameraRecording(sys.argv[1])
    print("open", flush=True)
    for name in r.getStreamNames():
        if r.isStreamOfEventType(name):
            get = r.getNextEventBatch
        elif r.isStreamOfImuType(name):
            get = r.getNextImuBatch
        else:
            continue
        while get(name) is not None:
            print(".", flush=True)
except Exception as e:
    lines = []
    for line in str(e).splitlines():
        if line.strip().startswith("Stacktrace"):
            break
        if line.strip():
            lines.append(line.strip())
    sys.stderr.write((lines[-1] if lines else type(e).__name__)[:200])
    sys.exit(3)
"""


def check_decodable(path: str | os.PathLike, stall_s: float = 30.0) -> None:
    """Decode the whole file in a child process; a crash, a stall (no packet decoded for
    ``stall_s`` seconds) or a decoding error becomes a one-line DataError."""
    path = Path(path)
    _check_file(path)
    fix = "copy or export it again from the original"
    with tempfile.TemporaryFile() as err, _AedatAlias(path) as alias:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD_CODE, str(alias.path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        progress: queue.Queue[bytes] = queue.Queue()

        def pump() -> None:  # the child's progress lines, until EOF (b"")
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                progress.put(chunk)
            progress.put(b"")

        threading.Thread(target=pump, daemon=True).start()
        try:
            while True:
                try:
                    if not progress.get(timeout=stall_s):
                        break
                except queue.Empty:
                    raise DataError(f"recording {path} is probably truncated or corrupt: "
                                    f"dv-processing stalled for {stall_s:g} s while decoding it; "
                                    f"{fix}") from None
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        err.seek(0)
        detail = err.read().decode("utf-8", "replace").strip().splitlines()
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        raise DataError(f"recording {path} is truncated or corrupt: dv-processing crashed on it "
                        f"({name}) while decoding; {fix}")
    if rc != 0:
        reason = detail[-1][:200] if detail else f"exit code {rc}"
        raise DataError(f"recording {path} is truncated or corrupt ({reason}); {fix}")
