"""Event sources read through dv-processing: a recording file, a live camera, a network stream.

Every source has a sensor size and yields ``("events", Events)`` / ``("imu", ImuSamples)``
packets in arrival order until it ends (a file's end, a closed stream, a disconnected camera).
Which source a ``source=`` string names is decided by :func:`open_source`; failures to open
are one-line DataErrors naming the fix.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from snnexp.data.recording import Events, ImuSamples, _dv, _dv_message
from snnexp.errors import DataError

Packet = tuple[str, Any]
POLL_S = 0.002  # sleep between polls of a live source that has nothing new


def _events(store: Any) -> Events:
    return Events.from_structured(store.numpy())


def _imu(batch: Any) -> ImuSamples:
    rows = [(m.timestamp, m.accelerometerX, m.accelerometerY, m.accelerometerZ,
             m.gyroscopeX, m.gyroscopeY, m.gyroscopeZ) for m in batch]
    if not rows:
        return ImuSamples.empty()
    t = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    vals = np.array([r[1:] for r in rows], dtype=np.float32)
    return ImuSamples(t, vals[:, :3], vals[:, 3:])


class Source:
    """An open event source (see the module docstring)."""

    kind = "source"
    live = True  # live sources are never paced; files can be (realtime=true)

    def __init__(self, name: str, camera_name: str, width: int, height: int,
                 has_imu: bool) -> None:
        self.name, self.camera_name = name, camera_name
        self.width, self.height, self.has_imu = int(width), int(height), bool(has_imu)

    def packets(self) -> Iterator[Packet]:
        raise NotImplementedError

    def backlog(self) -> bool:
        """Whether packets that arrived are waiting to be read (the consumer is behind)."""
        return False

    def close(self) -> None:
        """Release the device / connection."""


class FileSource(Source):
    """An AEDAT4 recording replayed packet by packet; its IMU comes first, as a whole."""

    kind = "file"
    live = False

    def __init__(self, path: Path) -> None:
        from snnexp.data.recording import open_recording

        self._ctx = open_recording(path)
        self.reader = self._ctx.__enter__()
        if not self.reader.has_events:
            self._ctx.__exit__(None, None, None)
            raise DataError(f"recording {path} has no event stream: record it with the event "
                            "output enabled")
        super().__init__(str(path), self.reader.camera_name, self.reader.width,
                         self.reader.height, self.reader.has_imu)

    def packets(self) -> Iterator[Packet]:
        if self.has_imu:
            yield "imu", self.reader.read_imu()
        for events in self.reader.iter_events():
            yield "events", events

    def close(self) -> None:
        self._ctx.__exit__(None, None, None)


class LiveSource(Source):
    """A dv-processing camera or network reader, polled until it stops running."""

    def __init__(self, reader: Any, name: str, kind: str) -> None:
        self.reader = reader
        self.kind = kind
        res = reader.getEventResolution() if reader.isEventStreamAvailable() else None
        if res is None:
            raise DataError(f"{name} sends no event stream: stream the camera's events (in DV, "
                            "connect the network output to the events)")
        super().__init__(name, str(reader.getCameraName()), int(res[0]), int(res[1]),
                         bool(reader.isImuStreamAvailable()))
        self._arrived: queue.Queue[Packet | None] | None = None  # packets() fills it

    def packets(self) -> Iterator[Packet]:
        """Packets as they arrive. A thread drains the reader at once, so that slow network
        steps never make dv-processing drop data (it discards what is still queued when the
        stream closes)."""
        arrived: queue.Queue[Packet | None] = queue.Queue()
        self._arrived = arrived
        stop = threading.Event()

        def drain() -> None:
            try:
                for packet in self._poll(stop):
                    arrived.put(packet)
            finally:
                arrived.put(None)

        thread = threading.Thread(target=drain, name="snnexp-source", daemon=True)
        thread.start()
        try:
            while (packet := arrived.get()) is not None:
                yield packet
        finally:
            stop.set()
            thread.join(timeout=5)

    def backlog(self) -> bool:
        return self._arrived is not None and not self._arrived.empty()

    def _poll(self, stop: threading.Event) -> Iterator[Packet]:
        rd = self.reader
        while not stop.is_set():
            got = False
            if self.has_imu:
                batch = rd.getNextImuBatch()
                if batch is not None and len(batch):
                    got = True
                    yield "imu", _imu(batch)
            store = rd.getNextEventBatch()
            if store is not None and len(store):
                got = True
                yield "events", _events(store)
            if not got:
                if not rd.isRunning():
                    return
                time.sleep(POLL_S)

    def close(self) -> None:
        self.reader = None


def open_camera(serial: str | None = None) -> LiveSource:
    """The first connected iniVation camera (or the one with ``serial``)."""
    dv = _dv()
    try:
        found = dv.io.camera.discover()
    except Exception:  # discovery itself can fail without USB access
        found = []
    if not found:
        raise DataError("no camera connected: plug in an iniVation camera (check the USB cable "
                        "and udev permissions), or pass source=PATH.aedat4 or "
                        "source=tcp://HOST:PORT")
    try:
        reader = dv.io.camera.open(serial) if serial else dv.io.camera.open()
    except Exception as exc:
        which = f"with serial {serial} " if serial else ""
        raise DataError(f"cannot open the camera {which}({_dv_message(exc)}): check "
                        "camera_serial= against the connected cameras, or close other programs "
                        "using it") from None
    return LiveSource(reader, f"camera {reader.getCameraName()}", "camera")


def open_network(host: str, port: int) -> LiveSource:
    """A DV network stream (``dv.io.NetworkReader``) from ``host:port``."""
    dv = _dv()
    try:
        reader = dv.io.NetworkReader(host, int(port))
    except Exception as exc:
        raise DataError(f"cannot connect to the event stream tcp://{host}:{port} "
                        f"({_dv_message(exc).split(' [')[0]}): check that DV's network output "
                        "runs there and the host / port are right") from None
    return LiveSource(reader, f"stream tcp://{host}:{port}", "network")


def open_source(source: str, serial: str | None = None) -> Source:
    """``PATH.aedat4``, ``camera`` or ``tcp://HOST:PORT`` as an open :class:`Source`."""
    text = str(source).strip()
    if text == "camera":
        return open_camera(serial)
    if text.startswith("tcp://"):
        host, _, port = text[len("tcp://"):].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise DataError(f"source={text} is not a valid stream address: write "
                            "source=tcp://HOST:PORT, e.g. tcp://127.0.0.1:7777")
        return open_network(host.strip("[]"), int(port))
    if "://" in text:
        raise DataError(f"source={text}: unknown stream scheme; use PATH.aedat4, camera or "
                        "tcp://HOST:PORT")
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"source={text} does not exist: pass an AEDAT4 recording, camera or "
                        "tcp://HOST:PORT")
    return FileSource(path)
