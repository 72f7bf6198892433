"""`snnexp view [recording=PATH] [ckpt=PATH]`: a recording's event frames as a video."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from snnexp.config.schema import ViewConfig
from snnexp.config.validate import to_schema
from snnexp.errors import ConfigError, DataError
from snnexp.outputs import atomic_path, refuse_existing


def _check(vc: ViewConfig) -> None:
    for key in ("fps", "speed", "scale", "contrast"):
        value = float(getattr(vc, key))
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"config key '{key}' = {value} is invalid: must be a positive "
                              "number")
    if not (math.isfinite(vc.start_s) and vc.start_s >= 0):
        raise ConfigError(f"config key 'start_s' = {vc.start_s} is invalid: must be >= 0")
    if vc.duration_s is not None and not (vc.duration_s > 0):
        raise ConfigError(f"config key 'duration_s' = {vc.duration_s} is invalid: must be "
                          "positive (or null: to the end)")


def _recording(vc: ViewConfig, data: Any) -> Path:
    """The file to show: ``recording=``, else the data settings' first recording (a built-in
    ``builtin:SEED`` entry is simulated first if missing; a user path never is)."""
    from snnexp.data import sources

    if vc.recording:
        return Path(vc.recording).expanduser()
    if not data.paths:
        raise ConfigError("no recording to show: pass recording=PATH.aedat4")
    path, sim = sources.expand([str(data.paths[0])], data, "data.paths")[0]
    sources.ensure_builtin(path, sim)
    return path


def render_video(recording: Path, output: Path, *, model: Any = None, data: Any = None,
                 start_s: float = 0.0, duration_s: float | None = None, fps: float = 25.0,
                 speed: float = 1.0, scale: float = 2.0, contrast: float = 3.0,
                 progress: bool = False) -> dict[str, Any]:
    """Render ``recording`` into ``output`` (.mp4 / .gif, written atomically).

    Framing (window, downsampling, target) comes from ``model`` (a LoadedModel) if given, else
    from ``data`` (a DataConfig). Video frame k shows the window that ends at recording time
    ``start_s + k * speed / fps``; with a model, the network runs every window from ``start_s``
    on, its output integrator starting at that window's label (as an evaluation sequence).
    """
    import torch
    from tqdm import tqdm

    from snnexp.data.targets import TargetMap
    from snnexp.inference.slicer import WindowSlicer
    from snnexp.inference.sources import FileSource
    from snnexp.inference.stream import _Imu
    from snnexp.viz.video import Layout, Renderer, VideoWriter

    window_us = model.window_us if model else int(data.window_us)
    downsample = model.downsample if model else int(data.downsample)
    tmap = model.target_map if model else TargetMap.from_config(data)
    dcfg = model.config.data if model else data
    source = FileSource(recording)
    try:
        if model is not None:
            model.check_resolution(source.width, source.height, f"recording {recording}")
        if model is not None and not source.has_imu:
            raise DataError(f"recording {recording} has no IMU stream to start the prediction "
                            "from: use snnexp infer initial_angle=DEG for such streams")
        packets = source.packets()
        imu = _Imu(str(dcfg.target), float(dcfg.madgwick_gain))
        first = None
        for kind, pk in packets:
            if kind == "imu":
                imu.add(pk)
            elif len(pk):
                first = pk
                break
        if first is None:
            raise DataError(f"recording {recording} has no events: nothing to show")
        origin = int(first.t[0]) if imu.first_t is None else max(int(first.t[0]), imu.first_t)
        end = source.reader.time_range()[1] if imu.last_t is None else \
            min(source.reader.time_range()[1], imu.last_t)
        total = (end - origin) // window_us
        w0 = int(round(start_s * 1e6 / window_us))
        if w0 >= total:
            raise ConfigError(f"start_s={start_s} is past the end of recording {recording} "
                              f"({total * window_us * 1e-6:.2f} s): choose a smaller start_s")
        shown_s = (total - w0) * window_us * 1e-6 if duration_s is None \
            else min(float(duration_s), (total - w0) * window_us * 1e-6)
        n_frames = max(1, int(shown_s * fps / speed + 1e-9))
        # video frame k -> window index (several frames per window in slow motion)
        windows = [w0 + int(k * speed / fps * 1e6 // window_us) for k in range(n_frames)]
        windows = [min(w, total - 1) for w in windows]
        last = windows[-1]
        ends = origin + (np.arange(w0, last + 1, dtype=np.int64) + 1) * window_us
        labels = np.degrees(imu.angles_at(ends)) if imu.first_t is not None else None
        slicer = WindowSlicer(origin, window_us, source.width, source.height, downsample)
        c, h, w = slicer.shape
        layout = Layout(w, h, scale, chart=labels is not None or model is not None)
        series = None if labels is None else ((ends - origin) * 1e-6, labels)
        renderer = Renderer(layout, ((w0 + 1) * window_us * 1e-6, (last + 1) * window_us * 1e-6),
                            series)
        net = model.net if model is not None else None
        shows: dict[int, int] = {}
        for wi in windows:
            shows[wi] = shows.get(wi, 0) + 1
        bar = tqdm(total=n_frames, desc="rendering", unit="frame", disable=not progress)
        pred = None
        with atomic_path(output) as tmp, torch.no_grad():
            writer = VideoWriter(tmp, fps)
            try:
                def frames_of(pk: Any) -> Any:
                    yield from slicer.add(pk, until_us=end)

                def all_frames() -> Any:
                    yield from frames_of(first)
                    for kind, pk in packets:
                        if kind == "events":
                            yield from frames_of(pk)
                    yield from slicer.finish(end)

                for index, frame in all_frames():
                    if index < w0:
                        continue
                    if index > last:
                        break
                    label = None if labels is None else float(labels[index - w0])
                    if net is not None:
                        if index == w0:
                            y = float(tmap.to_target(math.radians(label)))
                            net.reset_state()
                            net.set_output_membrane(torch.tensor([y], dtype=torch.float32))
                        else:
                            x = torch.from_numpy(frame.astype(np.float32))[None]
                            y = float(net.forward_chunk(x[None])[0, 0])  # engine, K = 1
                        pred = float(tmap.to_degrees(y))
                    for _ in range(shows.get(index, 0)):
                        t_s = (index + 1) * window_us * 1e-6
                        writer.append(renderer.frame(frame, t_s, label, pred, contrast))
                        bar.update(1)
            finally:
                writer.close()
                bar.close()
            if writer.frames == 0:
                raise DataError(f"recording {recording} has no complete window to show after "
                                f"start_s={start_s}")
    finally:
        source.close()
    return {"output": str(output), "frames": writer.frames, "size": list(layout.size),
            "windows": [w0, last + 1], "fps": fps}


def view(cfg: ViewConfig | DictConfig) -> dict[str, Any]:
    """Render ``cfg``'s recording (and checkpoint predictions) into a video file."""
    from snnexp.training.runtime import configure_threads
    from snnexp.viz.video import SUFFIXES

    vc = to_schema(cfg, ViewConfig)
    _check(vc)
    configure_threads(vc.num_threads)
    out = Path(vc.output).expanduser() if vc.output else Path(vc.paths.output_dir) / "video.mp4"
    if out.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"output={out}: unknown video format '{out.suffix}'; name it .mp4 "
                          "(H.264) or .gif")
    refuse_existing([out], vc.overwrite)
    model = None
    data = vc.data
    if vc.ckpt:
        from snnexp.inference.model import load_model

        model = load_model(vc.ckpt, vc.device, vc.engine)
        data = model.config.data
    return render_video(_recording(vc, data), out, model=model, data=data, start_s=vc.start_s,
                        duration_s=vc.duration_s, fps=vc.fps, speed=vc.speed, scale=vc.scale,
                        contrast=vc.contrast, progress=vc.progress)


def view_command(cfg: DictConfig) -> str:
    res = view(cfg)
    w, h = res["size"]
    print(f"wrote {res['output']}: {res['frames']} frames of {w}x{h} at {res['fps']:g} fps "
          f"(windows {res['windows'][0]} .. {res['windows'][1] - 1})")
    return res["output"]
