"""Every config schema of snnexp, in one place.

The YAML files under ``conf/`` fill these dataclasses. The CLI registers them with Hydra's
ConfigStore so that a typo'd key or a wrongly typed value fails at compose time, and
:func:`snnexp.config.validate.validate` checks the value ranges, naming the key and the allowed
values. Library code receives these dataclasses (via :func:`snnexp.config.validate.to_schema`),
so it can be called and tested without Hydra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

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
CLASS_DATASETS = ("folders", "mnist")
ENCODERS = ("poisson", "latency", "constant_current")
MOTIONS = ("roll_left", "roll_right", "pan_left", "pan_right", "tilt_up", "tilt_down")


@dataclass
class SimConfig:
    """The built-in simulated recording (a DAVIS346-like camera rolling in front of a horizon)."""

    duration_s: float = 60.0  # length of the recording in seconds
    width: int = 346  # sensor width in pixels
    height: int = 260  # sensor height in pixels
    seed: int = 0  # all randomness of the simulation derives from this
    camera_name: str = "DAVIS346_SIM"  # camera name written into the AEDAT4 file
    # roll range of the simulated motion: inside the reference's [-180, 0] deg, kept clear of
    # +-180 deg where the roll formula (atan2) wraps and the label would jump from 1 to -1
    roll_min_deg: float = -170.0
    roll_max_deg: float = -10.0
    max_speed_deg_s: float = 90.0  # peak roll speed
    render_rate_hz: float = 1000.0  # rate at which the scene is rendered to generate events
    contrast_threshold: float = 0.25  # log-intensity change that fires one event
    threshold_sigma: float = 0.03  # per-pixel threshold mismatch (std)
    noise_rate_hz: float = 0.1  # background-activity noise events per pixel per second
    imu_rate_hz: float = 1000.0  # IMU sample rate
    gyro_noise_deg_s: float = 0.2  # gyroscope white noise (std, deg/s)
    gyro_bias_deg_s: float = 0.3  # gyroscope constant bias magnitude (deg/s)
    accel_noise_g: float = 0.01  # accelerometer white noise (std, g)


@dataclass
class AugmentConfig:
    """Event-level augmentation of training sequences (off at 0; see snnexp.data.framing)."""

    polarity_swap: float = 0.0  # probability that a sequence's ON / OFF channels are swapped
    shift_px: int = 0  # each sequence shifted by up to this many input pixels in x and y
    drop: float = 0.0  # probability that an event is dropped
    noise_hz: float = 0.0  # noise events added per input pixel and second


@dataclass
class ClassSimConfig:
    """The built-in classification data: short simulated clips, one class per camera motion."""

    motions: list[str] = field(default_factory=lambda: list(MOTIONS))  # the classes
    samples_per_class: int = 40  # clips per class
    scenes: int = 8  # different textured scenes (seeds) the clips are drawn from
    duration_s: list[float] = field(default_factory=lambda: [0.3, 0.6])  # [min, max] per clip
    speed: list[float] = field(default_factory=lambda: [0.6, 1.4])  # [min, max] relative speed
    width: int = 64  # sensor width in pixels
    height: int = 48  # sensor height in pixels
    seed: int = 0  # all randomness of the clips derives from this


@dataclass
class DataConfig:
    """Recordings and how they become labelled, batched event frames."""

    paths: list[str] = field(default_factory=list)  # files, folders, globs or builtin:SEED
    val_paths: list[str] = field(default_factory=list)  # whole recordings for validation
    test_paths: list[str] = field(default_factory=list)  # whole held-out recordings for test
    split_by: str = "time"  # time (each recording split by `split`) | recording (whole ones)
    builtin_dir: str = "data"  # where builtin:SEED recordings are simulated to
    sim: SimConfig = field(default_factory=SimConfig)
    window_us: int = 10_000  # length of one time window (= one frame = one time step)
    downsample: int = 1  # spatial downsampling factor (counts summed over factor x factor pixels)
    trim_start: int = 0  # windows dropped at the start of each recording
    trim_end: int = 0  # windows dropped at the end (the reference drops 2500)
    target: str = "roll"  # roll | pitch | yaw | optical_roll
    target_scale: float = -1.0 / math.pi  # y = target_scale * angle_rad + target_offset
    target_offset: float = 0.0
    madgwick_gain: float = 0.033
    split: list[float] = field(default_factory=lambda: [0.88, 0.07, 0.05])  # train, val, test
    seq_length: int = 2000  # windows per training / validation sequence
    batch_size: int = 4
    num_workers: int = 0  # DataLoader processes building training batches (0: in-process)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache: bool = True  # cache events + labels on disk, keyed by content hash and settings
    cache_dir: str = ".cache/snnexp"
    cache_limit_gb: float = 100.0  # refuse to build a cache entry estimated above this size
    classes: ClassSimConfig = field(default_factory=ClassSimConfig)  # builtin:classes (task)
    dataset: str = "folders"  # classification: folders (a folder per class) | mnist (IDX files)
    root: str = "data/mnist"  # dataset=mnist: the folder of its IDX files
    encoder: str = "poisson"  # static images -> spikes: poisson | latency | constant_current
    num_steps: int = 25  # time steps per encoded image
    encoder_gain: float = 1.0  # poisson: spike probability per unit intensity; LIF: current
    limit_samples: int | None = None  # use only the first N images of each set (debugging)


@dataclass
class TaskConfig:
    """What the network learns: regression of the orientation, or classification of samples."""

    name: str = "regression"  # regression | classification
    num_classes: int | None = None  # classification: None = as many as the data has
    decoder: str = "max"  # max | mean | last: output membranes over time -> class scores
    loss_at: str = "chunk"  # chunk: every TBPTT chunk, on the decoded-so-far scores | end
    select_by: str = "acc"  # best checkpoint / early stopping on val accuracy | val loss


@dataclass
class StageConfig:
    """One stage of the network (see REFERENCE.md section 2)."""

    channels: int = 16
    up_kernel_size: int = 3  # kernel of the channel-adapting conv (1 or 3)
    mid_channels: int = 16
    num_blocks: int = 1
    block_type: str | None = None  # None: the model's block_type
    k_pool: int = 2
    stride_1: int = 1
    stride_2: int = 1


@dataclass
class SurrogateConfig:
    name: str = "atan"  # atan | sigmoid | triangular | fast_sigmoid
    alpha: float | None = None  # width / slope; None: the surrogate's own default


@dataclass
class NeuronConfig:
    kind: str = "lif"  # lif | plif (parametric LIF, learnable tau)
    tau: float = 2.0
    tau_out: float = 20.0  # time constant of the non-spiking output integrator
    reset: str = "soft"  # soft (v_reset None) | hard (v_reset 0.0, the notebook's effective one)
    v_threshold: float = 1.0
    detach_reset: bool = True
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)


def _default_stages() -> list[StageConfig]:
    return [
        StageConfig(16, 3, 16, 1, None, 2, 2, 1),
        StageConfig(16, 1, 16, 1, None, 1, 1, 1),
        StageConfig(24, 1, 24, 1, None, 2, 1, 1),
        StageConfig(32, 1, 32, 1, None, 2, 1, 1),
    ]


@dataclass
class ModelConfig:
    block_type: str = "sew"  # sew | plain | spiking
    connect_f: str = "ADD"  # SEW combine: ADD | AND | IAND
    stages: list[StageConfig] = field(default_factory=_default_stages)
    hidden: int = 512
    neuron: NeuronConfig = field(default_factory=NeuronConfig)


@dataclass
class NormConfig:
    kind: str = "bn"  # bn | rms | mul | none
    learnable: bool = True  # affine parameters (bn, rms) / learnable scalar (mul)
    eps: float = 1e-5
    init_scale: float = 5.0  # mul: initial value of the scalar
    momentum: float = 0.1  # bn: running-statistics momentum


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam | sgd
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam only


@dataclass
class SchedulerConfig:
    name: str = "plateau"  # plateau | cosine | none
    factor: float = 0.5  # plateau
    patience: int = 1  # plateau
    min_lr: float = 1e-6  # plateau and cosine (eta_min)


@dataclass
class TrainerConfig:
    max_epochs: int = 30
    tbptt_k: int = 10  # backward + optimizer step every K steps
    transient: int = 0  # warm-up steps per sequence excluded from loss and metrics
    grad_clip: float | None = None  # max gradient norm; None: no clipping
    early_stopping_patience: int = 10  # epochs without val-MSE improvement
    checkpoint_every: int = 10  # periodic checkpoint every N epochs (0: never)
    execution: str = "chunk"  # chunk (fast, K steps at once) | step (per-step reference loop)
    engine: str = "auto"  # auto | native (C++ kernels, CPU) | torch: what runs the chunks
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | mps
    strategy: str = "single"  # single | ddp (DistributedDataParallel, started with torchrun)
    amp: bool = False  # autocast on CUDA
    num_threads: int | None = None  # torch intra-op threads; None: all cores
    limit_train_sequences: int | None = None  # debug: use only the first N training sequences
    limit_val_sequences: int | None = None
    progress: bool = True  # tqdm bars


@dataclass
class WandbConfig:
    project: str = "snnexp"
    entity: str | None = None
    mode: str = "offline"  # offline (default, `wandb sync` later) | online | disabled
    group: str | None = None  # None: the sweep's name in a multirun
    watch: bool = False  # gradient/parameter watching (costly)
    watch_freq: int = 100
    dir: str | None = None  # None: the run's output directory
    init_timeout: float = 30.0  # seconds an online start may take before falling back offline


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class PathsConfig:
    root_dir: str = "."
    data_dir: str = "data"
    cache_dir: str = ".cache/snnexp"
    log_dir: str = "outputs"
    output_dir: str = "outputs"


@dataclass
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
    task_name: str = "train"
    seed: int = 0
    tags: list[str] = field(default_factory=list)
    ckpt_path: str | None = None  # resume training from this checkpoint
    resume: bool = False  # continue the run in paths.output_dir from its checkpoints/last.pt
    optimized_metric: str = "val/mse_best"  # returned by train() for Hydra sweepers
    evaluate_test: bool = True  # evaluate the best model on the test sequence after training
    monitor: str = "none"  # evaluation monitors: none | spikes | norm | both
    debug: bool = False  # full tracebacks


@dataclass
class EvaluateConfig:
    ckpt: str = "???"  # checkpoint to evaluate (best.pt of a run)
    data: dict[str, Any] = field(default_factory=dict)  # overrides of the checkpoint's data
    # settings, e.g. data.paths=[rec.aedat4] (or the shortcut data.path=rec.aedat4)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=lambda: LoggerConfig(name="none"))
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str = "evaluate"
    monitor: str = "both"
    expect_task: str | None = None  # refuse a checkpoint of another task (None: any)
    window: list[int] | None = None  # [start, end] step range reported as a window
    plots: bool = True
    debug: bool = False


@dataclass
class SimulateConfig:
    data: DataConfig = field(default_factory=DataConfig)  # data.sim: the simulator settings
    output: str | None = None  # AEDAT4 file to write; None: the built-in recordings of `data`
    overwrite: bool = False
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str = "simulate"
    debug: bool = False


@dataclass
class SummarizeConfig:
    dirs: list[str] = field(default_factory=list)  # multirun directories or run directories
    output: str | None = None  # where to write summary.csv / summary.png (default: dirs[0])
    sort_by: str = "val/mse_best"
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str = "summarize"
    debug: bool = False
