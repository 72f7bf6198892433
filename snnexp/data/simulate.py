"""The built-in simulated recording: a DAVIS346-like camera rolling in front of a horizon.

The camera turns about its optical axis (through the image centre) within
[``roll_min_deg``, ``roll_max_deg``], with varying speed and reversals. The scene is a bright,
lightly clouded sky over darker, textured ground; the horizon passes through the image centre, so
its orientation in the image is ``-roll``.

Events follow the usual DVS model: a pixel fires when its log intensity has moved by its contrast
threshold (``contrast_threshold`` with per-pixel mismatch ``threshold_sigma``) since its last
event, plus background-activity noise. Because the scene only rotates, a pixel's log intensity is
a function of the roll angle alone: each pixel's profile over the covered roll range is sampled
once (finer than a pixel along its arc) and its threshold crossings located; the motion, rendered
at ``render_rate_hz``, then maps crossing angles to event times (linear between renders, like
ESIM). The DVS hysteresis is exact: a crossing fires unless it is the first after the pixel's log
intensity changed direction. Everything is vectorised numpy and seeded: the same config gives the
same bytes.

The IMU is consistent with the motion, with the reference rig's convention that the visible roll
is the rotation about the IMU's x axis: the gyroscope (deg/s) reads the roll rate about x, plus
white noise and a constant bias; the accelerometer (g) reads gravity in the IMU frame,
(0, sin roll, cos roll), plus white noise. A Madgwick filter recovers the roll from it
(about 0.05 deg RMS over 60 s).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from snnexp.config.schema import SimConfig
from snnexp.data.recording import Events, ImuSamples, Recording, write_recording

T0_US = 1_700_000_000_000_000  # epoch-scale start time, like a camera's timestamps

# random streams derived from sim.seed (independent of each other)
_MOTION, _SCENE, _PIXELS, _NOISE, _IMU = range(5)

PERIOD_MIN, PERIOD_MAX = 4.0, 16.0  # periods (s) of the speed modulation g(t)
B0 = 0.35  # theta' = w_max * (B0 + (1 - B0) g), g in [-1, 1]: in [-0.3, 1] * w_max
AMPLITUDE = 0.95  # the roll swings over this fraction of [roll_min_deg, roll_max_deg]
ARC_STEP_PX = 0.75  # profile sampling: arc length (pixels) the outermost pixel moves per sample
BLOCK_SAMPLES = 1 << 21  # profile samples processed at once (memory bound)
SEGMENT_S = 30.0  # events are generated and written this many seconds at a time
# the scene, in log intensity: ground below the sky, and the std of its textures
GROUND_LOG = -1.0
PATCHES_STD, FINE_STD, CLOUDS_STD = 0.12, 0.08, 0.05


def _rng(sim: SimConfig, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(sim.seed) % (1 << 63), stream])


# ----------------------------------------------------------------------------- motion
@dataclass(frozen=True, eq=False)
class Motion:
    """Roll(t) = centre + amp * sin(theta(t)), with theta' = w_max * (b0 + b1 * g(t)) and g a
    normalised sum of three sinusoids in [-1, 1]: |roll rate| <= amp * w_max = max speed, the
    speed varies, and theta' < 0 at times adds reversals inside the range."""

    centre: float  # deg
    amp: float  # deg
    w_max: float  # rad/s
    b0: float
    b1: float
    theta0: float
    a: np.ndarray  # component weights (sum 1)
    nu: np.ndarray  # angular frequencies (rad/s)
    psi: np.ndarray  # phases

    def _theta(self, t: np.ndarray) -> np.ndarray:
        integral = np.sum(self.a / self.nu * (np.cos(self.psi) - np.cos(np.multiply.outer(
            t, self.nu) + self.psi)), axis=-1)
        return self.theta0 + self.w_max * (self.b0 * t + self.b1 * integral)

    def _theta_rate(self, t: np.ndarray) -> np.ndarray:
        g = np.sum(self.a * np.sin(np.multiply.outer(t, self.nu) + self.psi), axis=-1)
        return self.w_max * (self.b0 + self.b1 * g)

    def roll_deg(self, t_s: np.ndarray | float) -> np.ndarray:
        """Roll in degrees at ``t_s`` seconds after the start."""
        t = np.asarray(t_s, dtype=np.float64)
        return self.centre + self.amp * np.sin(self._theta(t))

    def rate_deg_s(self, t_s: np.ndarray | float) -> np.ndarray:
        """d roll / dt in degrees per second at ``t_s``."""
        t = np.asarray(t_s, dtype=np.float64)
        return self.amp * np.cos(self._theta(t)) * self._theta_rate(t)


