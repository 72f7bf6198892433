"""The map between an angle (radians) and the network's regression target."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TargetMap:
    """``y = scale * angle_rad + offset``; the reference's y = -roll / pi is the default.

    Stored in checkpoints (:meth:`as_dict`) so that predictions can be turned back into degrees.
    """

    scale: float = -1.0 / math.pi
    offset: float = 0.0
    target: str = "roll"

    def __post_init__(self) -> None:
        if not math.isfinite(self.scale) or self.scale == 0:
            raise ValueError(f"target scale must be a finite non-zero number, got {self.scale}")
        if not math.isfinite(self.offset):
            raise ValueError(f"target offset must be finite, got {self.offset}")

    def to_target(self, angle_rad: Any) -> Any:
        """Angle(s) in radians -> target value(s)."""
        return self.scale * np.asarray(angle_rad, dtype=np.float64) + self.offset

    def to_radians(self, y: Any) -> Any:
        """Target value(s) -> angle(s) in radians."""
        return (np.asarray(y, dtype=np.float64) - self.offset) / self.scale

    def to_degrees(self, y: Any) -> Any:
        """Target value(s) -> angle(s) in degrees (the reference's -y * 180 by default)."""
        return np.degrees(self.to_radians(y))

    def degrees_per_unit(self) -> float:
        """Degrees of angle per unit of target (to report target-space errors in degrees)."""
        return float(abs(math.degrees(1.0 / self.scale)))

    def as_dict(self) -> dict[str, Any]:
        return {"scale": float(self.scale), "offset": float(self.offset),
                "target": str(self.target)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetMap:
        return cls(scale=float(d.get("scale", -1.0 / math.pi)),
                   offset=float(d.get("offset", 0.0)), target=str(d.get("target", "roll")))

    @classmethod
    def from_config(cls, cfg: Any) -> TargetMap:
        """From a DataConfig (target_scale, target_offset, target)."""
        return cls(float(cfg.target_scale), float(cfg.target_offset), str(cfg.target))
