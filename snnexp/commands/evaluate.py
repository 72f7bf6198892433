"""`snnexp evaluate ckpt=PATH`: rebuild the model from the checkpoint's own config and test it.

A recording the checkpoint was trained on is tested on its test split; any other recording
(``data.paths=[...]``, held-out ones) on all of its windows (``metrics.json`` says which).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from snnexp.config.schema import EvaluateConfig, TrainConfig
from snnexp.config.validate import to_schema, validate_data, validate_evaluate
from snnexp.errors import CheckpointError


def _train_config(ckpt: dict[str, Any], data_overrides: dict[str, Any]) -> TrainConfig:
    """The training config stored in the checkpoint, with the user's data overrides."""
    stored = dict(ckpt["config"])  # its paths are the training run's, unused here
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
    from snnexp.training.checkpoint import load_checkpoint
    from snnexp.training.evaluation import evaluate_and_report
    from snnexp.training.runtime import configure_threads, select_device
    from snnexp.training.tasks import check_task

    ec = to_schema(cfg, EvaluateConfig)
    validate_evaluate(ec)
    configure_threads(ec.trainer.num_threads)
    device = select_device(ec.trainer.device)
    # a bad engine setting stops before any work
    engine.resolve_backend(ec.trainer.engine, device, ec.trainer.kernel_march)
    ckpt = load_checkpoint(ec.ckpt, map_location=device)
    if ec.expect_task is not None:
        check_task(ckpt, ec.expect_task, ec.ckpt)
    overrides = {k: v for k, v in dataclasses.asdict(ec.data).items() if v is not None}
    tc = _train_config(ckpt, overrides)
    validate_data(tc.data)
    if tc.task.name == "classification":
        return _evaluate_classification(ec, tc, ckpt, device)
    # recordings the checkpoint trained on are tested on their test split, others whole
    trained = {str(r.get("sha256")) for r in (ckpt.get("data") or {}).get("recordings", [])
               if r.get("role", "train") == "train"}
    data = build_bundle(tc.data, seed=tc.seed, require_sequences=False, trained=trained)
    net = _restored_network(ec, tc, ckpt, data.input_shape, device, 1,
                            "(another architecture or sensor size): evaluate it on a recording "
                            "of the camera and settings it was trained with")
    out_dir = Path(ec.paths.output_dir)
    with torch.no_grad():
        result = evaluate_and_report(net, data, out_dir, k=tc.trainer.tbptt_k,
                                     transient=tc.trainer.transient, monitor=ec.monitor,
                                     execution=ec.trainer.execution or tc.trainer.execution,
                                     window=ec.window,
                                     plots=ec.plots)
    videos = _videos(ec, tc, data, out_dir, device) if ec.video else []
    return {"metrics": result.metrics, "plots": {k: str(v) for k, v in result.plots.items()},
            "predictions": str(result.predictions_csv), "output_dir": str(out_dir),
            "videos": [str(v) for v in videos]}


def _restored_network(ec: EvaluateConfig, tc: TrainConfig, ckpt: dict[str, Any],
                      input_shape: Any, device: Any, outputs: int, mismatch: str) -> Any:
    """The checkpoint's network for ``input_shape``, its weights loaded and prepared for
    ``trainer.engine`` (any backend: the state_dict is the plain model's); weights that do not
    fit are one CheckpointError line ending in ``mismatch``."""
    from snnexp import engine
    from snnexp.models import build_network

    shape = tuple(input_shape)
    net = build_network(tc.model, tc.norm, shape, outputs=outputs).to(device)
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise CheckpointError(f"checkpoint '{ec.ckpt}' does not match the network its config "
                              f"describes for input {shape} {mismatch}") from None
    engine.prepare(net, ec.trainer.engine, march=ec.trainer.kernel_march)
    return net


def _videos(ec: EvaluateConfig, tc: TrainConfig, data: Any, out_dir: Path,
            device: Any) -> list[Path]:
    """Each test sequence as a video (snnexp view's rendering; the network starts at the
    sequence's first label, as in the evaluation), logged to W&B when the logger is on."""
    from snnexp.commands.view import render_video
    from snnexp.inference.model import load_model

    model = load_model(ec.ckpt, str(device), ec.trainer.engine)
    window_s = tc.data.window_us * 1e-6
    videos = []
    for n, ref in enumerate(data.test_refs):
        prep = data.prepared[ref.recording]
        path = out_dir / f"video_{n}.mp4"
        render_video(prep.path, path, model=model,
                     start_s=(tc.data.trim_start + ref.start) * window_s,
                     duration_s=ref.length * window_s, progress=tc.trainer.progress)
        videos.append(path)
    if tc.logger.name == "wandb" and tc.logger.wandb.mode != "disabled":  # the run's logger
        from snnexp.training.loggers import ExperimentLogger

        logger = ExperimentLogger(tc.logger, out_dir, f"evaluate-{Path(ec.ckpt).stem}",
                                  {"ckpt": str(ec.ckpt)})
        try:
            if logger.run is not None:
                import wandb

                logger.run.log({f"eval/video_{n}": wandb.Video(str(p), format="mp4")
                                for n, p in enumerate(videos)})
        finally:
            logger.finish()
    return videos


def _evaluate_classification(ec: EvaluateConfig, tc: TrainConfig, ckpt: dict[str, Any],
                             device: Any) -> dict[str, Any]:
    """The classification branch of :func:`evaluate`: the run's test samples (or data.paths
    roots, classes in the checkpoint's order), accuracy metrics and the confusion matrix."""
    import torch

    from snnexp.training.classification import build_task_data, evaluate_classification

    classes = list((ckpt.get("data") or {}).get("classes") or [])
    data = build_task_data(tc.data, tc.seed, classes=classes or None)
    net = _restored_network(ec, tc, ckpt, data.input_shape, device, data.num_classes,
                            f"and {data.num_classes} classes: evaluate it on data of the camera, "
                            "settings and classes it was trained with")
    out_dir = Path(ec.paths.output_dir)
    with torch.no_grad():
        m = evaluate_classification(net, data, out_dir, k=tc.trainer.tbptt_k,
                                    decoder=tc.task.decoder, transient=tc.trainer.transient,
                                    execution=ec.trainer.execution or tc.trainer.execution,
                                    plots=ec.plots)
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
    videos = f" and {len(out['videos'])} videos" if out["videos"] else ""
    print(f"wrote {Path(out['output_dir']) / 'metrics.json'}, {out['predictions']} and "
          f"{len(out['plots'])} plots{videos}")
    return float(m["mse"])