def motion(sim: SimConfig) -> Motion:
    """The seeded roll trajectory of ``sim``."""
    rng = _rng(sim, _MOTION)
    centre = 0.5 * (sim.roll_min_deg + sim.roll_max_deg)
    amp = AMPLITUDE * 0.5 * (sim.roll_max_deg - sim.roll_min_deg)
    w_max = math.radians(sim.max_speed_deg_s) / math.radians(amp) if amp > 0 else 0.0
    periods = rng.uniform(PERIOD_MIN, PERIOD_MAX, 3)
    a = rng.uniform(0.5, 1.0, 3)
    return Motion(centre=centre, amp=amp, w_max=w_max, b0=B0, b1=1 - B0,
                  theta0=float(rng.uniform(0, 2 * math.pi)), a=a / a.sum(),
                  nu=2 * math.pi / periods, psi=rng.uniform(0, 2 * math.pi, 3))


def simulated_roll_deg(sim: SimConfig, t_us: np.ndarray | int) -> np.ndarray:
    """The true roll (degrees) at absolute timestamps ``t_us`` (microseconds, from T0_US)."""
    t = (np.asarray(t_us, dtype=np.int64) - T0_US) * 1e-6
    return motion(sim).roll_deg(t)


# ----------------------------------------------------------------------------- IMU
def imu_timestamps(sim: SimConfig) -> np.ndarray:
    """IMU sample times (us) at ``imu_rate_hz`` over the recording."""
    n = int(math.ceil(sim.duration_s * sim.imu_rate_hz - 1e-9))
    return T0_US + np.round(np.arange(n) * (1e6 / sim.imu_rate_hz)).astype(np.int64)


def simulate_imu(sim: SimConfig) -> ImuSamples:
    """IMU samples consistent with the motion: gyroscope in deg/s (roll rate about x + noise +
    constant bias), accelerometer in g (gravity in the camera frame + noise)."""
    rng = _rng(sim, _IMU)
    t_us = imu_timestamps(sim)
    t = (t_us - T0_US) * 1e-6
    m = motion(sim)
    roll = np.radians(m.roll_deg(t))
    n = len(t)
    bias = rng.normal(size=3)
    bias *= sim.gyro_bias_deg_s / max(np.linalg.norm(bias), 1e-12)
    gyro = rng.normal(0.0, sim.gyro_noise_deg_s, (n, 3)) + bias
    gyro[:, 0] += m.rate_deg_s(t)
    acc = np.stack([np.zeros(n), np.sin(roll), np.cos(roll)], axis=1)
    acc += rng.normal(0.0, sim.accel_noise_g, (n, 3))
    return ImuSamples(t_us, acc, gyro)


