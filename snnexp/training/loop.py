"""The training recipe: one readable method per phase (setup, train epoch, validate, save, test).

    trainer = Trainer(cfg, output_dir)
    trainer.setup()          # seed, device, data, model, optimizer, scheduler, logger, resume
    summary = trainer.fit()  # epochs of train_epoch + validate + save, early stopping
    test = trainer.test()    # best model on the continuous test sequence(s)
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from snnexp.config.schema import TrainConfig
from snnexp.errors import CheckpointError, ConfigError, TrainingError
from snnexp.training import checkpoint as ckpt
from snnexp.training import distributed as dist
from snnexp.training.loggers import ExperimentLogger, scrub_secrets
from snnexp.training.metrics import regression_metrics
from snnexp.training.provenance import write_provenance
from snnexp.training.runtime import (
    capture_rng_state,
    configure_threads,
    restore_rng_state,
    seed_everything,
    select_device,
)
from snnexp.training.tasks import check_task
from snnexp.training.tbptt import run_sequence

CHECKPOINT_DIR = "checkpoints"
LAST, BEST, BEST_WEIGHTS = "last.pt", "best.pt", "best_weights.pt"


def run_name(cfg: TrainConfig) -> str:
    """A W&B / display name built from the settings researchers compare."""
    m, n = cfg.model, cfg.model.neuron
    return (f"{m.block_type}-{cfg.norm.kind}-{n.kind}-{n.reset}-h{m.hidden}"
            f"-{cfg.optimizer.name}{cfg.optimizer.lr:g}-k{cfg.trainer.tbptt_k}-s{cfg.seed}")


def build_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    o = cfg.optimizer
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay,
                                betas=tuple(o.betas))
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    raise ConfigError(f"config key 'optimizer.name' = {o.name!r} is invalid: use adam or sgd")


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    s = cfg.scheduler
    if s.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=s.factor, patience=s.patience, min_lr=s.min_lr)
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=cfg.trainer.max_epochs, eta_min=s.min_lr)
    return None


class Trainer:
    """Holds the objects of one training run and runs its phases."""

    def __init__(self, cfg: TrainConfig, output_dir: str | Path, config_dict: dict | None = None,
                 sweep_group: str | None = None) -> None:
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        self.ckpt_dir = self.output_dir / CHECKPOINT_DIR
        self.config_dict = scrub_secrets(config_dict or OmegaConf.to_container(
            OmegaConf.structured(cfg), resolve=True))
        self.sweep_group = sweep_group
        self.history: list[dict[str, Any]] = []
        self.epoch = 0  # epochs completed
        self.global_step = 0  # optimizer steps
        self.best_mse = math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.stopped_early = False
        self.saved_epoch = 0  # epoch of the checkpoints/last.pt on disk (0: none)
        self.ctx = dist.DistContext()  # single process unless trainer.strategy=ddp

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Seed, pick the device, build data, model, optimizer, scheduler, logger; resume."""
        from snnexp import engine
        from snnexp.models import count_trainable_parameters

        cfg = self.cfg
        self.ctx = dist.init_distributed(cfg.trainer.strategy)
        if self.ctx.enabled and cfg.trainer.execution == "step":
            raise ConfigError("config key 'trainer.execution' = 'step' is invalid with "
                              "trainer.strategy=ddp: use trainer.execution=chunk")
        self.output_dir = dist.same_path(self.ctx, self.output_dir)  # rank 0's run directory
        self.ckpt_dir = self.output_dir / CHECKPOINT_DIR
        if self.is_main:
            _prepare_output_dir(self.output_dir)
        seed_everything(cfg.seed)
        configure_threads(cfg.trainer.num_threads)
        self.device = dist.device_for(self.ctx, select_device(cfg.trainer.device))
        # a bad engine setting stops before the data is read
        engine.resolve_backend(cfg.trainer.engine, self.device, cfg.trainer.kernel_march)
        self.data = self.build_data()
        self.data.pin_memory = self.device.type == "cuda"  # batches copied to the GPU faster
        self.net = self.build_net().to(self.device)
        # how the chunks run (trainer.engine, trainer.kernel_march)
        engine.prepare(self.net, cfg.trainer.engine, march=cfg.trainer.kernel_march)
        self.num_parameters = count_trainable_parameters(self.net)
        self.optimizer = build_optimizer(cfg, self.net.parameters())
        self.scheduler = build_scheduler(cfg, self.optimizer)
        resume = self._load_resume() if cfg.ckpt_path else None
        # what TBPTT trains through: the network, or its DDP wrapper (gradient averaging)
        self.model = dist.wrap(self.net, self.ctx, self.device)
        if self.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            ckpt.atomic_write_text(self.output_dir / "config.yaml",
                                   OmegaConf.to_yaml(self.config_dict))
            write_provenance(self.output_dir)
        self.logger = ExperimentLogger(
            cfg.logger, self.output_dir, run_name(cfg), self.config_dict, tags=list(cfg.tags),
            group=self.sweep_group, resume_id=(resume or {}).get("wandb_run_id"),
            enabled=self.is_main)
        if cfg.logger.wandb.watch:
            self.logger.watch(self.net, cfg.logger.wandb.watch_freq)

    def build_data(self) -> Any:
        """The run's data (the task's kind of bundle)."""
        from snnexp.data.pipeline import build_data

        return build_data(self.cfg.data, seed=self.cfg.seed)

    def build_net(self) -> torch.nn.Module:
        """The network for the data's input shape (the task's head)."""
        from snnexp.models import build_network

        return build_network(self.cfg.model, self.cfg.norm, tuple(self.data.input_shape))

    def score(self, val_metrics: dict[str, float]) -> float:
        """The validation number that selects the best epoch (lower is better)."""
        return val_metrics["val/mse"]

    def best_metrics(self) -> dict[str, float]:
        """The best validation figures so far (the history and the summary carry them)."""
        return {"val/mse_best": self.best_mse}

    def epoch_line(self, record: dict[str, Any]) -> str:
        return (f"epoch {record['epoch']}: train loss {record['train/loss']:.5f}  val mse "
                f"{record['val/mse']:.5f}  (best {self.best_mse:.5f} @ {self.best_epoch})")

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the only process): the one that logs, prints and writes files."""
        return self.ctx.is_main

    def _load_resume(self) -> dict[str, Any]:
        state = ckpt.load_checkpoint(self.cfg.ckpt_path, map_location=self.device)
        check_task(state, self.cfg.task.name, self.cfg.ckpt_path)
        try:
            self.net.load_state_dict(state["model"])
        except RuntimeError:
            raise CheckpointError(
                f"checkpoint '{self.cfg.ckpt_path}' holds another architecture than the "
                "configured model; resume with the run's own settings (its config.yaml)") from None
        if self.cfg.finetune:  # the weights only: a new training starts from them
            return {}
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        t = state["trainer_state"]
        self.epoch, self.global_step = int(t["epoch"]), int(t["global_step"])
        self.best_mse, self.best_epoch = float(t["best_mse"]), int(t["best_epoch"])
        self.bad_epochs = int(t["bad_epochs"])
        self.saved_epoch = self.epoch
        self.history = list(state.get("history", []))
        if state.get("rng"):
            restore_rng_state(state["rng"])
        return state

    # ------------------------------------------------------------ train epoch
    def _limited(self, batches: Any, limit: int | None, world_size: int = 1) -> Any:
        """The batches holding the first ``limit`` sequences (over all ranks under DDP)."""
        if limit is None:
            return batches
        per_batch = self.cfg.data.batch_size * world_size
        return itertools.islice(batches, math.ceil(limit / per_batch))

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass of TBPTT over the (seeded, shuffled) training sequences."""
        t = self.cfg.trainer
        self.net.train()
        lr = self.optimizer.param_groups[0]["lr"]
        rank, world = self.ctx.rank, self.ctx.world_size

        def on_chunk(loss: float, step: int) -> None:
            self.logger.log_chunk(step, loss, lr)

        batches = self._limited(self.data.train_batches(epoch, rank, world),
                                t.limit_train_sequences, world)
        n_seq = self.data.num_train_sequences
        if t.limit_train_sequences is not None:
            n_seq = min(n_seq, t.limit_train_sequences)
        total = math.ceil(math.ceil(n_seq / world) / self.cfg.data.batch_size)
        bar = _progress(batches, total, f"epoch {epoch} train", t.progress and self.is_main)
        losses: list[float] = []
        for frames, labels in bar:
            if not torch.isfinite(labels).all():
                raise TrainingError(
                    f"the training labels hold {int((~torch.isfinite(labels)).sum())} NaN or "
                    "infinite values (a recording's IMU stream has non-finite samples); "
                    f"{self._kept()}: check or replace the recording in data.paths")
            try:
                out = run_sequence(self.model, frames, labels, k=t.tbptt_k,
                                   transient=t.transient, optimizer=self.optimizer,
                                   execution=t.execution, grad_clip=t.grad_clip, amp=t.amp,
                                   on_chunk=on_chunk, step_offset=self.global_step)
            except TrainingError as exc:  # a non-finite loss: say what exists on disk
                first = str(exc).split(";")[0]
                raise TrainingError(f"{first} in epoch {epoch}; {self._kept()}: lower "
                                    "optimizer.lr or set trainer.grad_clip") from None
            self.global_step += out.optimizer_steps
            losses.extend(out.chunk_losses)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.5f}")
        dist.sync_buffers(self.ctx, self.net)  # BN running stats of rank 0 everywhere
        loss = dist.mean_over_ranks(self.ctx, float(np.mean(losses)) if losses else math.nan)
        return {"train/loss": loss, "lr": lr}

    # --------------------------------------------------------------- validate
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Val MSE / L1 / relative error over all validation sequences (same procedure)."""
        t = self.cfg.trainer
        self.net.eval()
        preds, targets = [], []
        batches = self._limited(self.data.val_batches(), t.limit_val_sequences)
        for frames, labels in batches:
            out = run_sequence(self.net, frames, labels, k=t.tbptt_k, transient=t.transient,
                               execution=t.execution, amp=t.amp)
            preds.append(out.counted_preds.ravel())
            targets.append(out.counted_targets.ravel())
        m = regression_metrics(np.concatenate(preds), np.concatenate(targets))
        return {f"val/{k}": v for k, v in m.items()}

    # ------------------------------------------------------------------- save
    def _checkpoint(self, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "format": ckpt.FORMAT,
            "version": ckpt.VERSION,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "epoch": self.epoch,
            "metrics": dict(metrics),
            "history": list(self.history),
            "config": self.config_dict,
            "data": self.data_meta(),
            "trainer_state": {"epoch": self.epoch, "global_step": self.global_step,
                              "best_mse": self.best_mse, "best_epoch": self.best_epoch,
                              "bad_epochs": self.bad_epochs},
            "rng": capture_rng_state(),
            "wandb_run_id": self.logger.run_id,
        }

    def data_meta(self) -> dict[str, Any]:
        return {"input_shape": list(self.data.input_shape),
                "target_map": self.data.target_map.as_dict(),
                "window_us": int(self.data.window_us),
                "recordings": list(self.data.recordings)}

    def save(self, metrics: dict[str, float], improved: bool) -> None:
        """last.pt every epoch, best.pt (+ weights-only) on improvement, periodic epoch_N.pt."""
        if not self.is_main:
            return
        state = self._checkpoint(metrics)
        if improved:
            ckpt.atomic_save(state, self.ckpt_dir / BEST)
            ckpt.atomic_save({"format": "snnexp-weights", "model": state["model"],
                              "config": self.config_dict, "data": state["data"]},
                             self.ckpt_dir / BEST_WEIGHTS)
        every = self.cfg.trainer.checkpoint_every
        if every and self.epoch % every == 0:
            ckpt.atomic_save(state, self.ckpt_dir / f"epoch_{self.epoch:03d}.pt")
        ckpt.atomic_save(state, self.ckpt_dir / LAST, on_replaced=self._mark_saved)
        ckpt.atomic_write_text(self.output_dir / "history.json",
                               json.dumps(self.history, indent=1))

    # -------------------------------------------------------------------- fit
    def fit(self) -> dict[str, Any]:
        """Train up to max_epochs with validation, scheduling, checkpoints, early stopping."""
        t = self.cfg.trainer
        first = self.epoch + 1
        epochs = _progress(range(first, t.max_epochs + 1), t.max_epochs - first + 1, "epochs",
                           t.progress and self.is_main, leave=True)
        for epoch in epochs:
            if self.bad_epochs >= t.early_stopping_patience:
                self.stopped_early = True
                break
            start = time.time()
            train_metrics = self.train_epoch(epoch)
            val_metrics = self.validate()
            self.epoch = epoch
            val_score = self.score(val_metrics)
            if not math.isfinite(val_score):
                raise TrainingError(f"the validation score is {val_score} after epoch {epoch}; "
                                    f"{self._kept()}: lower optimizer.lr or set "
                                    "trainer.grad_clip")
            improved = val_score < self.best_mse
            if improved:
                self.best_mse, self.best_epoch, self.bad_epochs = val_score, epoch, 0
            else:
                self.bad_epochs += 1
            self._step_scheduler(val_score)
            record = {"epoch": epoch, **train_metrics, **val_metrics}
            self.history.append(record)
            record.update(self.best_metrics(), time_s=round(time.time() - start, 2))
            self.logger.log_epoch(epoch, record)
            if self.is_main:
                if t.progress:
                    epochs.set_postfix(loss=f"{record['train/loss']:.5f}", val=f"{val_score:.5f}",
                                       best=f"{self.best_mse:.5f}@{self.best_epoch}")
                report(self.epoch_line(record), epochs.write if t.progress else None)
            self.save(record, improved)
            dist.barrier(self.ctx)
        else:
            self.stopped_early = self.bad_epochs >= t.early_stopping_patience
        summary = {**self.best_metrics(), "best_epoch": self.best_epoch,
                   "epochs": self.epoch, "stopped_early": self.stopped_early,
                   "optimizer_steps": self.global_step, "parameters": self.num_parameters}
        self.logger.log_summary(summary)
        self.logger.log_artifact(self.output_dir / "history.json", "history", "history")
        return summary

    def _mark_saved(self) -> None:
        self.saved_epoch = self.epoch

    def _kept(self) -> str:
        """What a stopped run leaves to continue from (for error messages)."""
        if self.saved_epoch and (self.ckpt_dir / LAST).is_file():
            return (f"training stopped; {self.ckpt_dir / LAST} of epoch {self.saved_epoch} (the "
                    "last good one) was kept")
        return "training stopped before the first epoch ended, so no checkpoint was written"

    def _step_scheduler(self, val_mse: float) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_mse)
        elif self.scheduler is not None:
            self.scheduler.step()

    # ------------------------------------------------------------------- test
    def test(self) -> dict[str, Any]:
        """Evaluate the best checkpoint on the test sequence(s); write metrics and plots."""
        from snnexp.training.evaluation import evaluate_and_report

        if not self.is_main:
            return {}
        best = ckpt.load_checkpoint(self.ckpt_dir / BEST, map_location=self.device)
        self.net.load_state_dict(best["model"])
        result = evaluate_and_report(
            self.net, self.data, self.output_dir / "test", k=self.cfg.trainer.tbptt_k,
            transient=self.cfg.trainer.transient, monitor=self.cfg.monitor,
            execution=self.cfg.trainer.execution)
        metrics = {f"test/{k}": v for k, v in result.metrics.items()}
        self.logger.log_summary(metrics)
        self.logger.log_images(result.plots)
        metrics["test/recordings"] = result.recordings  # per test part (final_metrics.json)
        return metrics

    def close(self, exit_code: int = 0) -> None:
        logger = getattr(self, "logger", None)
        if logger is not None:
            logger.finish(exit_code)
        dist.shutdown(self.ctx)


def report(line: str, write: Any = None) -> None:
    """Print ``line`` (through ``write``, e.g. a progress bar's) and add it to the run's log file.

    The log file is the file handler of Hydra's job logging (``<command>.log``); outside Hydra
    the line is only printed.
    """
    (write or print)(line)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO,
                                                "levelname": "INFO", "name": "snnexp"}))


def _prepare_output_dir(directory: Path) -> None:
    """Create the run directory and prove it is writable before any work starts."""
    probe = directory / ".snnexp_write_test"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"output directory '{directory}' is not writable ({exc.strerror}): "
                          "choose another with hydra.run.dir=PATH or paths.log_dir=PATH") from None


def _progress(iterable: Any, total: int, desc: str, enabled: bool, leave: bool = False) -> Any:
    """A tqdm bar over ``iterable`` when progress bars are on, else the iterable itself."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=leave, dynamic_ncols=True)

