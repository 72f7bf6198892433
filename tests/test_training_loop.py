"""The trainer's phases through ``train(cfg)`` (no subprocess): checkpoints, early stopping,
schedulers, config validation, W&B offline."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from snnexp.commands.train import train
from snnexp.errors import ConfigError
from snnexp.training.checkpoint import load_checkpoint
from snnexp.training.loop import Trainer


def test_train_writes_checkpoints_history_and_test_metrics(compose_train, tmp_path) -> None:
    cfg = compose_train("trainer.checkpoint_every=1")
    metrics, objects = train(cfg)
    run = tmp_path / "run"
    for name in ("last.pt", "best.pt", "best_weights.pt", "epoch_001.pt", "epoch_002.pt"):
        assert (run / "checkpoints" / name).is_file(), name
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "metrics", "history", "config",
            "data", "rng"} <= set(state)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert state["config"]["model"]["block_type"] == "sew"  # resolved config as plain data
    assert state["data"]["target_map"]["scale"] == pytest.approx(-1 / 3.141592653589793)
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"train/loss", "val/mse", "val/l1", "val/rel", "lr"} <= set(history[0])
    assert (run / "config.yaml").is_file()
    kinds = [json.loads(line)["kind"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("epoch") == 2 and "chunk" in kinds and "summary" in kinds
    test = json.loads((run / "test" / "metrics.json").read_text())
    assert metrics["test/mae_deg"] == pytest.approx(test["mae_deg"])
    assert {"mse", "rel", "mae_deg", "std_deg", "max_deg", "baseline_mae_deg"} <= set(test)
    assert (run / "test" / "predictions.csv").is_file() and (run / "test" / "prediction.png")
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["metrics"]["val/mse"] == pytest.approx(metrics["val/mse_best"])


def _fake_validation(monkeypatch, values: list[float]) -> None:
    it = iter(values)

    def validate(self):  # noqa: ANN001
        v = next(it)
        return {"val/mse": v, "val/l1": v, "val/rel": v}

    monkeypatch.setattr(Trainer, "validate", validate)
    monkeypatch.setattr(Trainer, "train_epoch", lambda self, epoch: {"train/loss": 0.0,
                                                                     "lr": self.optimizer
                                                                     .param_groups[0]["lr"]})


def test_early_stopping_after_patience_epochs(compose_train, monkeypatch) -> None:
    _fake_validation(monkeypatch, [1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    cfg = compose_train("trainer.max_epochs=7", "trainer.early_stopping_patience=2",
                        "evaluate_test=false")
    metrics, _ = train(cfg)
    assert metrics["best_epoch"] == 2
    assert metrics["epochs"] == 4  # epochs 3 and 4 did not improve -> stop
    assert metrics["stopped_early"] is True


def test_plateau_scheduler_halves_lr_after_patience(compose_train, monkeypatch) -> None:
    _fake_validation(monkeypatch, [1.0, 1.5, 1.6, 1.7])
    cfg = compose_train("scheduler=plateau", "trainer.max_epochs=4", "scheduler.patience=1",
                        "evaluate_test=false", "optimizer.lr=1e-3")
    _, objects = train(cfg)
    lrs = [h["lr"] for h in objects["trainer"].history]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4])


def test_cosine_scheduler_anneals_per_epoch(compose_train, monkeypatch) -> None:
    _fake_validation(monkeypatch, [1.0, 0.9, 0.8])
    cfg = compose_train("scheduler=cosine", "trainer.max_epochs=3", "evaluate_test=false",
                        "optimizer.lr=1e-3", "scheduler.min_lr=0.0")
    _, objects = train(cfg)
    lrs = [h["lr"] for h in objects["trainer"].history]
    assert lrs == pytest.approx([1e-3, 7.5e-4, 2.5e-4])


@pytest.mark.parametrize(("override", "key"), [
    ("trainer.tbptt_k=0", "trainer.tbptt_k"),
    ("data.seq_length=1", "data.seq_length"),
    ("data.split=[0.5,0.2,0.2]", "data.split"),
    ("optimizer.lr=-0.1", "optimizer.lr"),
    ("model.block_type=resnet", "model.block_type"),
    ("norm.kind=layer", "norm.kind"),
    ("trainer.execution=parallel", "trainer.execution"),
])
def test_invalid_values_name_the_key(compose_train, override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")):
        train(compose_train(override))


def test_wandb_offline_run_directory_has_logged_keys(compose_train, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_train("logger=wandb", "trainer.max_epochs=1", "evaluate_test=false")
    train(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    keys = (b"chunk/loss", b"val/mse", b"val/mse_best", b"sew-rms-lif")
    # W&B's service process writes the run file itself; under load it may lag behind finish()
    deadline = time.monotonic() + 60
    while True:
        blob = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
        if all(key in blob for key in keys) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for key in keys:
        assert key in blob, key
    assert os.environ.get("WANDB_API_KEY", "unset-key") not in (tmp_path / "run" / "config.yaml"
                                                                ).read_text()


def test_output_directory_not_writable_is_a_clear_error(compose_train, tmp_path) -> None:
    if os.geteuid() == 0:
        target = Path("/proc/snnexp-not-writable")  # root can write anywhere but /proc
    else:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o500)
    cfg = compose_train(f"paths.output_dir={target}")
    with pytest.raises(ConfigError, match="not writable"):
        train(cfg)
