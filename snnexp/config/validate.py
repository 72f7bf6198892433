"""Range checks of composed configs, each failing with the key, the value and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TypeVar

from omegaconf import DictConfig, MissingMandatoryValue, OmegaConf

from snnexp.config import schema as S
from snnexp.errors import ConfigError

T = TypeVar("T")


def to_schema(cfg: Any, cls: type[T]) -> T:
    """Turn a composed DictConfig (or an instance already) into the schema dataclass ``cls``.

    A key the schema does not know (e.g. added with ``+trainer.max_epoch=3``) is refused with
    the nearest known key, so a typo never runs with the setting silently ignored.
    """
    if isinstance(cfg, cls):
        return cfg
    if isinstance(cfg, DictConfig):
        _refuse_unknown_keys(OmegaConf.to_container(cfg, resolve=False), cls)
        merged = OmegaConf.merge(OmegaConf.structured(cls), cfg)
        try:
            OmegaConf.resolve(merged)
            return OmegaConf.to_object(merged)  # type: ignore[return-value]
        except MissingMandatoryValue as exc:
            key = getattr(exc, "full_key", "") or "?"
            example = _REQUIRED_EXAMPLES.get(key, f"{key}=VALUE")
            raise ConfigError(f"config key '{key}' has no value: set it, e.g. {example}") from None
    raise TypeError(f"expected {cls.__name__} or DictConfig, got {type(cfg).__name__}")


_REQUIRED_EXAMPLES = {
    "ckpt": "snnexp evaluate ckpt=outputs/train/runs/<run>/checkpoints/best.pt",
    "data.paths": "data.paths=[/data/rec.aedat4]",
    "output": "snnexp simulate output=data/sim.aedat4",
}


def _refuse_unknown_keys(node: Any, cls: type, prefix: str = "") -> None:
    """Raise ConfigError for the first mapping key below ``node`` that ``cls`` does not have."""
    import typing

    from snnexp.config.keys import COMMAND_SCHEMAS, key_type, unknown_key_message

    if not isinstance(node, dict):
        return
    for key, value in node.items():
        path = f"{prefix}{key}"
        tp = key_type(cls, path)
        if tp is None:
            command = next((c for c, k in COMMAND_SCHEMAS.items() if k is cls), "train")
            raise ConfigError(unknown_key_message(path, command))
        free_form = tp is dict or typing.get_origin(tp) is dict  # e.g. evaluate's data: {...}
        if isinstance(value, dict) and not free_form:
            _refuse_unknown_keys(value, cls, f"{path}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                _refuse_unknown_keys(item, cls, f"{path}.{i}.")


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"config key '{key}' = {value!r} is invalid: {allowed}")


def _choice(key: str, value: Any, options: Iterable[str]) -> None:
    options = tuple(options)
    if value not in options:
        _fail(key, value, f"allowed values are {', '.join(options)} (e.g. {key}={options[0]})")


def _at_least(key: str, value: Any, low: float, hint: str = "") -> None:
    if value is None or value < low:
        _fail(key, value, f"must be >= {low}{hint}")


def _positive(key: str, value: Any) -> None:
    if value is None or not (value > 0) or not math.isfinite(value):
        _fail(key, value, "must be a positive finite number")


def validate_data(d: S.DataConfig, key: str = "data") -> None:
    if not d.paths:
        _fail(f"{key}.paths", d.paths,
              "list at least one AEDAT4 recording: data.paths=[/path/rec.aedat4]")
    _at_least(f"{key}.window_us", d.window_us, 1)
    _at_least(f"{key}.downsample", d.downsample, 1)
    _at_least(f"{key}.trim_start", d.trim_start, 0)
    _at_least(f"{key}.trim_end", d.trim_end, 0)
    _choice(f"{key}.target", d.target, S.TARGETS)
    if not math.isfinite(d.target_scale) or d.target_scale == 0:
        _fail(f"{key}.target_scale", d.target_scale, "must be a finite non-zero number")
    _positive(f"{key}.madgwick_gain", d.madgwick_gain)
    if len(d.split) != 3 or any(s < 0 for s in d.split) or abs(sum(d.split) - 1.0) > 1e-6:
        _fail(f"{key}.split", list(d.split),
              "must be three non-negative fractions [train, val, test] summing to 1")
    _at_least(f"{key}.seq_length", d.seq_length, 2, " (a sequence needs an initial label + 1 step)")
    _at_least(f"{key}.batch_size", d.batch_size, 1)
    _choice(f"{key}.split_by", d.split_by, ("time", "recording"))
    _at_least(f"{key}.num_workers", d.num_workers, 0)
    a = d.augment
    for name in ("polarity_swap", "drop"):
        if not 0.0 <= getattr(a, name) <= 1.0:
            _fail(f"{key}.augment.{name}", getattr(a, name), "must be a probability in [0, 1]")
    _at_least(f"{key}.augment.shift_px", a.shift_px, 0)
    if not a.noise_hz >= 0:
        _fail(f"{key}.augment.noise_hz", a.noise_hz, "must be >= 0")
    validate_sim(d.sim, f"{key}.sim")


def validate_sim(sim: S.SimConfig, key: str = "sim") -> None:
    """Check the simulated recording's settings (``key`` names them in messages)."""
    _positive(f"{key}.duration_s", sim.duration_s)
    _at_least(f"{key}.width", sim.width, 8)
    _at_least(f"{key}.height", sim.height, 8)
    if not sim.roll_min_deg < sim.roll_max_deg:
        _fail(f"{key}.roll_min_deg", sim.roll_min_deg, f"must be below {key}.roll_max_deg")
    _positive(f"{key}.contrast_threshold", sim.contrast_threshold)
    _positive(f"{key}.imu_rate_hz", sim.imu_rate_hz)