# ----------------------------------------------------------------------------- scene
@dataclass(frozen=True, eq=False)
class Scene:
    """Log intensity on a world grid (h along the horizon, z up), spacing ``dx`` pixels,
    covering [-radius, radius]^2 around the rotation centre."""

    log_i: np.ndarray  # [N, N] float32, row = z index, column = h index
    radius: float
    dx: float

    def sample(self, h: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Bilinear log intensity at world points (h, z) (pixels from the centre)."""
        n = self.log_i.shape[0]
        inv = np.float32(1.0 / self.dx)
        fx = (h + np.float32(self.radius)) * inv
        fz = (z + np.float32(self.radius)) * inv
        np.clip(fx, 0, n - 1.001, out=fx)
        np.clip(fz, 0, n - 1.001, out=fz)
        ix = fx.astype(np.int32)
        iz = fz.astype(np.int32)
        fx -= ix
        fz -= iz
        idx = iz * n + ix
        flat = self.log_i.reshape(-1)
        a = flat[idx]
        b = flat[idx + 1]
        top = a + fx * (b - a)
        idx += n
        a = flat[idx]
        b = flat[idx + 1]
        bottom = a + fx * (b - a)
        return top + fz * (bottom - top)


def _smooth_noise(rng: np.random.Generator, n: int, scale_cells: float) -> np.ndarray:
    """Gaussian-filtered white noise on an n x n grid, unit std, feature size ~scale_cells."""
    white = rng.standard_normal((n, n))
    ky = np.fft.fftfreq(n)[:, None]
    kx = np.fft.rfftfreq(n)[None, :]
    filt = np.exp(-2 * (math.pi * scale_cells) ** 2 * (kx ** 2 + ky ** 2) / 4)
    field = np.fft.irfft2(np.fft.rfft2(white) * filt, s=(n, n))
    return (field - field.mean()) / max(field.std(), 1e-12)


def make_scene(sim: SimConfig) -> Scene:
    """The horizon scene of ``sim``: sky (log 0 +- clouds) over ground (about 1.2 darker in log,
    with patches and fine texture); texture scales with the sensor size."""
    rng = _rng(sim, _SCENE)
    half_diag = 0.5 * math.hypot(sim.width, sim.height)
    radius = half_diag + 3.0
    dx = 0.5
    n = int(math.ceil(2 * radius / dx)) + 2
    feature = max(half_diag / 30.0, 1.5)  # texture feature size in pixels
    coords = (np.arange(n) * dx - radius)
    z = coords[:, None]
    clouds = CLOUDS_STD * _smooth_noise(rng, n, 3 * feature / dx)
    patches = PATCHES_STD * _smooth_noise(rng, n, 2.5 * feature / dx)
    fine = FINE_STD * _smooth_noise(rng, n, feature / dx)
    sky = 0.0 - 0.15 * np.clip(z / half_diag, 0, 1) + clouds
    ground = GROUND_LOG + patches + fine
    w = 0.5 * (1 + np.tanh(z / 0.5))  # the horizon: a sharp edge at z = 0
    log_i = (w * sky + (1 - w) * ground).astype(np.float32)
    return Scene(log_i, radius, dx)


def render_log_intensity(sim: SimConfig, roll_deg: float, scene: Scene | None = None
                         ) -> np.ndarray:
    """The log-intensity image [H, W] the camera sees at ``roll_deg`` (for viewing / checks)."""
    scene = scene or make_scene(sim)
    u, v = _pixel_offsets(sim)
    r = math.radians(roll_deg)
    h = (u * math.cos(r) - v * math.sin(r)).astype(np.float32)
    z = (-u * math.sin(r) - v * math.cos(r)).astype(np.float32)
    return scene.sample(h, z).reshape(sim.height, sim.width)


def _pixel_offsets(sim: SimConfig) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centre offsets (u right, v down) from the image centre, flattened row-major."""
    y, x = np.divmod(np.arange(sim.width * sim.height), sim.width)
    return x - 0.5 * (sim.width - 1), y - 0.5 * (sim.height - 1)


# ----------------------------------------------------------------------------- events
def _n_angles(lo: float, hi: float, radius: float) -> int:
    return max(int(math.ceil((hi - lo) * radius / ARC_STEP_PX)) + 1, 2)


def _crossings(sim: SimConfig, scene: Scene, lo: float, hi: float, offset: np.ndarray,
               inv_c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All threshold crossings of every pixel's log-intensity profile over roll in [lo, hi]
    (radians): (pixel, roll angle, direction +-1 with increasing roll)."""
    u, v = _pixel_offsets(sim)
    rad = np.hypot(u, v)
    order = np.argsort(rad, kind="stable")  # blocks of similar radius share an angular step
    pix_out, ang_out, dir_out = [], [], []
    start = 0
    total = len(order)
    while start < total:
        # pixels sorted by radius: a block's angular step suits its outermost pixel
        r_max = max(float(rad[order[min(start + 1023, total - 1)]]), 1.0)
        stop = min(total, start + max(1024, BLOCK_SAMPLES // _n_angles(lo, hi, r_max)))
        n_ang = _n_angles(lo, hi, max(float(rad[order[stop - 1]]), 1.0))
        pix = order[start:stop]
        grid = np.linspace(lo, hi, n_ang)
        step = (hi - lo) / (n_ang - 1)
        cos_r, sin_r = np.cos(grid).astype(np.float32), np.sin(grid).astype(np.float32)
        pu, pv = u[pix].astype(np.float32)[:, None], v[pix].astype(np.float32)[:, None]
        log_i = scene.sample(pu * cos_r - pv * sin_r, -pu * sin_r - pv * cos_r)
        level = (log_i - offset[pix, None]) * inv_c[pix, None]  # in thresholds
        k = np.floor(level).astype(np.int32)
        dk = k[:, 1:] - k[:, :-1]
        pi, ji = np.nonzero(dk)
        if len(pi):
            d = dk[pi, ji]
            count = np.abs(d)
            rep = np.repeat(np.arange(len(pi)), count)
            within = np.arange(len(rep)) - np.repeat(np.cumsum(count) - count, count)
            up = d[rep] > 0
            k0 = k[pi, ji][rep]
            lvl = np.where(up, k0 + 1 + within, k0 - within).astype(np.float64)
            u0 = level[pi, ji][rep].astype(np.float64)
            u1 = level[pi, ji + 1][rep].astype(np.float64)
            frac = np.clip((lvl - u0) / (u1 - u0), 0.0, 1.0)
            pix_out.append(pix[pi[rep]].astype(np.int32))
            ang_out.append(grid[ji[rep]] + frac * step)
            dir_out.append(np.where(up, 1, -1).astype(np.int8))
        start = stop
    if not pix_out:
        return np.zeros(0, np.int32), np.zeros(0), np.zeros(0, np.int8)
    return np.concatenate(pix_out), np.concatenate(ang_out), np.concatenate(dir_out)


def _sweeps(roll: np.ndarray) -> list[tuple[int, int, int]]:
    """Monotonic pieces (first, last render index, direction +-1) of the sampled roll."""
    d = np.sign(np.diff(roll)).astype(np.int8)
    if len(d) == 0:
        return []
    nonzero = np.where(d != 0, np.arange(len(d)), 0)
    d = d[np.maximum.accumulate(nonzero)]  # a flat step continues the previous direction
    d[d == 0] = 1
    cuts = np.flatnonzero(d[1:] != d[:-1]) + 1
    bounds = np.concatenate([[0], cuts, [len(d)]])
    return [(int(a), int(b), int(d[a])) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass(eq=False)
class _Crossings:
    """Threshold crossings sorted by angle, with each one's neighbours along its pixel's
    profile (previous / next crossing angle, and whether it has the same direction)."""

    pix: np.ndarray
    ang: np.ndarray
    dir: np.ndarray
    prev_ang: np.ndarray
    next_ang: np.ndarray
    same_prev: np.ndarray
    same_next: np.ndarray

    @classmethod
    def build(cls, pix: np.ndarray, ang: np.ndarray, dirs: np.ndarray) -> _Crossings:
        n = len(pix)
        by_pixel = np.lexsort((ang, pix))
        p, a, d = pix[by_pixel], ang[by_pixel], dirs[by_pixel]
        same_pixel = p[1:] == p[:-1]
        prev_ang = np.full(n, -np.inf)
        next_ang = np.full(n, np.inf)
        prev_ang[1:][same_pixel] = a[:-1][same_pixel]
        next_ang[:-1][same_pixel] = a[1:][same_pixel]
        same_dir = same_pixel & (d[1:] == d[:-1])
        same_prev = np.zeros(n, bool)
        same_next = np.zeros(n, bool)
        same_prev[1:] = same_dir
        same_next[:-1] = same_dir
        by_angle = np.argsort(a, kind="stable")
        return cls(p[by_angle], a[by_angle], d[by_angle], prev_ang[by_angle],
                   next_ang[by_angle], same_prev[by_angle], same_next[by_angle])


def _sweep_events(cr: _Crossings, roll: np.ndarray, t_render: np.ndarray,
                  last_dir: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events (t in s, pixel, polarity) of the roll trajectory, in time order.

    Each monotonic sweep passes the crossings between its end angles, in angle order; a
    crossing fires unless it is the first after its pixel's log intensity changed direction
    (DVS hysteresis). ``last_dir`` holds each pixel's last crossing direction (updated)."""
    out_t, out_pix, out_pol = [], [], []
    for a, b, sign in _sweeps(roll):
        seg_r, seg_t = roll[a:b + 1], t_render[a:b + 1]
        if sign < 0:
            seg_r, seg_t = seg_r[::-1], seg_t[::-1]
        lo, hi = float(seg_r[0]), float(seg_r[-1])
        i0 = int(np.searchsorted(cr.ang, lo, side="right"))
        i1 = int(np.searchsorted(cr.ang, hi, side="right"))
        if i1 <= i0:
            continue
        sel = slice(i0, i1) if sign > 0 else slice(i1 - 1, i0 - 1 if i0 else None, -1)
        pix = cr.pix[sel]
        tdir = cr.dir[sel] * np.int8(sign)
        if sign > 0:
            first, last, fire = cr.prev_ang[sel] <= lo, cr.next_ang[sel] > hi, cr.same_prev[sel]
        else:
            first, last, fire = cr.next_ang[sel] > hi, cr.prev_ang[sel] <= lo, cr.same_next[sel]
        fire = fire.copy()
        fire[first] = tdir[first] == last_dir[pix[first]]
        last_dir[pix[last]] = tdir[last]
        out_t.append(np.interp(cr.ang[sel][fire], seg_r, seg_t))
        out_pix.append(pix[fire])
        out_pol.append(tdir[fire] > 0)
    if not out_t:
        return np.zeros(0), np.zeros(0, np.int32), np.zeros(0, bool)
    return np.concatenate(out_t), np.concatenate(out_pix), np.concatenate(out_pol)


def simulate_events(sim: SimConfig) -> Events:
    """The events of the simulated recording, sorted by time."""
    return Events.concatenate(list(iter_events(sim)))


def iter_events(sim: SimConfig, segment_s: float = SEGMENT_S) -> Iterator[Events]:
    """The events of the simulated recording in time order, ``segment_s`` seconds at a time
    (memory bounded by one segment; the segments do not change the events)."""
    n_pix = sim.width * sim.height
    duration = float(sim.duration_s)
    end_us = int(round(duration * 1e6))
    n_render = max(int(math.ceil(duration * sim.render_rate_hz)), 1)
    t_render = np.minimum(np.arange(n_render + 1) / sim.render_rate_hz, duration)
    roll = np.radians(motion(sim).roll_deg(t_render))

    rng = _rng(sim, _PIXELS)
    thresholds = np.maximum(sim.contrast_threshold + sim.threshold_sigma
                            * rng.standard_normal(n_pix), 0.2 * sim.contrast_threshold)
    offset = (rng.uniform(0, 1, n_pix) * thresholds).astype(np.float32)
    inv_c = (1.0 / thresholds).astype(np.float32)
    last_dir = np.where(rng.uniform(size=n_pix) < 0.5, 1, -1).astype(np.int8)

    lo, hi = float(roll.min()), float(roll.max())
    crossings = (_Crossings.build(*_crossings(sim, make_scene(sim), lo - 1e-6, hi + 1e-6,
                                              offset, inv_c)) if hi > lo else None)
    step = max(1, int(round(segment_s * sim.render_rate_hz)))
    for seg, a in enumerate(range(0, n_render, step)):
        b = min(n_render, a + step)  # render samples a .. b (b shared with the next segment)
        if crossings is not None:
            t, pix, pol = _sweep_events(crossings, roll[a:b + 1], t_render[a:b + 1], last_dir)
        else:
            t, pix, pol = np.zeros(0), np.zeros(0, np.int32), np.zeros(0, bool)
        t_us = (t * 1e6).astype(np.int64)  # non-decreasing: the sweeps come in time order
        seg_lo = int(round(t_render[a] * 1e6))
        seg_hi = end_us if b == n_render else int(round(t_render[b] * 1e6))
        keep = (t_us >= seg_lo) & (t_us < seg_hi) if b < n_render else t_us < end_us
        t_us, pix, pol = t_us[keep], pix[keep], pol[keep]
        yield _with_noise(sim, seg, seg_lo, max(seg_hi, seg_lo + 1), t_us, pix, pol)


def _with_noise(sim: SimConfig, seg: int, lo_us: int, hi_us: int, t_us: np.ndarray,
                pix: np.ndarray, pol: np.ndarray) -> Events:
    """Background-activity noise in [lo_us, hi_us) merged in time order with the signal."""
    n_pix = sim.width * sim.height
    noise = np.random.default_rng([int(sim.seed) % (1 << 63), _NOISE, seg])
    n_noise = int(noise.poisson(sim.noise_rate_hz * n_pix * (hi_us - lo_us) * 1e-6)) \
        if n_pix else 0
    nt = np.sort(noise.integers(lo_us, hi_us, n_noise))
    npix = noise.integers(0, n_pix, n_noise).astype(np.int32)
    npol = noise.uniform(size=n_noise) < 0.5
    at = np.searchsorted(t_us, nt, side="right") + np.arange(n_noise)
    total = len(t_us) + n_noise
    is_signal = np.ones(total, bool)
    is_signal[at] = False
    out_t = np.empty(total, np.int64)
    out_pix = np.empty(total, np.int32)
    out_pol = np.empty(total, bool)
    out_t[is_signal], out_t[at] = t_us, nt
    out_pix[is_signal], out_pix[at] = pix, npix
    out_pol[is_signal], out_pol[at] = pol, npol
    y, x = np.divmod(out_pix, sim.width)
    return Events(T0_US + out_t, x, y, out_pol)


# ----------------------------------------------------------------------------- recording
def simulate_arrays(sim: SimConfig) -> Recording:
    """The simulated recording in memory (``path`` None)."""
    return Recording(None, sim.camera_name, int(sim.width), int(sim.height),
                     simulate_events(sim), simulate_imu(sim))


def simulate_recording(sim: SimConfig, path: str | os.PathLike) -> Path:
    """Simulate ``sim`` and write it as an AEDAT4 file at ``path`` (parent folders created,
    written atomically), streamed segment by segment; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_recording(path, event_chunks=iter_events(sim), imu=simulate_imu(sim),
                           width=int(sim.width), height=int(sim.height),
                           camera_name=sim.camera_name)
