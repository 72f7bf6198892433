"""The built-in classification data: short clips of a camera moving in one of six ways.

Each clip is one sample of one class (``data.classes.motions``): ``roll_left`` / ``roll_right``
(rotation about the optical axis, counter-clockwise / clockwise in the image), ``pan_left`` /
``pan_right`` (the camera turns left / right: the scene slides right / left in the image) and
``tilt_up`` / ``tilt_down`` (the scene slides down / up). The scene is one of ``scenes`` textured
horizons of the roll simulator (:func:`snnexp.data.simulate.make_scene`) with dark vertical
poles (so that panning has edges to see, as tilting has the horizon), seen at a random
start roll and height; speed (``speed`` x 90 deg/s or 1.5 sensor widths per second) and length
(``duration_s``) vary per clip, and a small shake about the other axes keeps the classes from
being told apart by a perfectly still background.

Events follow the DVS model of the roll simulator, rendered as frames: the scene is rendered at
1 kHz; a pixel fires one event per contrast threshold (per-pixel mismatch) its log intensity moved
since its last event, timestamps spread linearly between renders, plus background noise. Every
clip is written with dv-processing's AEDAT4 writer (events only) to
``<root>/<class>/<class>_<index>.aedat4`` and read back like a camera's file. Everything derives
from ``seed``: the same settings give the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np

from snnexp.config.schema import MOTIONS, ClassSimConfig, SimConfig
from snnexp.data.recording import Events, write_recording
from snnexp.data.simulate import T0_US, Scene, make_scene

log = logging.getLogger(__name__)

RENDER_HZ = 1000.0
ROLL_DEG_S = 90.0  # roll speed at speed 1
PAN_WIDTHS_S = 1.5  # pan / tilt speed at speed 1, in sensor widths per second
SHAKE_PX, SHAKE_DEG = 0.8, 0.5  # amplitude of the shake about the other axes
CONTRAST, CONTRAST_SIGMA, NOISE_HZ = 0.2, 0.03, 0.2
CAMERA = "DVS_CLASSES_SIM"
SIM_VERSION = 2  # part of the folder hash: clips of an older simulator are never reused
POLES, POLE_WIDTH_PX, POLE_LOG = 8, (2.0, 6.0), -0.8  # dark vertical poles across each scene
BUILTIN_CLASSES = "builtin:classes"


def builtin_root(cfg: ClassSimConfig, builtin_dir: str | os.PathLike[str]) -> Path:
    """Folder of the built-in clips of ``cfg``: named after the size and a hash of all settings."""
    digest = hashlib.sha256(json.dumps([dataclasses.asdict(cfg), SIM_VERSION],
                                       sort_keys=True).encode())
    return Path(builtin_dir) / f"classes_{cfg.width}x{cfg.height}_{digest.hexdigest()[:8]}"


def make_pole_scene(cfg: ClassSimConfig, index: int) -> Scene:
    """Scene ``index``: a horizon of the roll simulator (large enough for every pan and tilt)
    with ``POLES`` dark vertical poles (trees, posts) at random places across it."""
    base = make_scene(SimConfig(width=4 * cfg.width, height=4 * cfg.width,
                                seed=int(cfg.seed) * 1000 + index))
    rng = np.random.default_rng([int(cfg.seed), index, 0x901E])
    log_i = base.log_i.copy()
    h = np.arange(log_i.shape[1]) * base.dx - base.radius
    for centre in rng.uniform(-base.radius, base.radius, POLES):
        half = 0.5 * rng.uniform(*POLE_WIDTH_PX)
        log_i[:, np.abs(h - centre) <= half] += POLE_LOG
    return Scene(log_i, base.radius, base.dx)


def _pose(motion: str, t: np.ndarray, speed: float, width: int, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(roll deg, pan px, tilt px) of the camera at times ``t`` (s) for ``motion``."""
    wobble = 1.0 + 0.25 * np.sin(2 * math.pi * rng.uniform(0.5, 2.0) * t + rng.uniform(0, 6.3))
    ramp = np.cumsum(wobble) / RENDER_HZ  # distance travelled at unit speed, varying a little
    shake = [a * np.sin(2 * math.pi * rng.uniform(1.0, 4.0) * t + rng.uniform(0, 6.3))
             for a in (SHAKE_DEG, SHAKE_PX, SHAKE_PX)]
    roll, pan, tilt = shake
    lin = speed * PAN_WIDTHS_S * width * ramp
    if motion == "roll_left":
        roll = roll + speed * ROLL_DEG_S * ramp
    elif motion == "roll_right":
        roll = roll - speed * ROLL_DEG_S * ramp
    elif motion == "pan_left":
        pan = pan - lin
    elif motion == "pan_right":
        pan = pan + lin
    elif motion == "tilt_up":
        tilt = tilt + lin
    elif motion == "tilt_down":
        tilt = tilt - lin
    else:
        raise ValueError(f"unknown motion {motion!r}: use one of {', '.join(MOTIONS)}")
    return roll, pan, tilt


