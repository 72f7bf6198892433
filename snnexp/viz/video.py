"""Event frames as video: ON / OFF counts in two colours, the label (and prediction) as a
horizon line through the image centre with the angle as text, a time stamp, and below the
frames a strip chart of prediction vs target.

Video files are written with imageio + imageio-ffmpeg: the ffmpeg binary ships inside the
imageio-ffmpeg wheel (no system ffmpeg), and H.264 MP4 plays everywhere at a small size. GIF
(imageio's Pillow plugin, no ffmpeg) is the fallback for places that show only images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BACKGROUND = (16, 16, 20)
ON_COLOUR = (255, 170, 0)  # amber
OFF_COLOUR = (0, 150, 255)  # blue
LABEL_COLOUR = (255, 255, 255)
PRED_COLOUR = (60, 230, 60)
CHART_BG = (32, 32, 38)
SUFFIXES = (".mp4", ".gif")


@dataclass
class Layout:
    """Sizes of one video frame: the scaled event frame and the chart below it."""

    width: int  # event frame (downsampled) width in pixels
    height: int
    scale: float
    chart: bool

    @property
    def image_size(self) -> tuple[int, int]:
        """(w, h) of the scaled event frame."""
        return max(1, round(self.width * self.scale)), max(1, round(self.height * self.scale))

    @property
    def chart_height(self) -> int:
        return max(48, self.image_size[1] // 3) if self.chart else 0

    @property
    def size(self) -> tuple[int, int]:
        """(w, h) of a video frame: multiples of 16 (what H.264 encoders need), at least
        160 pixels wide so that the text fits."""
        w, h = self.image_size
        w, h = max(w, 160), h + 18 + self.chart_height
        return -(-w // 16) * 16, -(-h // 16) * 16


def colour_frame(counts: np.ndarray, contrast: float = 3.0) -> np.ndarray:
    """uint8 RGB [H, W, 3] of a [2, H, W] count frame: OFF blue, ON amber, both mixed."""
    c = np.asarray(counts, dtype=np.float32)
    off = np.minimum(c[0] / float(contrast), 1.0)[..., None]
    on = np.minimum(c[1] / float(contrast), 1.0)[..., None]
    bg = np.asarray(BACKGROUND, np.float32)
    img = bg + on * (np.asarray(ON_COLOUR, np.float32) - bg) \
        + off * (np.asarray(OFF_COLOUR, np.float32) - bg)
    return np.clip(img, 0, 255).astype(np.uint8)


def _line_ends(cx: float, cy: float, angle_deg: float, half: float) -> list[tuple[float, float]]:
    """The horizon of a camera rolled by ``angle_deg``: direction (cos r, -sin r) in image
    coordinates (x right, y down), as the built-in recording's scene appears."""
    r = math.radians(angle_deg)
    dx, dy = math.cos(r) * half, -math.sin(r) * half
    return [(cx - dx, cy - dy), (cx + dx, cy + dy)]


class Renderer:
    """Composes video frames for one layout; the chart's lines are drawn as values arrive."""

    def __init__(self, layout: Layout, t_range_s: tuple[float, float],
                 labels: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        from PIL import ImageFont

        self.layout = layout
        self.font = ImageFont.load_default()
        self.t0, self.t1 = t_range_s
        self.labels = labels  # (times s, degrees): the target's whole series, drawn at once
        lo, hi = ((float(labels[1].min()), float(labels[1].max())) if labels is not None
                  else (-180.0, 180.0))
        pad = max(5.0, 0.1 * (hi - lo))
        self.v0, self.v1 = lo - pad, hi + pad
        self.history: list[tuple[float, float | None, float | None]] = []

    def _chart_xy(self, t: float, v: float, top: int, w: int, h: int) -> tuple[float, float]:
        x = (t - self.t0) / max(self.t1 - self.t0, 1e-9) * (w - 1)
        y = top + (1 - (v - self.v0) / max(self.v1 - self.v0, 1e-9)) * (h - 1)
        return x, min(max(y, top), top + h - 1)

    def frame(self, counts: np.ndarray, t_s: float, label: float | None,
              pred: float | None, contrast: float = 3.0) -> np.ndarray:
        """One video frame (uint8 RGB) for the window ``counts`` ending at ``t_s``."""
        from PIL import Image, ImageDraw

        lay = self.layout
        fw, fh = lay.size
        iw, ih = lay.image_size
        canvas = Image.new("RGB", (fw, fh), BACKGROUND)
        img = Image.fromarray(colour_frame(counts, contrast))
        canvas.paste(img.resize((iw, ih), Image.NEAREST), (0, 0))
        draw = ImageDraw.Draw(canvas)
        half = 0.45 * math.hypot(iw, ih)
        cx, cy = iw / 2, ih / 2
        width = max(2, round(min(iw, ih) / 120))
        if label is not None:
            draw.line(_line_ends(cx, cy, label, half), fill=LABEL_COLOUR, width=width)
        if pred is not None:
            draw.line(_line_ends(cx, cy, pred, half), fill=PRED_COLOUR, width=width)
        text = f"t {t_s:7.2f} s"
        if label is not None:
            text += f"  label {label:7.1f}"
        if pred is not None:
            text += f"  pred {pred:7.1f}"
        draw.rectangle((0, ih, fw, ih + 17), fill=BACKGROUND)
        draw.text((3, ih + 3), text, fill=LABEL_COLOUR, font=self.font)
        self.history.append((t_s, label, pred))
        if lay.chart:
            self._chart(draw, ih + 18, fw, lay.chart_height)
        return np.asarray(canvas)

    def _chart(self, draw: Any, top: int, w: int, h: int) -> None:
        draw.rectangle((0, top, w - 1, top + h - 1), fill=CHART_BG)
        if self.labels is not None:
            step = max(1, len(self.labels[0]) // (2 * w))
            pts = [self._chart_xy(t, v, top, w, h)
                   for t, v in zip(self.labels[0][::step], self.labels[1][::step])]
            if len(pts) > 1:
                draw.line(pts, fill=LABEL_COLOUR, width=1)
        pts = [self._chart_xy(r[0], r[2], top, w, h) for r in self.history if r[2] is not None]
        if len(pts) > 1:
            draw.line(pts, fill=PRED_COLOUR, width=1)
        x, _ = self._chart_xy(self.history[-1][0], 0.0, top, w, h)
        draw.line([(x, top), (x, top + h - 1)], fill=(120, 120, 130), width=1)


class VideoWriter:
    """Appends RGB frames to an MP4 (imageio-ffmpeg, H.264) or a GIF (Pillow)."""

    def __init__(self, path: Path, fps: float) -> None:
        import imageio.v2 as imageio

        suffix = path.suffix.lower()
        if suffix == ".mp4":
            self._w = imageio.get_writer(str(path), format="FFMPEG", fps=float(fps),
                                         codec="libx264", quality=7, macro_block_size=16,
                                         pixelformat="yuv420p", ffmpeg_log_level="error")
        else:
            self._w = imageio.get_writer(str(path), format="GIF", mode="I",
                                         duration=1000.0 / float(fps), loop=0)
        self.frames = 0

    def append(self, frame: np.ndarray) -> None:
        self._w.append_data(frame)
        self.frames += 1

    def close(self) -> None:
        self._w.close()
