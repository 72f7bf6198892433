"""Checkpoints for the view / infer / export tests: the tiny setting's network, built and
saved exactly as `snnexp train` saves it, with weights scaled up so that it spikes."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import TINY


def compose(config_name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from snnexp.config.store import register_schemas

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="snnexp.conf", version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=overrides)
    GlobalHydra.instance().clear()
    return cfg


def make_checkpoint(out: Path, sim_dir: Path, *overrides: str, gain: float = 2.5) -> Path:
    """A checkpoint of the TINY network (with ``overrides``) on the session's recording."""
    import torch
    from omegaconf import OmegaConf

    from snnexp.config.schema import TrainConfig
    from snnexp.config.validate import to_schema
    from snnexp.data.pipeline import build_data
    from snnexp.models import build_network
    from snnexp.training import checkpoint as C

    cfg = compose("train", [f"paths.data_dir={sim_dir}", f"paths.output_dir={out}",
                            f"paths.log_dir={out}", *TINY, *overrides])
    tc = to_schema(cfg, TrainConfig)
    data = build_data(tc.data, seed=tc.seed)
    torch.manual_seed(0)
    net = build_network(tc.model, tc.norm, data.input_shape)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("weight") and p.dim() > 1:
                p.mul_(gain)
    state = {"format": C.FORMAT, "version": C.VERSION, "model": net.state_dict(),
             "config": OmegaConf.to_container(cfg, resolve=True),
             "data": {"input_shape": list(data.input_shape),
                      "target_map": data.target_map.as_dict(), "window_us": data.window_us,
                      "recordings": data.recordings}}
    path = out / "ckpt.pt"
    C.atomic_save(state, path)
    return path


def recording(sim_dir: Path) -> Path:
    """The session's tiny built-in training recording (simulated by make_checkpoint's
    build_data): TINY's first ``builtin:SEED`` entry."""
    from snnexp.config.schema import TrainConfig
    from snnexp.config.validate import to_schema
    from snnexp.data import sources

    cfg = compose("train", [f"paths.data_dir={sim_dir}", f"paths.output_dir={sim_dir}",
                            f"paths.log_dir={sim_dir}", *TINY])
    data = to_schema(cfg, TrainConfig).data
    return sources.expand([str(data.paths[0])], data, "data.paths")[0][0]
