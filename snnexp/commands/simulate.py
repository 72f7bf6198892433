"""`snnexp simulate output=PATH`: write the built-in simulated recording as an AEDAT4 file."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from snnexp.config.schema import SimulateConfig
from snnexp.config.validate import to_schema, validate_sim
from snnexp.errors import ConfigError


def simulate(cfg: SimulateConfig | DictConfig) -> Path:
    """Simulate ``cfg.sim`` into ``cfg.output``; refuse to overwrite unless ``overwrite``."""
    from snnexp.data.simulate import simulate_recording

    sc = to_schema(cfg, SimulateConfig)
    validate_sim(sc.sim)
    out = Path(sc.output).expanduser()
    if out.exists() and not sc.overwrite:
        raise ConfigError(f"output '{out}' already exists: choose another output=PATH or pass "
                          "overwrite=true to replace it")
    return simulate_recording(sc.sim, out)


def simulate_command(cfg: DictConfig) -> str:
    from snnexp.data.recording import read_recording

    path = simulate(cfg)
    rec = read_recording(path)
    n_ev = len(rec.events.t) if hasattr(rec.events, "t") else len(rec.events)
    print(f"wrote {path}: {rec.camera_name} {rec.width}x{rec.height}, {n_ev} events, "
          f"{len(rec.imu.t) if hasattr(rec.imu, 't') else len(rec.imu)} IMU samples")
    return str(path)
