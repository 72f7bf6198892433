"""`snnexp simulate`: write the built-in simulated recordings (or one, output=PATH) as AEDAT4."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from omegaconf import DictConfig

from snnexp.config.schema import SimulateConfig
from snnexp.config.validate import to_schema
from snnexp.errors import ConfigError


def simulate(cfg: SimulateConfig | DictConfig) -> list[Path]:
    """Simulate into ``cfg.output`` (settings ``data.sim``), or, without ``output``, every
    built-in recording of ``cfg.data`` that is missing; refuse to overwrite unless
    ``overwrite``. Returns the paths written."""
    from snnexp.data.simulate import simulate_recording
    from snnexp.data.sources import BUILTIN, builtin_path, builtin_sim

    sc = to_schema(cfg, SimulateConfig)
    if sc.output is None:
        entries = [*sc.data.paths, *sc.data.val_paths, *sc.data.test_paths]
        seeds = [int(e[len(BUILTIN):]) for e in map(str, entries) if e.startswith(BUILTIN)]
        if not seeds:
            raise ConfigError("data lists no builtin:SEED recording: pass output=PATH to "
                              "simulate one recording")
        todo = [(builtin_path(sc.data, s), builtin_sim(sc.data, s)) for s in dict.fromkeys(seeds)]
    else:
        todo = [(Path(sc.output).expanduser(), dataclasses.replace(sc.data.sim))]
    written = []
    for out, sim in todo:
        if out.is_dir():
            raise ConfigError(f"output '{out}' is a directory: name the AEDAT4 file to write, "
                              f"e.g. output={out / 'sim.aedat4'}")
        if out.exists() and not sc.overwrite:
            if sc.output is None:
                continue  # the built-in recording is there already
            raise ConfigError(f"output '{out}' already exists: choose another output=PATH or "
                              "pass overwrite=true to replace it")
        written.append(simulate_recording(sim, out))
    return written


def simulate_command(cfg: DictConfig) -> str:
    from snnexp.data.recording import read_recording

    paths = simulate(cfg)
    for path in paths:
        rec = read_recording(path)
        print(f"wrote {path}: {rec.camera_name} {rec.width}x{rec.height}, {len(rec.events)} "
              f"events, {len(rec.imu)} IMU samples")
    if not paths:
        print("the built-in recordings exist already (overwrite=true simulates them again)")
    return ", ".join(map(str, paths))