def validate_model(m: S.ModelConfig, n: S.NormConfig) -> None:
    _choice("model.block_type", m.block_type, S.BLOCK_TYPES)
    _choice("model.connect_f", m.connect_f, S.CONNECT_FUNCTIONS)
    _at_least("model.hidden", m.hidden, 1)
    if not m.stages:
        _fail("model.stages", m.stages, "list at least one stage")
    for i, st in enumerate(m.stages):
        k = f"model.stages[{i}]"
        if st.block_type is not None:
            _choice(f"{k}.block_type", st.block_type, S.BLOCK_TYPES)
        for name in ("channels", "mid_channels", "k_pool", "stride_1", "stride_2"):
            _at_least(f"{k}.{name}", getattr(st, name), 1)
        _at_least(f"{k}.num_blocks", st.num_blocks, 0)
        _choice(f"{k}.up_kernel_size", str(st.up_kernel_size), ("1", "3"))
    nc = m.neuron
    _choice("model.neuron.kind", nc.kind, S.NEURON_KINDS)
    _choice("model.neuron.reset", nc.reset, S.RESETS)
    _choice("model.neuron.surrogate.name", nc.surrogate.name, S.SURROGATES)
    _positive("model.neuron.tau", nc.tau)
    _positive("model.neuron.tau_out", nc.tau_out)
    _positive("model.neuron.v_threshold", nc.v_threshold)
    if nc.tau <= 1 or nc.tau_out <= 1:
        _fail("model.neuron.tau", (nc.tau, nc.tau_out), "tau and tau_out must be > 1")
    _choice("norm.kind", n.kind, S.NORM_KINDS)
    _positive("norm.eps", n.eps)


def validate_trainer(t: S.TrainerConfig) -> None:
    _at_least("trainer.max_epochs", t.max_epochs, 1)
    _at_least("trainer.tbptt_k", t.tbptt_k, 1)
    _at_least("trainer.transient", t.transient, 0)
    if t.grad_clip is not None:
        _positive("trainer.grad_clip", t.grad_clip)
    _at_least("trainer.early_stopping_patience", t.early_stopping_patience, 1)
    _at_least("trainer.checkpoint_every", t.checkpoint_every, 0)
    _choice("trainer.execution", t.execution, S.EXECUTIONS)
    _choice("trainer.device", t.device, S.DEVICES)
    _choice("trainer.strategy", t.strategy, S.STRATEGIES)
    if t.num_threads is not None:
        _at_least("trainer.num_threads", t.num_threads, 1)


def validate_logger(lg: S.LoggerConfig) -> None:
    _choice("logger.name", lg.name, S.LOGGERS)
    _choice("logger.wandb.mode", lg.wandb.mode, S.WANDB_MODES)


def validate_task(t: S.TaskConfig) -> None:
    _choice("task.name", t.name, S.TASKS)
    _choice("task.decoder", t.decoder, S.DECODERS)
    _choice("task.loss_at", t.loss_at, S.LOSS_AT)
    _choice("task.select_by", t.select_by, S.SELECT_BY)
    if t.num_classes is not None:
        _at_least("task.num_classes", t.num_classes, 2)


def validate_class_data(d: S.DataConfig) -> None:
    _choice("data.dataset", d.dataset, S.CLASS_DATASETS)
    _choice("data.encoder", d.encoder, S.ENCODERS)
    _at_least("data.num_steps", d.num_steps, 1)
    _positive("data.encoder_gain", d.encoder_gain)
    if d.denoise_us is not None:
        _positive("data.denoise_us", d.denoise_us)
    if d.n_time_bins is not None:
        _at_least("data.n_time_bins", d.n_time_bins, 1)


