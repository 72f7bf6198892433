"""AEDAT4 reading / writing (dv-processing) and the one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import snnexp.data.recording as recording_module
from snnexp.data.recording import (
    Events,
    ImuSamples,
    Recording,
    check_decodable,
    event_packet,
    open_recording,
    read_recording,
    write_recording,
)
from snnexp.errors import DataError

T0 = 1_700_000_000_000_000  # epoch-scale timestamps, like a camera's


def random_recording(width: int, height: int, n_events: int = 20_000, seconds: float = 2.0,
                     seed: int = 0, camera: str = "TEST") -> Recording:
    rng = np.random.default_rng(seed)
    t = T0 + np.sort(rng.integers(0, int(seconds * 1e6), n_events))
    ev = Events(t, rng.integers(0, width, n_events), rng.integers(0, height, n_events),
                rng.integers(0, 2, n_events))
    ti = T0 + np.arange(0, int(seconds * 1e6), 1000)
    imu = ImuSamples(ti, rng.normal(0, 1, (len(ti), 3)), rng.normal(0, 50, (len(ti), 3)))
    return Recording(None, camera, width, height, ev, imu)


@pytest.mark.parametrize("width,height,camera", [(346, 260, "DAVIS346_00000499"),
                                                 (640, 480, "DVXplorer_DXA00093"),
                                                 (320, 240, "DVXplorerLite_DXM00123")])
def test_round_trip_is_exact(tmp_path: Path, width: int, height: int, camera: str) -> None:
    rec = random_recording(width, height, n_events=300_000, camera=camera)  # > 2 packets
    path = write_recording(tmp_path / "rec.aedat4", rec)
    with open_recording(path) as rd:
        assert (rd.camera_name, rd.width, rd.height) == (camera, width, height)
        assert sum(1 for _ in rd.iter_events()) >= 3  # streamed per packet
    back = read_recording(path)
    assert (back.camera_name, back.width, back.height) == (camera, width, height)
    for name in "txyp":
        np.testing.assert_array_equal(getattr(back.events, name), getattr(rec.events, name))
    assert back.events.t.dtype == np.int64 and back.events.p.max() == 1
    np.testing.assert_array_equal(back.imu.t, rec.imu.t)
    # AEDAT4 stores IMU values as float32, in the camera's units (g, deg/s)
    np.testing.assert_array_equal(back.imu.acc, rec.imu.acc.astype(np.float32))
    np.testing.assert_array_equal(back.imu.gyro, rec.imu.gyro.astype(np.float32))
    assert not [p for p in tmp_path.iterdir() if p.name != "rec.aedat4"]  # no temp left


def test_fast_packet_builder_matches_safe_path(tmp_path: Path) -> None:
    rec = random_recording(346, 260, n_events=5000)
    fast = event_packet(rec.events, fast=True).numpy()
    safe = event_packet(rec.events, fast=False).numpy()
    assert fast.dtype.names == ("timestamp", "x", "y", "polarity")
    for name in fast.dtype.names:
        np.testing.assert_array_equal(fast[name], safe[name])
    a = write_recording(tmp_path / "a.aedat4", rec, fast=True)
    b = write_recording(tmp_path / "b.aedat4", rec, fast=False)
    assert a.read_bytes() == b.read_bytes()


def test_writing_unsorted_events_is_refused(tmp_path: Path) -> None:
    rec = random_recording(32, 24, 100)
    with pytest.raises(ValueError, match="sorted"):
        write_recording(tmp_path / "x.aedat4", events=rec.events[::-1], width=32, height=24)
    assert not list(tmp_path.iterdir())


def test_events_normalise_field_names() -> None:
    tonic_like = np.zeros(3, dtype=[("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("on", "?")])
    tonic_like["t"], tonic_like["on"] = [1, 2, 3], [True, False, True]
    dv_like = np.zeros(3, dtype=[("timestamp", "<i8"), ("x", "<i2"), ("y", "<i2"),
                                 ("polarity", "i1")])
    dv_like["timestamp"], dv_like["polarity"] = [1, 2, 3], [1, 0, 1]
    for arr in (tonic_like, dv_like):
        ev = Events.from_structured(arr)
        np.testing.assert_array_equal(ev.p, [1, 0, 1])
        assert ev.p.dtype == np.uint8 and ev.t.dtype == np.int64
    assert Events.from_structured(ev.to_structured()).t.tolist() == [1, 2, 3]


# ----------------------------------------------------------------------------- errors
def _one_line(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.aedat4"
    with pytest.raises(DataError) as err:
        read_recording(path)
    assert "does not exist" in _one_line(err, path) and "data.paths" in str(err.value)


def test_directory_empty_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory") as err:
        read_recording(tmp_path)
    _one_line(err, tmp_path)
    empty = tmp_path / "empty.aedat4"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="is empty") as err:
        read_recording(empty)
    text = tmp_path / "notes.aedat4"
    text.write_text("just some text, not a recording\n")
    with pytest.raises(DataError, match="not an AEDAT4 file") as err:
        read_recording(text)
    _one_line(err, text)
    old = tmp_path / "old.aedat"
    old.write_bytes(b"#!AER-DAT2.0\r\n" + bytes(100))
    with pytest.raises(DataError, match="AEDAT 2/3"):
        read_recording(old)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_recording(tmp_path / "r.aedat4", random_recording(32, 24, 100))

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(recording_module, "open", denied, raising=False)  # works as root too
    with pytest.raises(DataError, match="cannot be read .Permission denied") as err:
        read_recording(path)
    _one_line(err, path)


def test_truncated_file_is_a_data_error(tmp_path: Path) -> None:
    full = write_recording(tmp_path / "full.aedat4", random_recording(64, 48, 50_000)).read_bytes()
    for frac in (0.0005, 0.2, 0.6, 0.999):
        cut = tmp_path / f"cut{frac}.aedat4"
        cut.write_bytes(full[:max(13, int(len(full) * frac))])
        with pytest.raises(DataError, match="truncated or corrupt") as err:
            read_recording(cut)
        _one_line(err, cut)


def test_missing_streams(tmp_path: Path) -> None:
    rec = random_recording(64, 48, 1000)
    no_imu = write_recording(tmp_path / "no_imu.aedat4", events=rec.events, width=64, height=48)
    with pytest.raises(DataError, match="no IMU stream") as err:
        read_recording(no_imu)
    _one_line(err, no_imu)
    no_events = write_recording(tmp_path / "no_ev.aedat4", imu=rec.imu)
    with pytest.raises(DataError, match="no event stream"):
        read_recording(no_events)
    empty_events = write_recording(tmp_path / "empty_ev.aedat4", events=Events.empty(),
                                   imu=rec.imu, width=64, height=48)
    with pytest.raises(DataError, match="without events"):
        read_recording(empty_events)
    # without `require`, partial files can still be inspected
    assert len(read_recording(no_imu, require=False).events) == 1000


def test_corrupt_content_is_a_data_error_not_a_crash(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_recording(tmp_path / "good.aedat4", random_recording(64, 48, 50_000))
    check_decodable(good)  # a sound file passes
    data = bytearray(good.read_bytes())
    data[len(data) // 10:len(data) // 10 + 4096] = bytes(4096)  # a zero-filled block
    bad = tmp_path / "bad.aedat4"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt") as err:  # dv hangs or crashes on it
        check_decodable(bad, stall_s=3)
        read_recording(bad)  # only if the child read it fine: then this process can too
    _one_line(err, bad)
    # the two ways dv fails on corrupt packets, in the child: a crash, a hang
    monkeypatch.setattr(recording_module, "_CHILD_CODE",
                        "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(DataError, match=r"crashed on it \(SIGSEGV\)"):
        check_decodable(good)
    monkeypatch.setattr(recording_module, "_CHILD_CODE", "import time; time.sleep(60)")
    with pytest.raises(DataError, match="stalled for 1 s"):
        check_decodable(good, stall_s=1)
