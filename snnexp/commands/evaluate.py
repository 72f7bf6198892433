"""`snnexp evaluate ckpt=PATH`: rebuild the model from the checkpoint's own config and test it.

A recording the checkpoint was trained on is tested on its test split; any other recording
(``data.paths=[...]``, held-out ones) on all of its windows (``metrics.json`` says which).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from snnexp.config.schema import EvaluateConfig, TrainConfig
from snnexp.config.validate import to_schema, validate_data, validate_evaluate
from snnexp.errors import CheckpointError


def _train_config(ckpt: dict[str, Any], data_overrides: dict[str, Any]) -> TrainConfig:
    """The training config stored in the checkpoint, with the user's data overrides."""
    stored = dict(ckpt["config"])
    stored.pop("paths", None)  # resolved paths of the training run; not needed here
    data = dict(stored.get("data", {}))
    data.pop("simulate_missing", None)  # older checkpoints (a key that no longer exists)
    overrides = {k: v for k, v in data_overrides.items() if v is not None}
    if "path" in overrides:  # data.path=FILE is a shortcut for data.paths=[FILE]
        overrides["paths"] = [overrides.pop("path")]
    if "paths" in overrides:  # other recordings: the run's held-out lists do not apply
        overrides.setdefault("val_paths", [])
        overrides.setdefault("test_paths", [])
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

    from snnexp import engine
    from snnexp.data.bundle import build_bundle
    from snnexp.models import build_network
    from snnexp.training.checkpoint import load_checkpoint
    from snnexp.training.evaluation import evaluate_and_report
    from snnexp.training.runtime import configure_threads, select_device
    from snnexp.training.tasks import check_task

    ec = to_schema(cfg, EvaluateConfig)
    validate_evaluate(ec)
    configure_threads(ec.trainer.num_threads)
    device = select_device(ec.trainer.device)
    engine.resolve_backend(ec.trainer.engine, device)  # a bad value stops before any work
    ckpt = load_checkpoint(ec.ckpt, map_location=device)
    if ec.expect_task is not None:
        check_task(ckpt, ec.expect_task, ec.ckpt)
    tc = _train_config(ckpt, dict(ec.data or {}))
    validate_data(tc.data)
    if tc.task.name == "classification":
        return _evaluate_classification(ec, tc, ckpt, device)
    # recordings the checkpoint trained on are tested on their test split, others whole
    trained = {str(r.get("sha256")) for r in (ckpt.get("data") or {}).get("recordings", [])
               if r.get("role", "train") == "train"}
    data = build_bundle(tc.data, seed=tc.seed, require_sequences=False, trained=trained)
    net = build_network(tc.model, tc.norm, tuple(data.input_shape)).to(device)
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise CheckpointError(
            f"checkpoint '{ec.ckpt}' does not match the network its config describes for input "
            f"{tuple(data.input_shape)} (another architecture or sensor size): evaluate it on a "
            "recording of the camera and settings it was trained with") from None
    engine.prepare(net, ec.trainer.engine)  # any backend: the state_dict is the plain model's
    out_dir = Path(ec.paths.output_dir)
    with torch.no_grad():
        result = evaluate_and_report(net, data, out_dir, k=tc.trainer.tbptt_k,
                                     transient=tc.trainer.transient, monitor=ec.monitor,
                                     execution=tc.trainer.execution, window=ec.window,
                                     plots=ec.plots)
    return {"metrics": result.metrics, "plots": {k: str(v) for k, v in result.plots.items()},
            "predictions": str(result.predictions_csv), "output_dir": str(out_dir)}


def _evaluate_classification(ec: EvaluateConfig, tc: TrainConfig, ckpt: dict[str, Any],
                             device: Any) -> dict[str, Any]:
    """The classification branch of :func:`evaluate`: the run's test samples (or data.paths
    roots, classes in the checkpoint's order), accuracy metrics and the confusion matrix."""
    import torch

    from snnexp import engine
    from snnexp.models import build_network
    from snnexp.training.classification import build_task_data, evaluate_classification

    classes = list((ckpt.get("data") or {}).get("classes") or [])
    data = build_task_data(tc.data, tc.seed, classes=classes or None)
    net = build_network(tc.model, tc.norm, tuple(data.input_shape),
                        outputs=data.num_classes).to(device)
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise CheckpointError(
            f"checkpoint '{ec.ckpt}' does not match the network its config describes for input "
            f"{tuple(data.input_shape)} and {data.num_classes} classes: evaluate it on data of "
            "the camera, settings and classes it was trained with") from None
    engine.prepare(net, ec.trainer.engine)
    out_dir = Path(ec.paths.output_dir)
    with torch.no_grad():
        m = evaluate_classification(net, data, out_dir, k=tc.trainer.tbptt_k,
                                    decoder=tc.task.decoder, transient=tc.trainer.transient,
                                    execution=tc.trainer.execution, plots=ec.plots)
    plots = {"confusion": str(out_dir / "confusion.png")} if ec.plots else {}
    return {"metrics": m, "plots": plots, "predictions": str(out_dir / "predictions.csv"),
            "output_dir": str(out_dir)}


def evaluate_command(cfg: DictConfig) -> float:
    out = evaluate(cfg)
    m = out["metrics"]
    if "acc" in m:  # a classification checkpoint
        print(json.dumps({k: m[k] for k in ("acc", "acc_top5", "loss", "samples", "per_class")
                          if k in m}, indent=1))
        print(f"wrote {Path(out['output_dir']) / 'metrics.json'}, {out['predictions']} and "
              f"{len(out['plots'])} plots")
        return float(m["acc"])
    print(json.dumps({k: m[k] for k in ("mse", "rel", "mae_deg", "std_deg", "max_deg",
                                        "baseline_mae_deg")}, indent=1))
    print(f"wrote {Path(out['output_dir']) / 'metrics.json'}, {out['predictions']} and "
          f"{len(out['plots'])} plots")
    return float(m["mse"])
