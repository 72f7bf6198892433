"""Every config schema of snnexp, in one place: the types of the keys, not their values.

The defaults live in the YAML tree (``conf/``) only. Each dataclass names the YAML node its
Python defaults are read from (:func:`yaml_defaults`), so code that builds a config without
Hydra (``ModelConfig(hidden=8)``) gets the same values as the command line; a key the YAML
does not set is ``???`` (required), or None where the type allows it (a setting one option of
a group does not use, e.g. ``optimizer.momentum`` for Adam). The CLI registers the schemas with
Hydra's ConfigStore so that a typo'd key or a wrongly typed value fails at compose time, and
:mod:`snnexp.config.validate` checks the value ranges, naming the key and the allowed values.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import MISSING as _NO_DEFAULT
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from omegaconf import MISSING

# Allowed values of the string-valued options (one definition, used by validation and code).
TARGETS = ("roll", "pitch", "yaw", "optical_roll")
BLOCK_TYPES = ("sew", "plain", "spiking")
CONNECT_FUNCTIONS = ("ADD", "AND", "IAND")
NORM_KINDS = ("bn", "rms", "mul", "none")
NEURON_KINDS = ("lif", "plif")
RESETS = ("soft", "hard")
SURROGATES = ("atan", "sigmoid", "triangular", "fast_sigmoid")
OPTIMIZERS = ("adam", "sgd")
SCHEDULERS = ("plateau", "cosine", "none")
LOGGERS = ("wandb", "none")
WANDB_MODES = ("offline", "online", "disabled")
EXECUTIONS = ("chunk", "step")
STRATEGIES = ("single", "ddp")
DEVICES = ("auto", "cpu", "cuda", "mps")
MONITORS = ("none", "spikes", "norm", "both")
TASKS = ("regression", "classification")
DECODERS = ("max", "mean", "last")
LOSS_AT = ("chunk", "end")
SELECT_BY = ("acc", "loss")
TONIC_DATASETS = ("NMNIST", "POKERDVS", "DVSGesture", "CIFAR10DVS")  # snnexp.data.tonic_data
CLASS_DATASETS = ("folders", "mnist", *TONIC_DATASETS)
ENCODERS = ("poisson", "latency", "constant_current")
MOTIONS = ("roll_left", "roll_right", "pan_left", "pan_right", "tilt_up", "tilt_down")


@cache
def _conf_file(rel: str) -> Any:
    import importlib.resources
    from pathlib import Path

    from omegaconf import OmegaConf

    try:  # the conf tree ships as the package snnexp.conf
        root: Any = importlib.resources.files("snnexp.conf")
    except ModuleNotFoundError:  # a source checkout on sys.path without installing
        root = Path(__file__).resolve().parents[2] / "conf"
    text = (root / rel).read_text(encoding="utf-8")
    return OmegaConf.to_container(OmegaConf.create(text), resolve=False)


def _conf_node(rel: str, node: str | None) -> dict[str, Any]:
    data = _conf_file(rel)
    for part in node.split(".") if node else []:
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def yaml_defaults(rel: str, node: str | None = None,
                  convert: dict[str, Callable[[Any], Any]] | None = None) -> Callable[[type], type]:
    """Class decorator (under ``@dataclass``): each field's default is the value of the YAML
    node ``conf/<rel>[:node]``; interpolations and absent keys become ``???`` (or None for an
    optional type). Fields with an explicit ``field(...)`` (nested groups) keep it.
    """
    def deco(cls: type) -> type:
        values = _conf_node(rel, node)
        for name, annotation in cls.__annotations__.items():
            if name in cls.__dict__:
                continue
            value = values.get(name, _NO_DEFAULT)
            if isinstance(value, str) and ("${" in value or value == MISSING):
                value = _NO_DEFAULT
            if value is _NO_DEFAULT:
                value = None if "None" in str(annotation) else MISSING
            elif convert and name in convert:
                value = field(default_factory=lambda v=value, f=convert[name]: f(copy.deepcopy(v)))
            elif isinstance(value, list | dict):
                value = field(default_factory=lambda v=value: copy.deepcopy(v))
            setattr(cls, name, value)
        return cls
    return deco


@dataclass
@yaml_defaults("data/aedat4.yaml", "sim")
class SimConfig:
    """The built-in simulated recording (a DAVIS346-like camera rolling in front of a horizon)."""

    duration_s: float  # length of the recording in seconds
    width: int  # sensor width in pixels
    height: int  # sensor height in pixels
    seed: int  # all randomness of the simulation derives from this
    camera_name: str  # camera name written into the AEDAT4 file
    # roll range of the simulated motion: inside the reference's [-180, 0] deg, kept clear of
    # +-180 deg where the roll formula (atan2) wraps and the label would jump from 1 to -1
    roll_min_deg: float
    roll_max_deg: float
    max_speed_deg_s: float  # peak roll speed
    render_rate_hz: float  # rate at which the scene is rendered to generate events
    contrast_threshold: float  # log-intensity change that fires one event
    threshold_sigma: float  # per-pixel threshold mismatch (std)
    noise_rate_hz: float  # background-activity noise events per pixel per second
    imu_rate_hz: float  # IMU sample rate
    gyro_noise_deg_s: float  # gyroscope white noise (std, deg/s)
    gyro_bias_deg_s: float  # gyroscope constant bias magnitude (deg/s)
    accel_noise_g: float  # accelerometer white noise (std, g)


@dataclass
@yaml_defaults("data/aedat4.yaml", "augment")
class AugmentConfig:
    """Event-level augmentation of training sequences (off at 0; see snnexp.data.framing)."""

    polarity_swap: float  # probability that a sequence's ON / OFF channels are swapped
    shift_px: int  # each sequence shifted by up to this many input pixels in x and y
    drop: float  # probability that an event is dropped
    noise_hz: float  # noise events added per input pixel and second


@dataclass
@yaml_defaults("data/classes.yaml", "classes")
class ClassSimConfig:
    """The built-in classification data: short simulated clips, one class per camera motion."""

    motions: list[str]  # the classes
    samples_per_class: int  # clips per class
    scenes: int  # different textured scenes (seeds) the clips are drawn from
    duration_s: list[float]  # [min, max] per clip
    speed: list[float]  # [min, max] relative speed
    width: int  # sensor width in pixels
    height: int  # sensor height in pixels
    seed: int  # all randomness of the clips derives from this


@dataclass
@yaml_defaults("data/aedat4.yaml")
class DataConfig:
    """Recordings and how they become labelled, batched event frames."""

    paths: list[str]  # files, folders, globs or builtin:SEED
    val_paths: list[str]  # whole recordings for validation
    test_paths: list[str]  # whole held-out recordings for test
    split_by: str  # time (each recording split by `split`) | recording (whole ones)
    builtin_dir: str  # where builtin:SEED recordings are simulated to
    sim: SimConfig = field(default_factory=SimConfig)
    window_us: int  # length of one time window (= one frame = one time step)
    downsample: int  # spatial downsampling factor (counts summed over factor x factor pixels)
    trim_start: int  # windows dropped at the start of each recording
    trim_end: int  # windows dropped at the end (the reference drops 2500)
    target: str  # roll | pitch | yaw | optical_roll
    target_scale: float  # y = target_scale * angle_rad + target_offset
    target_offset: float
    madgwick_gain: float
    split: list[float]  # train, val, test
    seq_length: int  # windows per training / validation sequence
    batch_size: int
    num_workers: int  # DataLoader processes building training batches (0: in-process)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache: bool  # cache events + labels on disk, keyed by content hash and settings
    cache_dir: str
    cache_limit_gb: float  # refuse to build a cache entry estimated above this size
    classes: ClassSimConfig = field(default_factory=ClassSimConfig)  # builtin:classes (task)
    dataset: str  # classification: folders | mnist | a tonic dataset (NMNIST, ... : data=tonic)
    root: str  # dataset=mnist: the folder of its IDX files; tonic: the folder of <dataset>/
    download: bool  # tonic datasets: let tonic download a missing one (needs internet)
    denoise_us: int | None  # tonic: Denoise(filter_time) in us (None: off)
    n_time_bins: int | None  # tonic: ToFrame(n_time_bins) instead of time_window=window_us
    encoder: str  # static images -> spikes: poisson | latency | constant_current
    num_steps: int  # time steps per encoded image
    encoder_gain: float  # poisson: spike probability per unit intensity; LIF: current
    limit_samples: int | None  # use only the first N images of each set (debugging)


@dataclass
@yaml_defaults("task/regression.yaml")
class TaskConfig:
    """What the network learns: regression of the orientation, or classification of samples."""

    name: str  # regression | classification
    num_classes: int | None  # classification: None = as many as the data has
    decoder: str  # max | mean | last: output membranes over time -> class scores
    loss_at: str  # chunk: every TBPTT chunk, on the decoded-so-far scores | end
    select_by: str  # best checkpoint / early stopping on val accuracy | val loss


@dataclass
@yaml_defaults("model/sew.yaml", "stages.0")
class StageConfig:
    """One stage of the network (see docs/METHOD.md section 2)."""

    channels: int
    up_kernel_size: int  # kernel of the channel-adapting conv (1 or 3)
    mid_channels: int
    num_blocks: int
    block_type: str | None  # None: the model's block_type
    k_pool: int
    stride_1: int
    stride_2: int


@dataclass
@yaml_defaults("model/sew.yaml", "neuron.surrogate")
class SurrogateConfig:
    name: str  # atan | sigmoid | triangular | fast_sigmoid
    alpha: float | None  # width / slope; None: the surrogate's own default


@dataclass
@yaml_defaults("model/sew.yaml", "neuron")
class NeuronConfig:
    kind: str  # lif | plif (parametric LIF, learnable tau)
    tau: float
    tau_out: float  # time constant of the non-spiking output integrator
    reset: str  # soft (v_reset None) | hard (v_reset 0.0, the notebook's effective one)
    v_threshold: float
    detach_reset: bool
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)


@dataclass
@yaml_defaults("model/sew.yaml", convert={"stages": lambda v: [StageConfig(**d) for d in v]})
class ModelConfig:
    block_type: str  # sew | plain | spiking
    connect_f: str  # SEW combine: ADD | AND | IAND
    stages: list[StageConfig]
    hidden: int
    neuron: NeuronConfig = field(default_factory=NeuronConfig)


@dataclass
@yaml_defaults("norm/bn.yaml")
class NormConfig:
    kind: str  # bn | rms | mul | none
    learnable: bool  # affine parameters (bn, rms) / learnable scalar (mul)
    eps: float
    init_scale: float  # mul: initial value of the scalar
    momentum: float  # bn: running-statistics momentum


@dataclass
@yaml_defaults("optimizer/adam.yaml")
class OptimizerConfig:
    name: str  # adam | sgd
    lr: float
    weight_decay: float
    momentum: float | None  # sgd only (None: the option does not use it)
    betas: list[float] | None  # adam only


@dataclass
@yaml_defaults("scheduler/plateau.yaml")
class SchedulerConfig:
    name: str  # plateau | cosine | none
    factor: float | None  # plateau only (None: the option does not use it)
    patience: int | None  # plateau only
    min_lr: float | None  # plateau and cosine (eta_min)


@dataclass
@yaml_defaults("trainer/default.yaml")
class TrainerConfig:
    max_epochs: int
    tbptt_k: int  # backward + optimizer step every K steps
    transient: int  # warm-up steps per sequence excluded from loss and metrics
    grad_clip: float | None  # max gradient norm; None: no clipping
    early_stopping_patience: int  # epochs without val-MSE improvement
    checkpoint_every: int  # periodic checkpoint every N epochs (0: never)
    execution: str  # chunk (fast, K steps at once) | step (per-step reference loop)
    engine: str  # auto | native (C++ kernels, CPU) | torch: what runs the chunks
    kernel_march: str  # -march of the native kernels: native | x86-64-v3 | x86-64-v2
    device: str  # auto (cuda > mps > cpu) | cpu | cuda | mps
    strategy: str  # single | ddp (DistributedDataParallel, started with torchrun)
    amp: bool  # autocast on CUDA
    num_threads: int | None  # torch intra-op threads; None: all cores
    limit_train_sequences: int | None  # debug: use only the first N training sequences
    limit_val_sequences: int | None
    progress: bool  # tqdm bars


@dataclass
@yaml_defaults("logger/wandb.yaml", "wandb")
class WandbConfig:
    project: str
    entity: str | None
    mode: str  # offline (default, `wandb sync` later) | online | disabled
    group: str | None  # None: the sweep's name in a multirun
    watch: bool  # gradient/parameter watching (costly)
    watch_freq: int
    dir: str | None  # None: the run's output directory
    init_timeout: float  # seconds an online start may take before falling back offline


@dataclass
@yaml_defaults("logger/wandb.yaml")
class LoggerConfig:
    name: str  # wandb | none
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
@yaml_defaults("paths/default.yaml")
class PathsConfig:
    root_dir: str
    data_dir: str
    cache_dir: str
    log_dir: str
    output_dir: str


@dataclass
@yaml_defaults("train.yaml")
class TrainConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str
    seed: int
    tags: list[str]
    ckpt_path: str | None  # continue training from this checkpoint (same settings)
    finetune: bool  # with ckpt_path: take its weights only, start a new training
    resume: bool  # continue the run in paths.output_dir from its checkpoints/last.pt
    optimized_metric: str  # returned by train() for Hydra sweepers
    evaluate_test: bool  # evaluate the best model on the test sequence after training
    monitor: str  # evaluation monitors: none | spikes | norm | both


def _data_overrides() -> type:
    """DataConfig's keys, each optional (None: keep the checkpoint's), plus ``path`` (one file)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(DataConfig)
    fields = [(f.name, hints[f.name] | None, None) for f in dataclasses.fields(DataConfig)
              if not dataclasses.is_dataclass(hints[f.name])]
    cls = dataclasses.make_dataclass("DataOverrides", [("path", str | None, None), *fields])
    cls.__doc__ = "Overrides of a checkpoint's data settings (None: the checkpoint's value)."
    cls.__module__ = __name__
    return cls


