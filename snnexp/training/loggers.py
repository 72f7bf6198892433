"""Experiment logging: a local metrics.jsonl always, Weights & Biases when ``logger=wandb``.

W&B runs offline by default (no account needed; ``wandb sync`` uploads later). Each job of a
multirun gets its own W&B run, grouped by the sweep, and finishes it whatever happens.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from snnexp.config.schema import LoggerConfig

_SECRET_WORDS = ("api_key", "apikey", "token", "password", "secret")


def scrub_secrets(obj: Any) -> Any:
    """Drop values whose key looks like a credential (never saved in configs or logs)."""
    if isinstance(obj, dict):
        return {k: ("<redacted>" if any(w in str(k).lower() for w in _SECRET_WORDS)
                    else scrub_secrets(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_secrets(v) for v in obj]
    return obj


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


class ExperimentLogger:
    """Writes every record to ``metrics.jsonl`` and forwards it to W&B when enabled."""

    def __init__(self, cfg: LoggerConfig, output_dir: Path, run_name: str, config: dict[str, Any],
                 tags: list[str] | None = None, group: str | None = None,
                 resume_id: str | None = None, enabled: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.enabled = enabled  # False on DDP ranks other than 0: log nothing anywhere
        self._t0 = time.time()
        self.run = None
        self.run_id: str | None = None
        if not enabled:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        if cfg.name == "wandb" and cfg.wandb.mode != "disabled":
            self._init_wandb(cfg, run_name, config, tags or [], group, resume_id)

    def _init_wandb(self, cfg: LoggerConfig, run_name: str, config: dict[str, Any],
                    tags: list[str], group: str | None, resume_id: str | None) -> None:
        import wandb

        w = cfg.wandb
        wandb_dir = Path(w.dir) if w.dir else self.output_dir
        wandb_dir.mkdir(parents=True, exist_ok=True)
        mode = w.mode
        if mode == "online" and not os.environ.get("WANDB_API_KEY") and not _has_netrc_login():
            print("warning: logger.wandb.mode=online but no W&B login was found (WANDB_API_KEY "
                  "or `wandb login`); logging offline, upload later with `wandb sync`",
                  file=sys.stderr, flush=True)
            mode = "offline"
        settings = wandb.Settings(init_timeout=w.init_timeout, silent=True, console="off")
        kwargs = dict(project=w.project, entity=w.entity, name=run_name, group=w.group or group,
                      tags=tags, dir=str(wandb_dir), config=scrub_secrets(config),
                      settings=settings, reinit="finish_previous")
        if resume_id:
            kwargs.update(id=resume_id, resume="allow")
        try:
            self.run = wandb.init(mode=mode, **kwargs)
        except Exception as exc:  # network trouble online: fall back to offline, never block
            if mode != "online":
                raise
            print(f"warning: W&B online init failed ({type(exc).__name__}); logging offline, "
                  "upload later with `wandb sync`", file=sys.stderr, flush=True)
            self.run = wandb.init(mode="offline", **kwargs)
        self.run_id = self.run.id
        self.run.define_metric("chunk/step")
        self.run.define_metric("chunk/*", step_metric="chunk/step")
        self.run.define_metric("epoch")
        for prefix in ("train/*", "val/*", "lr"):
            self.run.define_metric(prefix, step_metric="epoch")

    def watch(self, model: Any, freq: int) -> None:
        if self.run is not None:
            self.run.watch(model, log="all", log_freq=freq)

    def _write(self, kind: str, data: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "time_s": round(time.time() - self._t0, 3)}
        record.update({k: _jsonable(v) for k, v in data.items()})
        self._jsonl.write(json.dumps(record) + "\n")

    def log_chunk(self, step: int, loss: float, lr: float) -> None:
        self._write("chunk", {"step": step, "loss": loss, "lr": lr})
        if self.run is not None:
            self.run.log({"chunk/step": step, "chunk/loss": loss, "chunk/lr": lr})

    def log_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        self._write("epoch", {"epoch": epoch, **metrics})
        self._flush()
        if self.run is not None:
            self.run.log({"epoch": epoch, **metrics})

    def _flush(self) -> None:
        if self.enabled:
            self._jsonl.flush()

    def log_summary(self, metrics: dict[str, Any]) -> None:
        self._write("summary", metrics)
        self._flush()
        if self.run is not None:
            for key, value in metrics.items():
                self.run.summary[key] = value

    def log_images(self, images: dict[str, Path]) -> None:
        if self.run is not None and images:
            import wandb

            self.run.log({f"eval/{name}": wandb.Image(str(p)) for name, p in images.items()})

    def log_artifact(self, path: Path, name: str, kind: str) -> None:
        if self.run is not None and Path(path).exists():
            import wandb

            art = wandb.Artifact(name=f"{name}-{self.run.id}", type=kind)
            art.add_file(str(path))
            self.run.log_artifact(art)

    def finish(self, exit_code: int = 0) -> None:
        if self.enabled and not self._jsonl.closed:
            self._jsonl.close()
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def _has_netrc_login() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False