def _has_official_test(dataset: str) -> bool:
    """Whether classification dataset ``dataset`` brings its own test set."""
    from snnexp.data.tonic_data import TONIC_SETS

    spec = TONIC_SETS.get(dataset)
    return dataset == "mnist" or (spec is not None and spec.official_test)


def _refuse_class_data_for_regression(cfg: S.TrainConfig) -> None:
    """data=classes / mnist / tonic hold labelled samples, not recordings with an IMU."""
    from snnexp.data.class_sim import BUILTIN_CLASSES

    d = cfg.data
    if cfg.task.name == "regression" and (d.dataset != "folders" or BUILTIN_CLASSES in d.paths):
        what = d.dataset if d.dataset != "folders" else BUILTIN_CLASSES
        _fail("task.name", cfg.task.name, f"the data ({what}) is a classification dataset: add "
              "task=classification (e.g. snnexp train task=classification data=...), or train "
              "the regressor on recordings with an IMU (data=synthetic or data.paths=[...])")


def validate_train(cfg: S.TrainConfig) -> None:
    """Check every value of a training config; raise ConfigError naming the first bad key."""
    validate_task(cfg.task)
    _refuse_class_data_for_regression(cfg)
    validate_data(cfg.data)
    if cfg.task.name == "classification":
        validate_class_data(cfg.data)
    validate_model(cfg.model, cfg.norm)
    o = cfg.optimizer
    _choice("optimizer.name", o.name, S.OPTIMIZERS)
    _positive("optimizer.lr", o.lr)
    if o.name == "sgd" and o.momentum is None:
        _fail("optimizer.momentum", None, "SGD needs a momentum, e.g. optimizer.momentum=0.9")
    if o.name == "adam" and (o.betas is None or len(o.betas) != 2):
        _fail("optimizer.betas", o.betas, "Adam needs two betas, e.g. optimizer.betas=[0.9,0.999]")
    s_ = cfg.scheduler
    if s_.name == "plateau" and (s_.factor is None or s_.patience is None):
        _fail("scheduler.factor", s_.factor, "the plateau scheduler needs scheduler.factor and "
              "scheduler.patience, e.g. scheduler.factor=0.5 scheduler.patience=1")
    if s_.name in ("plateau", "cosine") and s_.min_lr is None:
        _fail("scheduler.min_lr", None, "set a lower bound, e.g. scheduler.min_lr=1e-6")
    _at_least("optimizer.weight_decay", o.weight_decay, 0.0)
    _choice("scheduler.name", cfg.scheduler.name, S.SCHEDULERS)
    if cfg.scheduler.min_lr is not None:
        _at_least("scheduler.min_lr", cfg.scheduler.min_lr, 0.0)
    validate_trainer(cfg.trainer)
    validate_logger(cfg.logger)
    _choice("monitor", cfg.monitor, S.MONITORS)
    train_part, val_part, test_part = cfg.data.split
    if train_part <= 0 or (val_part <= 0 and not cfg.data.val_paths):
        _fail("data.split", list(cfg.data.split), "training needs a training and a validation "
              "part (the best epoch is chosen on validation), e.g. data.split=[0.88,0.07,0.05] "
              "or held-out validation recordings in data.val_paths")
    official_test = cfg.task.name == "classification" and _has_official_test(cfg.data.dataset)
    if cfg.evaluate_test and test_part <= 0 and not cfg.data.test_paths and not official_test:
        _fail("data.split", list(cfg.data.split), "the test part is empty but evaluate_test=true:"
              " give it a fraction (e.g. data.split=[0.5,0.4,0.1]), name held-out recordings in "
              "data.test_paths or pass evaluate_test=false")
    if cfg.task.name == "classification" and cfg.monitor != "none":
        _fail("monitor", cfg.monitor, "monitors are for regression runs: use monitor=none with "
              "task=classification")
    if cfg.trainer.transient >= cfg.data.seq_length - 1:
        _fail("trainer.transient", cfg.trainer.transient,
              f"must be below data.seq_length - 1 = {cfg.data.seq_length - 1}")


def validate_evaluate(cfg: S.EvaluateConfig) -> None:
    if not cfg.ckpt or cfg.ckpt == "???":
        _fail("ckpt", cfg.ckpt,
              "pass the checkpoint to evaluate: snnexp evaluate ckpt=PATH/best.pt")
    _choice("trainer.device", cfg.trainer.device, S.DEVICES)
    if cfg.trainer.num_threads is not None:
        _at_least("trainer.num_threads", cfg.trainer.num_threads, 1)
    if cfg.trainer.execution is not None:
        _choice("trainer.execution", cfg.trainer.execution, S.EXECUTIONS)
    _choice("monitor", cfg.monitor, S.MONITORS)
    if cfg.expect_task is not None:
        _choice("expect_task", cfg.expect_task, S.TASKS)
