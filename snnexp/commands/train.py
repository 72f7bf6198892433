"""`snnexp train`: a plain ``train(cfg)`` and the thin Hydra-facing command around it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from snnexp.commands.runner import commit_hydra_record
from snnexp.config.schema import TrainConfig
from snnexp.config.validate import to_schema, validate_train
from snnexp.errors import ConfigError


def _output_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.paths.output_dir)


def _sweep_group() -> str | None:
    """The sweep's name (its directory) when this job is part of a Hydra multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            return Path(hc.sweep.dir).name
    except Exception:
        pass
    return None


def train(cfg: TrainConfig | DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train (and by default test) a model; return (metrics, objects).

    Callable without Hydra: pass a TrainConfig whose ``paths.output_dir`` is set.
    """
    from snnexp.training.loop import Trainer

    config_dict = (OmegaConf.to_container(cfg, resolve=True)
                   if isinstance(cfg, DictConfig) else None)
    tc = to_schema(cfg, TrainConfig)
    validate_train(tc)
    sweep_group = _sweep_group()
    finished = _previous_run(tc, multirun=sweep_group is not None)
    if finished is None and tc.ckpt_path and not tc.finetune:
        _check_continuation(tc, config_dict)
        if Path(tc.ckpt_path) == _output_dir(tc) / "checkpoints" / "last.pt":
            from snnexp.training.loop import report

            report(f"resuming {_output_dir(tc)} from {tc.ckpt_path}")
    commit_hydra_record(_output_dir(tc))  # only now may Hydra's record of this run be kept
    if finished is not None:
        return finished, {}
    if tc.ckpt_path and config_dict is not None:
        config_dict["ckpt_path"] = tc.ckpt_path
    if tc.task.name == "classification":
        from snnexp.training.classification import ClassificationTrainer as Trainer
    trainer = Trainer(tc, _output_dir(tc), config_dict=config_dict, sweep_group=sweep_group)
    exit_code = 1
    try:
        trainer.setup()
        metrics: dict[str, Any] = dict(trainer.fit())
        if tc.evaluate_test:
            metrics.update(trainer.test())
        if trainer.is_main:
            _write_final_metrics(trainer.output_dir, metrics)
        exit_code = 0
    finally:
        trainer.close(exit_code)
    return metrics, {"trainer": trainer, "model": trainer.net, "data": trainer.data}


FINAL_METRICS = "final_metrics.json"


def _previous_run(tc: TrainConfig, multirun: bool) -> dict[str, Any] | None:
    """Handle a run directory that already holds a run; return its metrics if it finished.

    Re-running a sweep (same hydra.sweep.dir) or ``resume=true`` skips a finished job and
    continues an interrupted one from ``checkpoints/last.pt``. Otherwise an existing run is
    never overwritten.
    """
    resumable = tc.resume or multirun
    out = _output_dir(tc)
    last = out / "checkpoints" / "last.pt"
    done = out / FINAL_METRICS
    if resumable and done.is_file():
        print(f"{out} already finished: skipping it (its metrics: {done})", flush=True)
        return json.loads(done.read_text())
    if tc.ckpt_path:
        return None
    if last.is_file():
        if not resumable:
            raise ConfigError(f"run directory '{out}' already holds a run: pass resume=true to "
                              "continue it, or choose a new hydra.run.dir")
        tc.ckpt_path = str(last)  # announced once its settings are checked
    elif tc.resume and not multirun:
        raise ConfigError(f"resume=true but '{last}' does not exist: pass the run's directory "
                          "(hydra.run.dir=outputs/train/runs/<run>) or ckpt_path=PATH/last.pt")
    return None


def _check_continuation(tc: TrainConfig, config_dict: dict[str, Any] | None) -> None:
    """Refuse to continue from ``tc.ckpt_path`` under other settings than it was trained with."""
    from snnexp.training.checkpoint import load_checkpoint
    from snnexp.training.loggers import scrub_secrets
    from snnexp.training.resume import check_same_settings
    from snnexp.training.tasks import check_task

    ckpt = Path(tc.ckpt_path).expanduser()
    state = load_checkpoint(ckpt)
    check_task(state, tc.task.name, ckpt)  # another task: say so before listing settings
    stored = state.get("config") or {}
    current = scrub_secrets(config_dict if config_dict is not None
                            else OmegaConf.to_container(OmegaConf.structured(tc), resolve=True))
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None
    check_same_settings(stored, current, ckpt, run_dir)


def _write_final_metrics(output_dir: Path, metrics: dict[str, Any]) -> None:
    from snnexp.training.checkpoint import atomic_write_text

    atomic_write_text(output_dir / FINAL_METRICS, json.dumps(metrics, indent=1, default=str))


def train_command(cfg: DictConfig) -> float | None:
    """Hydra task: train, print the headline numbers, return ``optimized_metric``."""
    from snnexp.commands.runner import secondary_rank

    metrics, _ = train(cfg)
    if not secondary_rank():
        _print_summary(metrics)
    value = metrics.get(cfg.get("optimized_metric"))
    return float(value) if value is not None else None


def _print_summary(m: dict[str, Any]) -> None:
    from snnexp.training.loop import report

    if "val/acc_best" in m:  # task=classification
        report(f"best val acc {m['val/acc_best']:.4f} at epoch {m['best_epoch']} "
               f"({m['epochs']} epochs, {m['optimizer_steps']} optimizer steps)")
        if "test/acc" in m:
            top5 = f", top-5 {m['test/acc_top5']:.4f}" if "test/acc_top5" in m else ""
            report(f"test: accuracy {m['test/acc']:.4f}{top5}, loss {m['test/loss']:.4f} "
                   f"({m['test/samples']} samples)")
            report("  per class: " + ", ".join(f"{c} {a:.2f}" for c, a in
                                               m["test/per_class"].items() if a is not None))
        return
    report(f"best val mse {m['val/mse_best']:.6f} at epoch {m['best_epoch']} "
          f"({m['epochs']} epochs, {m['optimizer_steps']} optimizer steps)")
    if "test/mae_deg" in m:
        report(f"test: mae {m['test/mae_deg']:.2f} deg (std {m['test/std_deg']:.2f}, max "
              f"{m['test/max_deg']:.2f}), mse {m['test/mse']:.6f}, rel {m['test/rel']:.4f}; "
              f"hold-initial-angle baseline mae {m['test/baseline_mae_deg']:.2f} deg")
    for group, what in (("held_out", "held-out recordings"), ("within", "training recordings' "
                                                             "test parts")):
        if f"test/{group}_mae_deg" in m:
            print(f"test on {what}: mae {m[f'test/{group}_mae_deg']:.2f} deg, baseline "
                  f"{m[f'test/{group}_baseline_mae_deg']:.2f} deg")
    for r in m.get("test/recordings", []):
        print(f"  {r['recording']} ({r['group']}, {r['windows']} windows): mae "
              f"{r['mae_deg']:.2f} deg, baseline {r['baseline_mae_deg']:.2f} deg")
