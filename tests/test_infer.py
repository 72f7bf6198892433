"""`snnexp infer`: per-window inference on a file or a DV network stream, and its bad input."""

from __future__ import annotations

import csv
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from snnexp.errors import CheckpointError, ConfigError, DataError, SnnexpError
from tests.ship_support import make_checkpoint, recording


@pytest.fixture(scope="module")
def ckpt(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"), sim_dir)


@pytest.fixture(scope="module")
def model(ckpt: Path):
    from snnexp.inference.model import load_model

    torch.set_num_threads(1)
    return load_model(ckpt, engine="auto")


def _prepared(model, sim_dir: Path):
    from snnexp.data.pipeline import prepare_recording

    return prepare_recording(recording(sim_dir), model.config.data)


def _infer_file(model, path: Path, **kw):
    from snnexp.inference.sources import open_source
    from snnexp.inference.stream import run_stream

    src = open_source(str(path))
    try:
        return run_stream(model, src, **kw)
    finally:
        src.close()


@pytest.mark.parametrize("execution", ["chunk", "step"])
def test_infer_on_a_file_gives_one_row_per_window_with_the_evaluation_angles(
        execution, model, sim_dir, one_torch_thread) -> None:
    from snnexp.training.tbptt import run_sequence

    prep = _prepared(model, sim_dir)
    res = _infer_file(model, recording(sim_dir), execution=execution)
    # the data pipeline's windows: same count, same end times, same IMU labels
    assert res.n_windows == prep.n_windows
    np.testing.assert_array_equal(res.t_end_us, prep.t_end)
    np.testing.assert_allclose(res.label_deg, np.degrees(prep.angles), atol=1e-9)
    frames = torch.from_numpy(np.asarray(prep.frames(), dtype=np.float32))[:, None]
    labels = torch.from_numpy(prep.labels)[:, None]
    with torch.no_grad():
        # evaluate's TBPTT routine over the whole recording, one window per call
        ref = run_sequence(model.net, frames, labels, k=1, execution=execution)
    ref_deg = model.target_map.to_degrees(ref.preds[:, 0])
    assert res.angle_deg[0] == pytest.approx(float(model.target_map.to_degrees(prep.labels[0])))
    np.testing.assert_array_equal(res.angle_deg[1:].astype(np.float32),
                                  ref_deg.astype(np.float32))
    assert np.ptp(res.angle_deg) > 1.0  # the network moves the angle, it does not just hold it
    s = res.summary()
    assert s["windows"] == prep.n_windows and s["latency_p99_ms"] >= s["latency_p50_ms"] > 0
    assert s["realtime_factor"] > 0 and s["initial"] == "imu"


def test_windows_batched_into_chunks_give_the_same_angles(model, sim_dir,
                                                          one_torch_thread) -> None:
    """max_batch_windows: windows that wait while more of the file is there run as one chunk
    (same equations: angles to float32 rounding), each with its chunk's time as latency."""
    one = _infer_file(model, recording(sim_dir), execution="chunk")
    batched = _infer_file(model, recording(sim_dir), execution="chunk", max_batch_windows=8)
    np.testing.assert_array_equal(batched.t_end_us, one.t_end_us)
    np.testing.assert_allclose(batched.angle_deg, one.angle_deg, rtol=0, atol=1e-3)
    s = batched.summary()
    assert s["max_batch_windows"] == 8 and s["compute_realtime_factor"] > 0
    lat = batched.latency_s[1:]
    assert len(np.unique(lat)) < len(lat) // 2  # windows share their chunk's time
    with pytest.raises(ConfigError, match="'max_batch_windows' = 0 is invalid"):
        _infer_file(model, recording(sim_dir), max_batch_windows=0)


def test_realtime_replay_runs_at_the_recordings_speed(model, sim_dir, one_torch_thread) -> None:
    res = _infer_file(model, recording(sim_dir), realtime=True, duration_s=0.5)
    assert res.n_windows == 50
    assert res.wall_s >= 0.45  # paced by the event timestamps, not as fast as possible


def test_infer_command_writes_csv_and_summary_and_never_overwrites(ckpt, sim_dir,
                                                                   tmp_path) -> None:
    from snnexp.commands.infer import infer
    from tests.ship_support import compose

    out = tmp_path / "pred.csv"
    args = [f"ckpt={ckpt}", f"source={recording(sim_dir)}", f"output={out}", "progress=false",
            "duration_s=1.0", "num_threads=1", f"paths.output_dir={tmp_path}"]
    res = infer(compose("infer", args))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == res["summary"]["windows"] == 100
    assert list(rows[0]) == ["window", "t_end_us", "angle_deg", "label_deg", "latency_ms"]
    assert Path(res["summary_json"]).is_file()
    before = out.read_bytes()
    with pytest.raises(ConfigError, match="already exists.*overwrite=true"):
        infer(compose("infer", args))
    assert out.read_bytes() == before


_WRITER = r"""
import sys, time, os
import dv_processing as dv
from snnexp.data.recording import read_recording, event_packet
rec = read_recording(sys.argv[1])
stream = dv.io.Stream.EventStream(0, "events", rec.camera_name, (rec.width, rec.height))
w = dv.io.NetworkWriter("127.0.0.1", int(sys.argv[2]), stream)
print("listening", flush=True)
t0 = time.time()
while w.getClientCount() < 1 and time.time() - t0 < 60:
    time.sleep(0.01)
ev = rec.events
for a in range(0, len(ev), 5000):
    w.writeEvents(event_packet(ev[a:a + 5000]))
while w.getQueuedPacketCount() > 0 and time.time() - t0 < 120:
    time.sleep(0.01)
time.sleep(0.3)
os._exit(0)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _NoImu:
    """A file source with its IMU stream hidden (what a DV event-only network output sends)."""

    def __init__(self, src) -> None:
        self.src, self.name, self.live = src, src.name, False
        self.width, self.height, self.camera_name, self.has_imu = \
            src.width, src.height, src.camera_name, False

    def packets(self):
        return ((k, p) for k, p in self.src.packets() if k == "events")


@pytest.mark.slow
def test_infer_on_a_dv_network_stream_equals_the_same_events_from_the_file(
        model, sim_dir, one_torch_thread) -> None:
    from snnexp.inference.sources import open_source
    from snnexp.inference.stream import run_stream

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(recording(sim_dir)), str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "listening"
        src = open_source(f"tcp://127.0.0.1:{port}")
        assert (src.kind, src.width, src.height, src.has_imu) == ("network", 96, 72, False)
        net_res = run_stream(model, src, initial_angle=-90.0)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    file_src = open_source(str(recording(sim_dir)))
    try:
        file_res = run_stream(model, _NoImu(file_src), initial_angle=-90.0)
    finally:
        file_src.close()
    assert net_res.n_windows == file_res.n_windows > 500
    assert net_res.label_deg is None and net_res.angle_deg[0] == pytest.approx(-90.0)
    np.testing.assert_array_equal(net_res.angle_deg, file_res.angle_deg)


def test_unreachable_stream_and_missing_camera_are_one_line_errors() -> None:
    from snnexp.inference.sources import open_source

    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"cannot connect to the event stream tcp://127.0.0.1:\d+ "
                                        r"\(connect: Connection refused\): check") as err:
        open_source(f"tcp://127.0.0.1:{_free_port()}")
    assert "\n" not in str(err.value) and time.perf_counter() - t0 < 10
    with pytest.raises(DataError, match="no camera connected: plug in"):
        open_source("camera")
    for bad in ("tcp://nohost", "udp://1.2.3.4:5", "/no/such/rec.aedat4"):
        with pytest.raises(DataError, match="source=") as err:
            open_source(bad)


def test_stream_of_another_resolution_is_refused(model, tmp_path) -> None:
    from snnexp.config.schema import SimConfig
    from snnexp.data.simulate import simulate_recording

    other = simulate_recording(SimConfig(duration_s=0.3, width=64, height=48),
                               tmp_path / "o.aedat4")
    with pytest.raises(CheckpointError, match=r"is 64x48 pixels but checkpoint .* was trained on "
                                              r"96x72 \(downsample 2\): use a camera"):
        _infer_file(model, other)


def test_checkpoint_of_another_kind_is_refused(tmp_path, ckpt) -> None:
    from snnexp.inference.model import load_model

    plain = tmp_path / "state_dict.pt"
    torch.save({"conv.weight": torch.zeros(3)}, plain)
    with pytest.raises(CheckpointError, match="not an snnexp checkpoint"):
        load_model(plain)
    obj = torch.load(ckpt, weights_only=True)
    obj["config"]["model"]["hidden"] = 7  # a config that does not describe these weights
    other = tmp_path / "other.pt"
    torch.save(obj, other)
    with pytest.raises(CheckpointError, match="weights of another network"):
        load_model(other)
    del obj["data"]["target_map"]
    torch.save(obj, other)
    with pytest.raises(CheckpointError, match="not a checkpoint of an snnexp orientation"):
        load_model(other)


def test_infer_cli_bad_input_is_one_line(run_cli, ckpt, tmp_path) -> None:
    out = run_cli("infer", f"ckpt={ckpt}", "source=camera", "hydra.run.dir=outputs/x")
    assert out.returncode == 2
    err = [ln for ln in out.stderr.splitlines() if "error" in ln]
    assert err == ["snnexp infer: error: no camera connected: plug in an iniVation camera "
                   "(check the USB cable and udev permissions), or pass source=PATH.aedat4 or "
                   "source=tcp://HOST:PORT"], out.stderr
    assert issubclass(DataError, SnnexpError)