def _render(scene: Scene, u: np.ndarray, v: np.ndarray, roll_deg: float, pan: float,
            tilt: float) -> np.ndarray:
    r = math.radians(roll_deg)
    h = (u * math.cos(r) - v * math.sin(r) + pan).astype(np.float32)
    z = (-u * math.sin(r) - v * math.cos(r) + tilt).astype(np.float32)
    return scene.sample(h, z)


def simulate_clip(motion: str, scene: Scene, width: int, height: int, duration_s: float,
                  speed: float, rng: np.random.Generator) -> Events:
    """The events of one clip (see the module docstring), timestamps from ``T0_US``."""
    n = max(2, int(round(duration_s * RENDER_HZ)) + 1)
    t = np.arange(n) / RENDER_HZ
    roll, pan, tilt = _pose(motion, t, speed, width, rng)
    roll0 = rng.uniform(-25.0, 25.0)
    tilt0 = rng.uniform(-0.25, 0.25) * height
    pan0 = rng.uniform(-0.5, 0.5) * width
    ys, xs = np.mgrid[0:height, 0:width]
    u = (xs - (width - 1) / 2).ravel().astype(np.float32)
    v = (ys - (height - 1) / 2).ravel().astype(np.float32)
    thr = np.maximum(CONTRAST * (1 + CONTRAST_SIGMA / CONTRAST * rng.standard_normal(u.size)),
                     0.05).astype(np.float32)
    ref = _render(scene, u, v, roll0 + roll[0], pan0 + pan[0], tilt0 + tilt[0])
    prev = ref.copy()
    ts, pix, pol = [], [], []
    for i in range(1, n):
        cur = _render(scene, u, v, roll0 + roll[i], pan0 + pan[i], tilt0 + tilt[i])
        diff = cur - ref
        count = np.floor(np.abs(diff) / thr).astype(np.int64)
        fired = np.flatnonzero(count)
        if len(fired):
            c = count[fired]
            sign = np.sign(diff[fired]).astype(np.float32)
            idx = np.repeat(fired, c)
            k = np.arange(len(idx)) - np.repeat(np.cumsum(c) - c, c) + 1  # 1 .. c per pixel
            # the k-th threshold crossing, linear in log intensity between the two renders
            level = ref[idx] + np.repeat(sign, c) * k * thr[idx]
            step = cur[idx] - prev[idx]
            frac = np.clip((level - prev[idx]) / np.where(step == 0, 1, step), 0, 1)
            ref[fired] += sign * c * thr[fired]
            ts.append(((i - 1 + frac) * 1e6 / RENDER_HZ).astype(np.int64))
            pix.append(idx)
            pol.append(np.repeat(sign > 0, c))
        prev = cur
    t_end = int(duration_s * 1e6)
    n_noise = int(rng.poisson(NOISE_HZ * u.size * duration_s))
    ts.append(rng.integers(0, t_end, n_noise))
    pix.append(rng.integers(0, u.size, n_noise))
    pol.append(rng.uniform(size=n_noise) < 0.5)
    t_all, p_all, s_all = (np.concatenate(a) for a in (ts, pix, pol))
    order = np.argsort(t_all, kind="stable")
    y, x = np.divmod(p_all[order], width)
    return Events(T0_US + t_all[order], x, y, s_all[order])


def write_builtin(cfg: ClassSimConfig, root: str | os.PathLike[str]) -> Path:
    """Simulate every clip of ``cfg`` into ``root/<class>/`` (atomically: a temporary folder
    renamed at the end, so an interrupted run leaves nothing half-written); returns ``root``."""
    root = Path(root)
    if root.is_dir():
        return root
    for m in cfg.motions:
        if m not in MOTIONS:
            raise ValueError(f"unknown motion {m!r}: use {', '.join(MOTIONS)}")
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("simulating the built-in classification clips (%d classes x %d) to %s",
             len(cfg.motions), cfg.samples_per_class, root)
    try:
        scenes = [make_pole_scene(cfg, s) for s in range(max(1, cfg.scenes))]
        for c, motion in enumerate(cfg.motions):
            for i in range(cfg.samples_per_class):
                rng = np.random.default_rng([int(cfg.seed), c, i, 0xC1A55])
                scene = scenes[int(rng.integers(len(scenes)))]
                duration = float(rng.uniform(*cfg.duration_s))
                speed = float(rng.uniform(*cfg.speed))
                ev = simulate_clip(motion, scene, cfg.width, cfg.height, duration, speed, rng)
                write_recording(tmp / motion / f"{motion}_{i:04d}.aedat4", events=ev,
                                width=cfg.width, height=cfg.height, camera_name=CAMERA)
        root.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