DataOverrides = _data_overrides()


@dataclass
@yaml_defaults("evaluate.yaml", "trainer")
class EvalRunConfig:
    """How ``snnexp evaluate`` runs a checkpoint (what it learned comes from the checkpoint)."""

    device: str
    num_threads: int | None
    execution: str | None  # chunk | step; None: the checkpoint's
    engine: str  # auto | native | torch: what runs the chunks
    kernel_march: str  # native kernels' -march: native | x86-64-v3 | x86-64-v2


@dataclass
@yaml_defaults("evaluate.yaml")
class EvaluateConfig:
    ckpt: str  # checkpoint to evaluate (best.pt of a run)
    # overrides of the checkpoint's data settings, e.g. data.paths=[rec.aedat4] (or the
    # shortcut data.path=rec.aedat4); None keeps the checkpoint's value
    data: DataOverrides = field(default_factory=DataOverrides)  # type: ignore[valid-type]
    trainer: EvalRunConfig = field(default_factory=EvalRunConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str
    monitor: str
    expect_task: str | None  # refuse a checkpoint of another task (None: any)
    window: list[int] | None  # [start, end] step range reported as a window
    plots: bool
    video: bool  # also render each test sequence as video_<n>.mp4 (as snnexp view)


@dataclass
@yaml_defaults("simulate.yaml")
class SimulateConfig:
    data: DataConfig = field(default_factory=DataConfig)  # data.sim: the simulator settings
    output: str | None  # AEDAT4 file to write; None: the built-in recordings of `data`
    overwrite: bool
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str


@dataclass
@yaml_defaults("summarize.yaml")
class SummarizeConfig:
    dirs: list[str]  # multirun directories or run directories
    output: str | None  # where to write summary.csv / summary.png (default: dirs[0])
    sort_by: str
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str


# --------------------------------------------------------------------------- view / infer / export
EXPORT_FORMATS = ("torchscript", "onnx", "nir")


@dataclass
@yaml_defaults("view.yaml")
class ViewConfig:
    recording: str | None  # AEDAT4 file to render (None: data.paths[0] of data / ckpt)
    ckpt: str | None  # with a checkpoint: predicted horizon, angle and a strip chart
    data: DataConfig = field(default_factory=DataConfig)
    output: str | None  # video file (.mp4 or .gif); None: <run dir>/video.mp4
    overwrite: bool
    start_s: float  # first second of the recording shown
    duration_s: float | None  # seconds shown (None: to the end)
    fps: float  # video frames per second
    speed: float  # recording seconds per video second
    scale: float  # pixels per (downsampled) event-frame pixel
    contrast: float  # event count that reaches full colour
    progress: bool
    engine: str  # auto | native | torch: how the network runs (trainer.engine)
    device: str
    num_threads: int | None  # torch intra-op threads; None: all cores
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str


@dataclass
@yaml_defaults("infer.yaml")
class InferConfig:
    ckpt: str  # checkpoint (best.pt) whose network runs on the stream
    source: str  # PATH.aedat4 | camera | tcp://HOST:PORT
    camera_serial: str | None  # source=camera: open this camera (None: the first one)
    realtime: bool  # a file is replayed at its own speed instead of as fast as possible
    initial_angle: float | None  # start angle (deg) for streams without IMU
    duration_s: float | None  # stop after this much stream time (None: until it ends)
    execution: str  # chunk (engine, K = 1) | step (per-step reference path)
    max_batch_windows: int  # chunk: windows waiting while more data is there run as one chunk
    engine: str  # auto | native | torch: how the chunk path runs (trainer.engine)
    output: str | None  # CSV to write; None: <run dir>/predictions.csv
    overwrite: bool
    device: str
    num_threads: int | None  # torch intra-op threads; None: all cores
    progress: bool
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str


@dataclass
@yaml_defaults("export.yaml")
class ExportConfig:
    ckpt: str  # checkpoint (best.pt) to export
    format: str  # torchscript | onnx | nir
    output: str | None  # exported file; None: <run dir>/model.<pt|onnx|nir>
    overwrite: bool
    opset: int  # ONNX opset
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str
