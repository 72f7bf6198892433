"""Classification: decoders, TBPTT with a loss on each sample's decoded sequence, metrics.

The network's head has one non-spiking integrator per class; its membranes ``[T, B, C]`` are
*decoded* over each sample's real (unpadded) steps into class scores ``[B, C]``:

- ``max``: the largest membrane of each output over time;
- ``mean``: the mean membrane over time;
- ``last``: the membrane at the sample's last step.

Padding: a batch is padded with empty frames at the end to its longest sample, and a mask
(``t < length``) removes the padded steps from every decoder, so a sample's scores do not
depend on what it is batched with (the batch dimension never mixes samples).

Truncation (``trainer.tbptt_k`` = K): the sequence runs in chunks of K steps; the decoder keeps
a running max / sum / last value over the chunks seen so far, whose history is detached at each
chunk boundary like the neuron states. ``task.loss_at=chunk`` (default): after every chunk, the
cross-entropy of the scores decoded so far, over the samples that had a real step in the chunk,
then backward and an optimizer step: every chunk gets a gradient, and the last chunk's loss is
the loss of the whole decoded sequence (its value equals the untruncated one; only gradients
through earlier chunks are cut, as for regression). ``task.loss_at=end``: a sample's loss is
taken only in the chunk holding its last real step (one term per sample), so gradients reach
only the steps of that chunk. ``trainer.transient`` first steps of a sample are left out of the
decoders (never its last step).
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from snnexp.config.schema import DECODERS, TONIC_DATASETS
from snnexp.errors import ConfigError
from snnexp.training.loop import Trainer
from snnexp.training.tbptt import _forward, _optimize

NEG = -1e30  # "minus infinity" that keeps 0 * NEG finite


def valid_mask(lengths: torch.Tensor, steps: int, transient: int = 0) -> torch.Tensor:
    """Bool [steps, B]: a real step that the decoders count (``transient`` <= t < length,
    and always the sample's last step)."""
    t = torch.arange(steps, device=lengths.device).unsqueeze(1)
    lengths = lengths.unsqueeze(0)
    return ((t < lengths) & (t >= transient)) | (t == lengths - 1)


def decode(out: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """Scores [B, C] of membranes ``out`` [T, B, C] over the True steps of ``mask`` [T, B]."""
    m = mask.unsqueeze(-1).to(out.dtype)
    if kind == "max":
        return (out * m + NEG * (1 - m)).amax(0)
    if kind == "mean":
        return (out * m).sum(0) / m.sum(0).clamp_min(1)
    if kind == "last":
        idx = (torch.arange(out.shape[0], device=out.device).unsqueeze(1) * mask).amax(0)
        return out.gather(0, idx.view(1, -1, 1).expand(1, *out.shape[1:]))[0]
    raise ConfigError(f"config key 'task.decoder' = {kind!r} is invalid: allowed values are "
                      f"{', '.join(DECODERS)}")


class RunningDecoder:
    """:func:`decode` over a sequence fed chunk by chunk, with the history detached between
    chunks (see the module docstring): ``update`` returns the scores decoded so far."""

    def __init__(self, kind: str) -> None:
        if kind not in DECODERS:
            decode(torch.zeros(1, 1, 1), torch.ones(1, 1, dtype=torch.bool), kind)  # raises
        self.kind = kind
        self.value: torch.Tensor | None = None
        self.count: torch.Tensor | None = None

    def update(self, out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(out.dtype)
        seen = m.sum(0)
        if self.kind == "max":
            cur = (out * m + NEG * (1 - m)).amax(0)
            new = cur if self.value is None else torch.maximum(self.value.detach(), cur)
            self.value = new
            return new
        if self.kind == "mean":
            cur = (out * m).sum(0)
            total = cur if self.value is None else self.value.detach() + cur
            self.count = seen if self.count is None else self.count + seen
            self.value = total
            return total / self.count.clamp_min(1)
        cur = decode(out, mask, "last")
        has = seen > 0
        new = cur if self.value is None else torch.where(has, cur, self.value.detach())
        self.value = new
        return new


@dataclass
class ClassOutput:
    """Scores [B, C] of a batch (decoded over the whole sequences) and the TBPTT bookkeeping."""

    scores: np.ndarray
    loss: float  # cross-entropy of ``scores`` (the whole decoded sequences)
    optimizer_steps: int = 0
    chunk_losses: list[float] = field(default_factory=list)


def run_classification(net: nn.Module, frames: torch.Tensor, lengths: torch.Tensor,
                       labels: torch.Tensor, *, k: int, decoder: str = "max",
                       loss_at: str = "chunk", transient: int = 0,
                       optimizer: torch.optim.Optimizer | None = None,
                       execution: str = "chunk", grad_clip: float | None = None,
                       amp: bool = False, step_offset: int = 0,
                       ctx: Any = None) -> ClassOutput:
    """TBPTT (``optimizer`` given) or inference of one padded batch (module docstring).

    ``frames`` [T, B, C, H, W], ``lengths`` [B] real steps per sample, ``labels`` [B] class
    indices. All T steps are fed (no initial label: the integrators start at 0).

    ``ctx`` (a :class:`~snnexp.training.distributed.DistContext` of several DDP ranks, each
    with its own batch): every rank pads its batch to the longest of all ranks and takes an
    optimizer step at every chunk where any rank has a loss (DDP averages the gradients of
    every backward over the ranks, so all must run the same number); each chunk's loss is
    the sum over the rank's samples divided by the number of samples of all ranks, times the
    number of ranks, so the averaged gradient is that of one process holding all the batches.
    """
    training = optimizer is not None
    distributed = training and ctx is not None and ctx.enabled
    if distributed:
        from snnexp.training import distributed as dist

        longest = dist.reduce_int(ctx, frames.shape[0], "max")
        if longest > frames.shape[0]:
            pad = frames.new_zeros((longest - frames.shape[0], *frames.shape[1:]))
            frames = torch.cat([frames, pad])
    core = getattr(net, "module", net)
    param = next(net.parameters())
    device, dtype = param.device, param.dtype
    labels = labels.to(device)
    lengths = lengths.to(device)
    steps = frames.shape[0]
    mask = valid_mask(lengths, steps, transient)
    last_step = lengths - 1
    autocast = (torch.autocast(device_type="cuda", dtype=torch.float16)
                if amp and device.type == "cuda" else nullcontext())
    core.reset_state()
    running = RunningDecoder(decoder)
    losses: list[float] = []
    n_opt = 0
    scores = None
    for t0 in range(0, steps, k):
        t1 = min(t0 + k, steps)
        x = frames[t0:t1].to(device=device, non_blocking=True).to(dtype)
        with torch.set_grad_enabled(training), autocast:
            y = _forward(net, x, execution).to(dtype)
            scores = running.update(y, mask[t0:t1])
        if loss_at == "end":
            take = (last_step >= t0) & (last_step < t1)
        else:
            take = mask[t0:t1].any(0)
        if distributed:
            total_take = dist.reduce_int(ctx, int(take.sum()))
            if total_take:
                # a rank without a sample in this chunk still steps (a zero loss on its graph)
                loss = (F.cross_entropy(scores[take], labels[take], reduction="sum")
                        * ctx.world_size / total_take) if bool(take.any()) else scores.sum() * 0
                losses.append(_optimize(net, loss, optimizer, grad_clip, step_offset + n_opt,
                                        t0))
                n_opt += 1
        elif training and bool(take.any()):
            loss = F.cross_entropy(scores[take], labels[take])
            losses.append(_optimize(net, loss, optimizer, grad_clip, step_offset + n_opt, t0))
            n_opt += 1
        core.detach_state()
    assert scores is not None
    scores = scores.detach().float()
    total = float(F.cross_entropy(scores, labels))
    return ClassOutput(scores.cpu().numpy(), total, n_opt, losses)


# ----------------------------------------------------------------------------- metrics
def accuracy_metrics(scores: np.ndarray, labels: np.ndarray, classes: list[str]
                     ) -> dict[str, Any]:
    """Top-1 (and top-5 with more than 5 classes) accuracy, cross-entropy, per-class accuracy
    and the confusion matrix (rows: true class, columns: predicted)."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(classes)
    pred = scores.argmax(1)
    out: dict[str, Any] = {"acc": float(np.mean(pred == labels)) if len(labels) else math.nan}
    if n > 5:
        top5 = np.argsort(-scores, axis=1)[:, :5]
        out["acc_top5"] = float(np.mean((top5 == labels[:, None]).any(1)))
    logp = torch.log_softmax(torch.from_numpy(scores).double(), 1).numpy()
    out["loss"] = float(-np.mean(logp[np.arange(len(labels)), labels])) if len(labels) else math.nan
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    out["per_class"] = {c: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum()
                            else None) for i, c in enumerate(classes)}
    out["confusion"] = confusion.tolist()
    out["samples"] = int(len(labels))
    return out


def plot_confusion(confusion: np.ndarray, classes: list[str], path: Path) -> Path:
    """The confusion matrix as a PNG (counts in the cells, rows = true class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * n, 1.0 + 0.55 * n))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = confusion.max() if confusion.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center",
                    color="white" if confusion[i, j] > top / 2 else "black", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@torch.no_grad()
def predict(net: nn.Module, batches: Any, *, k: int, decoder: str, transient: int = 0,
            execution: str = "chunk", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, C], labels [N]) of every sample of ``batches`` (eval mode)."""
    net.eval()
    scores, labels = [], []
    for frames, lengths, y in batches:
        out = run_classification(net, frames, lengths, y, k=k, decoder=decoder,
                                 transient=transient, execution=execution)
        scores.append(out.scores)
        labels.append(y.numpy())
        if limit is not None and sum(len(s) for s in scores) >= limit:
            break
    return np.concatenate(scores), np.concatenate(labels)


def evaluate_classification(net: nn.Module, data: Any, out_dir: str | Path, *, k: int,
                            decoder: str, transient: int = 0, execution: str = "chunk",
                            plots: bool = True) -> dict[str, Any]:
    """Test ``net`` on ``data``'s test samples; write metrics.json, predictions.csv and the
    confusion-matrix PNG to ``out_dir``; return the metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores, labels = predict(net, data.test_batches(), k=k, decoder=decoder,
                             transient=transient, execution=execution)
    m = accuracy_metrics(scores, labels, data.classes)
    m["classes"] = list(data.classes)
    (out_dir / "metrics.json").write_text(json.dumps(m, indent=1))
    names = data.test_names()
    with open(out_dir / "predictions.csv", "w") as fh:
        fh.write("sample,file,true,predicted,correct\n")
        for i, (s, y) in enumerate(zip(scores, labels)):
            p = int(s.argmax())
            fh.write(f"{i},{names[i]},{data.classes[y]},{data.classes[p]},{int(p == y)}\n")
    if plots:
        plot_confusion(np.asarray(m["confusion"]), data.classes, out_dir / "confusion.png")
    return m


# ----------------------------------------------------------------------------- trainer
def _folders(cfg: Any, seed: int, num_classes: int | None, classes: list[str] | None) -> Any:
    from snnexp.data.classification import build_class_data

    return build_class_data(cfg, seed=seed, num_classes=num_classes, classes=classes)


def _mnist(cfg: Any, seed: int, num_classes: int | None, classes: list[str] | None) -> Any:
    from snnexp.data.images import build_mnist

    return build_mnist(cfg, seed, num_classes)


def _tonic(cfg: Any, seed: int, num_classes: int | None, classes: list[str] | None) -> Any:
    from snnexp.data.tonic_data import build_tonic

    return build_tonic(cfg, seed, num_classes, classes)


# data.dataset -> the builder of its data (one entry per value of schema.CLASS_DATASETS)
CLASS_DATA = {"folders": _folders, "mnist": _mnist, **dict.fromkeys(TONIC_DATASETS, _tonic)}


def build_task_data(cfg: Any, seed: int, num_classes: int | None = None,
                    classes: list[str] | None = None) -> Any:
    """The classification data of ``data.dataset`` (:data:`CLASS_DATA`): class folders, MNIST
    (encoded) or a tonic dataset."""
    builder = CLASS_DATA.get(str(cfg.dataset))
    if builder is None:
        raise ConfigError(f"config key 'data.dataset' = {cfg.dataset!r} is invalid: allowed "
                          f"values are {', '.join(CLASS_DATA)}")
    return builder(cfg, seed, num_classes, classes)


class ClassificationTrainer(Trainer):
    """The training recipe of :class:`Trainer` for ``task=classification``: class data, a head
    of ``num_classes`` integrators, cross-entropy on decoded scores, accuracy metrics."""

    def build_data(self) -> Any:
        return build_task_data(self.cfg.data, self.cfg.seed, self.cfg.task.num_classes)

    def build_net(self) -> nn.Module:
        from snnexp.models import build_network

        return build_network(self.cfg.model, self.cfg.norm, tuple(self.data.input_shape),
                             outputs=self.data.num_classes)

    def score(self, val_metrics: dict[str, float]) -> float:
        if self.cfg.task.select_by == "loss":
            return val_metrics["val/loss"]
        return -val_metrics["val/acc"]

    def best_metrics(self) -> dict[str, float]:
        best = next((r for r in self.history if r["epoch"] == self.best_epoch), None)
        if best is None:
            return {"val/acc_best": math.nan, "val/loss_best": math.nan}
        return {"val/acc_best": best["val/acc"], "val/loss_best": best["val/loss"]}

    def epoch_line(self, record: dict[str, Any]) -> str:
        return (f"epoch {record['epoch']}: train loss {record['train/loss']:.4f}  val acc "
                f"{record['val/acc']:.3f} loss {record['val/loss']:.4f}  (best acc "
                f"{record['val/acc_best']:.3f} @ {self.best_epoch}, {record['time_s']:.1f} s)")

    def data_meta(self) -> dict[str, Any]:
        return self.data.meta()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        from snnexp.training import distributed as dist
        from snnexp.training.loop import _progress

        t, task = self.cfg.trainer, self.cfg.task
        self.net.train()
        lr = self.optimizer.param_groups[0]["lr"]
        batches = self._limited(self.data.train_batches(epoch, self.ctx.rank,
                                                        self.ctx.world_size),
                                t.limit_train_sequences, self.ctx.world_size)
        total = math.ceil(self.data.num_train_sequences / self.ctx.world_size
                          / self.cfg.data.batch_size)
        bar = _progress(batches, total, f"epoch {epoch} train", t.progress and self.is_main)
        losses, correct, seen = [], 0, 0
        for frames, lengths, labels in bar:
            out = run_classification(self.model, frames, lengths, labels, k=t.tbptt_k,
                                     decoder=task.decoder, loss_at=task.loss_at,
                                     transient=t.transient, optimizer=self.optimizer,
                                     execution=t.execution, grad_clip=t.grad_clip, amp=t.amp,
                                     step_offset=self.global_step, ctx=self.ctx)
            self.global_step += out.optimizer_steps
            for value in out.chunk_losses:
                self.logger.log_chunk(self.global_step, value, lr)
            losses.append(out.loss)
            correct += int((out.scores.argmax(1) == labels.numpy()).sum())
            seen += len(labels)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        dist.sync_buffers(self.ctx, self.net)
        loss = dist.mean_over_ranks(self.ctx, float(np.mean(losses)) if losses else math.nan)
        return {"train/loss": loss, "train/acc": correct / max(seen, 1), "lr": lr}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        t = self.cfg.trainer
        scores, labels = predict(self.net, self.data.val_batches(), k=t.tbptt_k,
                                 decoder=self.cfg.task.decoder, transient=t.transient,
                                 execution=t.execution, limit=t.limit_val_sequences)
        m = accuracy_metrics(scores, labels, self.data.classes)
        out = {"val/acc": m["acc"], "val/loss": m["loss"]}
        if "acc_top5" in m:
            out["val/acc_top5"] = m["acc_top5"]
        return out

    def test(self) -> dict[str, Any]:
        from snnexp.training import checkpoint as ckpt
        from snnexp.training.loop import BEST

        if not self.is_main:
            return {}
        best = ckpt.load_checkpoint(self.ckpt_dir / BEST, map_location=self.device)
        self.net.load_state_dict(best["model"])
        t = self.cfg.trainer
        m = evaluate_classification(self.net, self.data, self.output_dir / "test",
                                    k=t.tbptt_k, decoder=self.cfg.task.decoder,
                                    transient=t.transient, execution=t.execution)
        metrics = {f"test/{key}": m[key] for key in ("acc", "acc_top5", "loss", "samples")
                   if key in m}
        self.logger.log_summary(metrics)
        self.logger.log_images({"confusion": self.output_dir / "test" / "confusion.png"})
        metrics["test/per_class"] = m["per_class"]
        return metrics
