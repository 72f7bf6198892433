"""Truncated backpropagation through time over one batch of sequences (docs/METHOD.md section 3).

Per sequence: reset every neuron, set the output integrator's membrane to the first label, then
feed windows 1 .. T-1. Every K steps: MSE of the K predictions against their labels, backward,
optimizer step, detach all neuron states, continue; a last shorter chunk takes the remainder.
The first ``transient`` fed steps are excluded from the loss and the metrics.
Without an optimizer the same procedure runs under ``torch.no_grad`` (validation, test).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from snnexp.errors import TrainingError

ChunkCallback = Callable[[float, int], None]  # (chunk loss, optimizer step number)


@dataclass
class SequenceOutput:
    """Predictions and targets of the fed steps 1 .. T-1 ([T-1, B], target units)."""

    preds: np.ndarray
    targets: np.ndarray
    valid_from: int  # first index into preds/targets that counts (= transient)
    optimizer_steps: int
    chunk_losses: list[float]

    @property
    def counted_preds(self) -> np.ndarray:
        return self.preds[self.valid_from:]

    @property
    def counted_targets(self) -> np.ndarray:
        return self.targets[self.valid_from:]


def chunk_bounds(num_steps: int, k: int) -> list[tuple[int, int]]:
    """[t0, t1) bounds of the chunks over steps 1 .. num_steps-1 (the last one may be shorter)."""
    return [(t0, min(t0 + k, num_steps)) for t0 in range(1, num_steps, k)]


def _forward(net: nn.Module, x: torch.Tensor, execution: str) -> torch.Tensor:
    # Through __call__ (the network dispatches on the rank), so wrappers such as
    # DistributedDataParallel see every forward and synchronise the gradients.
    if execution == "chunk":
        return net(x)
    return torch.stack([net(x[i]) for i in range(x.shape[0])])


def run_sequence(
    net: nn.Module,
    frames: torch.Tensor,
    labels: torch.Tensor,
    *,
    k: int,
    transient: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    execution: str = "chunk",
    grad_clip: float | None = None,
    amp: bool = False,
    on_chunk: ChunkCallback | None = None,
    step_offset: int = 0,
) -> SequenceOutput:
    """Run TBPTT (``optimizer`` given) or inference over one time-first batch.

    ``frames`` is [T, B, C, H, W] (any numeric dtype, on any device; each chunk is moved to the
    network's device and dtype), ``labels`` [T, B]. ``execution`` is ``chunk`` (the K steps of a
    chunk in one call) or ``step`` (one call per step, the reference loop). ``net`` may be
    wrapped (DistributedDataParallel); its state methods are reached through ``.module``.
    """
    core = getattr(net, "module", net)  # the network itself under a DDP wrapper
    param = next(net.parameters())
    device, dtype = param.device, param.dtype
    labels = labels.to(device=device, dtype=dtype)
    num_steps = frames.shape[0]
    training = optimizer is not None
    autocast = (torch.autocast(device_type="cuda", dtype=torch.float16)
                if amp and device.type == "cuda" else nullcontext())
    first_counted = transient + 1  # first step index whose prediction counts

    core.reset_state()
    core.set_output_membrane(labels[0])
    preds: list[torch.Tensor] = []
    losses: list[float] = []
    steps = 0
    for t0, t1 in chunk_bounds(num_steps, k):
        x = frames[t0:t1].to(device=device, non_blocking=True).to(dtype)
        with torch.set_grad_enabled(training), autocast:
            y = _forward(net, x, execution)
        y = y.to(dtype)
        lo = max(t0, first_counted) - t0
        if lo < t1 - t0:
            loss = F.mse_loss(y[lo:], labels[t0 + lo:t1])
            if training:
                value = _optimize(net, loss, optimizer, grad_clip, step_offset + steps, t0)
                steps += 1
            else:
                value = float(loss)
            losses.append(value)
            if on_chunk is not None:
                on_chunk(value, step_offset + steps)
        core.detach_state()
        preds.append(y.detach())
    out = torch.cat(preds).float().cpu().numpy() if preds else np.zeros((0, labels.shape[1]))
    return SequenceOutput(preds=out, targets=labels[1:].float().cpu().numpy(),
                          valid_from=min(transient, max(num_steps - 1, 0)),
                          optimizer_steps=steps, chunk_losses=losses)


def _optimize(net: nn.Module, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
              grad_clip: float | None, step: int, t0: int) -> float:
    value = float(loss.detach())
    if not np.isfinite(value):
        raise TrainingError(f"the loss became {value} at optimizer step {step + 1} "
                            f"(sequence step {t0}); training stopped and the last good "
                            "checkpoint was kept: lower optimizer.lr or set trainer.grad_clip")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    optimizer.step()
    return value
