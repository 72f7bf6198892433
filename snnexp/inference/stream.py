"""Stateful per-window inference on an event stream: one network step per window.

The grid starts where events and IMU both have data (the data pipeline's common start; the
first event when the stream has no IMU). The output integrator starts from the IMU label of
window 0 (else from ``initial_angle``), then the network steps once per later window, exactly
as an evaluation sequence does (docs/METHOD.md section 3), so a file gives evaluate's angles.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from snnexp.data.labels import imu_angles, labels_at
from snnexp.data.recording import Events, ImuSamples
from snnexp.errors import ConfigError, DataError
from snnexp.inference.model import LoadedModel
from snnexp.inference.slicer import WindowSlicer
from snnexp.inference.sources import Source


@dataclass
class StreamResult:
    """Per window: end time (us), predicted angle (deg), step latency (s; NaN for window 0,
    the initial condition); the IMU label (deg) when the stream has an IMU."""

    t_end_us: np.ndarray
    angle_deg: np.ndarray
    latency_s: np.ndarray
    label_deg: np.ndarray | None
    wall_s: float
    window_us: int
    initial: str  # where the integrator started: "imu" or "initial_angle"
    interrupted: bool = False
    compute_s: float | None = None  # time in network calls (None: the sum of the latencies)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_windows(self) -> int:
        return int(len(self.t_end_us))

    def summary(self) -> dict[str, Any]:
        """Windows, stream and wall time, latency p50 / p99 / max (ms), real-time factors."""
        stream_s = self.n_windows * self.window_us * 1e-6
        lat = self.latency_s[1:] if self.n_windows > 1 else np.zeros(0)
        out: dict[str, Any] = {
            "windows": self.n_windows, "window_us": self.window_us,
            "stream_s": round(stream_s, 6), "wall_s": round(self.wall_s, 6),
            "initial": self.initial, "interrupted": self.interrupted, **self.info}
        if len(lat):
            out.update({"latency_p50_ms": float(np.percentile(lat, 50) * 1e3),
                        "latency_p99_ms": float(np.percentile(lat, 99) * 1e3),
                        "latency_max_ms": float(lat.max() * 1e3),
                        # stream time over the time the network needed for it: > 1 keeps up
                        "compute_realtime_factor": float(
                            len(lat) * self.window_us * 1e-6
                            / (self.compute_s if self.compute_s else lat.sum()))})
        if self.wall_s > 0:  # everything counted: reading, slicing, stepping
            out["realtime_factor"] = float(stream_s / self.wall_s)
        if self.label_deg is not None and self.n_windows > 1:
            err = np.abs(self.angle_deg[1:] - self.label_deg[1:])
            out["mae_deg"] = float(err.mean())
        return out


class _Imu:
    """IMU samples collected so far; angles from the Madgwick filter on demand."""

    def __init__(self, target: str, gain: float) -> None:
        self.parts: list[ImuSamples] = []
        self.target, self.gain = target, gain

    def add(self, imu: ImuSamples) -> None:
        if len(imu):
            self.parts.append(imu)

    @property
    def first_t(self) -> int | None:
        return int(self.parts[0].t[0]) if self.parts else None

    @property
    def last_t(self) -> int | None:
        return int(self.parts[-1].t[-1]) if self.parts else None

    def angles_at(self, t_us: np.ndarray) -> np.ndarray:
        t = np.concatenate([p.t for p in self.parts])
        acc = np.concatenate([p.acc for p in self.parts])
        gyro = np.concatenate([p.gyro for p in self.parts])
        return labels_at(t_us, t, imu_angles(t, acc, gyro, self.target, self.gain))


def run_stream(model: LoadedModel, source: Source, *, realtime: bool = False,
               initial_angle: float | None = None, duration_s: float | None = None,
               execution: str = "chunk", max_batch_windows: int = 1,
               on_window: Callable[[int, float], None] | None = None) -> StreamResult:
    """Run ``model`` on ``source`` until it ends (or ``duration_s`` of stream, or Ctrl-C).

    ``realtime`` paces a file at its own speed (live sources always arrive in real time).
    ``execution`` ``chunk`` steps through the engine's fused kernels as a chunk of K = 1,
    ``step`` through the per-step reference path (same equations; float32 rounding may differ).
    ``max_batch_windows`` > 1 (chunk only): complete windows that wait while more data is
    already there (a file replayed as fast as possible, a backlog of a live source) run as one
    chunk of up to that many steps (same equations; each window's latency is then its chunk's
    time). ``on_window(index, angle_deg)`` is called after every window (progress, display).
    """
    import torch

    model.check_resolution(source.width, source.height, source.name)
    cfg = model.config.data
    use_imu = source.has_imu
    if not use_imu and initial_angle is None:
        raise DataError(f"{source.name} has no IMU stream to start the prediction from: pass "
                        "initial_angle=DEG (the camera's angle at the start, in degrees)")
    imu = _Imu(str(cfg.target), float(cfg.madgwick_gain))
    net = model.net
    device = next(net.parameters()).device
    if execution not in ("chunk", "step"):
        raise ConfigError(f"config key 'execution' = {execution!r} is invalid: allowed values "
                          "are chunk, step (e.g. execution=chunk)")
    if isinstance(max_batch_windows, bool) or not isinstance(max_batch_windows, int) \
            or max_batch_windows < 1:
        raise ConfigError(f"config key 'max_batch_windows' = {max_batch_windows!r} is invalid: "
                          "must be an integer >= 1 (1: every window alone, lowest latency)")
    batch = max_batch_windows if execution == "chunk" else 1
    t_end: list[int] = []
    angles: list[float] = []
    latency: list[float] = []
    compute = [0.0]  # seconds spent in network steps
    slicer: WindowSlicer | None = None
    waiting: list[Events] = []  # event packets before the grid's origin is known
    pending: list[tuple[int, np.ndarray]] = []  # complete windows not yet stepped
    last_event = None
    paced = realtime and not source.live
    until = None  # a file's windows end with its IMU (the data pipeline's common range)
    t_stop = None
    interrupted = False
    start = time.perf_counter()
    t_first = None

    def emit(index: int, y: float, lat: float) -> None:
        assert slicer is not None
        t_end.append(slicer.end_of(index))
        angles.append(float(model.target_map.to_degrees(y)))
        latency.append(lat)
        if on_window is not None:
            on_window(index, angles[-1])

    def initial(index: int) -> None:
        """Window 0: the integrator's initial condition (no network step)."""
        assert slicer is not None
        if use_imu:
            end = slicer.end_of(index)
            y0 = float(model.target_map.to_target(imu.angles_at(np.array([end]))[0]))
        else:
            y0 = model.initial_target(float(initial_angle))
        net.reset_state()
        net.set_output_membrane(torch.tensor([y0], dtype=torch.float32, device=device))
        emit(index, y0, float("nan"))

    def run(windows: list[tuple[int, np.ndarray]]) -> None:
        """One network call for ``windows`` (consecutive): a step, or a chunk of K steps."""
        t0 = time.perf_counter()
        x = torch.from_numpy(np.stack([f for _, f in windows]).astype(np.float32))
        x = x.to(device)[:, None]  # [K, 1, C, H, W]
        if execution == "step":
            ys = [float(net.forward_step(x[0])[0])]
        else:
            ys = net.forward_chunk(x)[:, 0].tolist()
        lat = time.perf_counter() - t0
        compute[0] += lat
        for (index, _), y in zip(windows, ys):
            emit(index, y, lat)

    def flush(everything: bool) -> None:
        """Step the pending windows: full chunks, and the rest too if ``everything``."""
        while pending and (everything or len(pending) >= batch):
            part = pending[:batch]
            del pending[:batch]
            run(part)

    def backlog(behind: bool) -> bool:
        """Whether more data is already waiting (then windows may gather into a chunk)."""
        if source.live:
            return source.backlog()
        return behind or not paced

    with torch.no_grad():
        try:
            for kind, packet in source.packets():
                if kind == "imu":
                    imu.add(packet)
                    if not source.live:
                        until = imu.last_t
                    continue
                if not len(packet):
                    continue
                if t_first is None:
                    t_first = int(packet.t[0])
                behind = False
                if paced:
                    ahead = (int(packet.t[-1]) - t_first) * 1e-6 - (time.perf_counter() - start)
                    if ahead > 0 and not pending:
                        time.sleep(ahead)
                    behind = ahead <= 0
                last_event = int(packet.t[-1])
                if slicer is None:
                    waiting.append(packet)
                    if use_imu and imu.first_t is None:
                        continue
                    origin = max(int(waiting[0].t[0]), imu.first_t) if use_imu \
                        else int(waiting[0].t[0])
                    slicer = WindowSlicer(origin, model.window_us, source.width, source.height,
                                          model.downsample)
                    if duration_s is not None:
                        t_stop = origin + int(round(float(duration_s) * 1e6))
                    packets, waiting = waiting, []
                else:
                    packets = [packet]
                cap = until if t_stop is None else min(t_stop, until or t_stop)
                for pk in packets:
                    for index, frame in slicer.add(pk, until_us=cap):
                        if index == 0:
                            initial(index)
                        else:
                            pending.append((index, frame))
                stop = t_stop is not None and last_event >= t_stop
                flush(everything=stop or batch == 1 or not backlog(behind))
                if stop:
                    break
            else:
                if slicer is not None and last_event is not None:
                    last = last_event if until is None else min(last_event, until)
                    for index, frame in slicer.finish(last):
                        if index == 0:
                            initial(index)
                        else:
                            pending.append((index, frame))
                flush(everything=True)
        except KeyboardInterrupt:
            interrupted = True
    wall = time.perf_counter() - start
    if slicer is None or not t_end:
        raise DataError(f"{source.name} ended before one complete window of "
                        f"{model.window_us} us with events" + (" and IMU samples" if use_imu
                                                              else "")
                        + ": stream longer or check that the camera sends events")
    ends = np.asarray(t_end, dtype=np.int64)
    labels = None
    if use_imu:
        labels = np.degrees(imu.angles_at(ends))
    return StreamResult(t_end_us=ends, angle_deg=np.asarray(angles), latency_s=np.asarray(latency),
                        label_deg=labels, wall_s=wall, window_us=model.window_us,
                        initial="imu" if use_imu else "initial_angle", interrupted=interrupted,
                        compute_s=compute[0],
                        info={"source": source.name, "camera": source.camera_name,
                              "execution": execution, "max_batch_windows": batch,
                              "resolution": [source.width, source.height]})
