"""`snnexp evaluate ckpt=PATH`: rebuild the model from the checkpoint's own config and test it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from snnexp.config.schema import EvaluateConfig, TrainConfig
from snnexp.config.validate import to_schema, validate_data, validate_evaluate
from snnexp.errors import CheckpointError, ConfigError


def _train_config(ckpt: dict[str, Any], data_overrides: dict[str, Any]) -> TrainConfig:
    """The training config stored in the checkpoint, with the user's data overrides."""
    stored = dict(ckpt["config"])  # its paths are the training run's, unused here
    data = dict(stored.get("data", {}))
    overrides = dict(data_overrides)
    if "path" in overrides:  # data.path=FILE is a shortcut for data.paths=[FILE]
        overrides["paths"] = [overrides.pop("path")]
    data.update(overrides)
    stored["data"] = data
    base = OmegaConf.structured(TrainConfig)
    try:
        merged = OmegaConf.merge(base, {k: v for k, v in stored.items() if k in base})
    except Exception as exc:
        raise CheckpointError(f"the checkpoint's config does not fit this snnexp version "
                              f"({str(exc).splitlines()[0]}); evaluate it with the snnexp "
                              "version that wrote it") from None
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def evaluate(cfg: EvaluateConfig | DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt`` on the test sequence(s); write metrics.json, CSV and plots."""
    import torch

    from snnexp.data.pipeline import build_data
    from snnexp.models import build_network
    from snnexp.training.checkpoint import load_checkpoint
    from snnexp.training.evaluation import evaluate_and_report
    from snnexp.training.runtime import configure_threads, select_device

    ec = to_schema(cfg, EvaluateConfig)
    validate_evaluate(ec)
    configure_threads(ec.trainer.num_threads)
    device = select_device(ec.trainer.device)
    ckpt = load_checkpoint(ec.ckpt, map_location=device)
    overrides = {k: v for k, v in dataclasses.asdict(ec.data).items() if v is not None}
    tc = _train_config(ckpt, overrides)
    validate_data(tc.data)
    if tc.data.split[2] <= 0:
        raise ConfigError(f"config key 'data.split' = {list(tc.data.split)} has an empty test "
                          "part: evaluate on a test fraction, e.g. data.split=[0.88,0.07,0.05], "
                          "or the whole recording with data.split=[0,0,1]")
    data = build_data(tc.data, seed=tc.seed, require_sequences=False)
    net = build_network(tc.model, tc.norm, tuple(data.input_shape)).to(device)
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise CheckpointError(
            f"checkpoint '{ec.ckpt}' does not match the network its config describes for input "
            f"{tuple(data.input_shape)} (another architecture or sensor size): evaluate it on a "
            "recording of the camera and settings it was trained with") from None
    out_dir = Path(ec.paths.output_dir)
    with torch.no_grad():
        result = evaluate_and_report(net, data, out_dir, k=tc.trainer.tbptt_k,
                                     transient=tc.trainer.transient, monitor=ec.monitor,
                                     execution=ec.trainer.execution or tc.trainer.execution,
                                     window=ec.window,
                                     plots=ec.plots)
    return {"metrics": result.metrics, "plots": {k: str(v) for k, v in result.plots.items()},
            "predictions": str(result.predictions_csv), "output_dir": str(out_dir)}


def evaluate_command(cfg: DictConfig) -> float:
    out = evaluate(cfg)
    m = out["metrics"]
    print(json.dumps({k: m[k] for k in ("mse", "rel", "mae_deg", "std_deg", "max_deg",
                                        "baseline_mae_deg")}, indent=1))
    print(f"wrote {Path(out['output_dir']) / 'metrics.json'}, {out['predictions']} and "
          f"{len(out['plots'])} plots")
    return float(m["mse"])
