"""Normalisation layers: BatchNorm (per time step), RMSNorm, MultiplyBy and none.

All follow the temporal calling convention of :mod:`snnexp.models.neurons`: ``norm(x)`` for one
step (``x`` is ``[B, C, H, W]``), ``norm(x, steps)`` for a chunk flattened time-major
(``[steps * B, C, H, W]``). Only BatchNorm depends on the time structure (its batch statistics
are per time step); the others are per sample and ignore ``steps``.
Parameter names and shapes follow the reference notebook, so state dicts look alike.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from snnexp.config.schema import NORM_KINDS, NormConfig
from snnexp.errors import ConfigError


class _PerStepBatchNorm(torch.autograd.Function):
    """Training batch norm of ``x`` [K, B, C, L] with statistics per (step k, channel c).

    Same arithmetic as PyTorch's CPU kernel: y = x * scale + shift with the biased variance.
    Returns (y, mean [K, C], biased var [K, C]); only y is differentiable.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        row_var, row_mean = torch.var_mean(x, dim=3, correction=0)  # [K, B, C], contiguous
        mean = row_mean.mean(dim=1)  # equal-size groups: combine exactly over B
        var = row_var.mean(dim=1) + (row_mean - mean[:, None]).square().mean(dim=1)
        rstd = torch.rsqrt(var + eps)
        scale = rstd if weight is None else rstd * weight
        shift = -mean * scale if bias is None else bias - mean * scale
        y = torch.addcmul(shift[:, None, :, None], x, scale[:, None, :, None])
        ctx.save_for_backward(x, mean, rstd, scale)
        ctx.affine = (weight is not None, bias is not None)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: torch.Tensor, _dmean: torch.Tensor, _dvar: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, None]:
        x, mean, rstd, scale = ctx.saved_tensors
        n = x.shape[1] * x.shape[3]
        dy = dy.contiguous()
        sum_dy = dy.sum(dim=3).sum(dim=1)  # [K, C]
        xc = x - mean[:, None, :, None]
        # sum of dy * (x - mean) per (k, c) as batched dot products (no temporary)
        dot = torch.matmul(dy.unsqueeze(-2), xc.unsqueeze(-1)).view(x.shape[:3]).sum(dim=1)
        # dx = scale * (dy - mean(dy) - (x - mean) * mean(dy * (x - mean)) * rstd^2), in place
        a = (-scale * dot * rstd.square() / n)[:, None, :, None]
        c = (-scale * sum_dy / n)[:, None, :, None]
        dx = torch.addcmul(c, xc, a, out=xc).addcmul_(dy, scale[:, None, :, None])
        has_weight, has_bias = ctx.affine
        grad_weight = (dot * rstd).sum(dim=0) if has_weight else None
        grad_bias = sum_dy.sum(dim=0) if has_bias else None
        return dx, grad_weight, grad_bias, None


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that, on a chunk, normalises each time step with its own statistics.

    The step-by-step reference sees one batch per time step, so in training a chunk of K steps
    must use K sets of batch statistics (not one over K * B) and update the running statistics
    K times in order (momentum update with the unbiased variance, as ``nn.BatchNorm2d`` does).
    Here the K normalisations run as one vectorised autograd function (no copies, no loop) and
    the K running-statistics updates are applied in closed form. In eval mode (running
    statistics) a chunk is an ordinary batch.
    """

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        batch_stats = self.training or not self.track_running_stats
        if steps is None or steps == 1 or not batch_stats:
            return super().forward(x)
        self._check_input_dim(x)
        n = x.shape[0] // steps * x.shape[2] * x.shape[3]  # values per (step, channel)
        if n <= 1:
            raise ValueError("Expected more than 1 value per channel when training, got input "
                             f"size {[x.shape[0] // steps, *x.shape[1:]]} per time step")
        weight, bias = (self.weight, self.bias) if self.affine else (None, None)
        xs = x.reshape(steps, -1, x.shape[1], x.shape[2] * x.shape[3])  # [K, B, C, H * W]
        y, mean, var = _PerStepBatchNorm.apply(xs, weight, bias, self.eps)
        self.record_batch_stats(mean, var, n)
        return y.view(x.shape)

    def record_batch_stats(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        """Update the running statistics from a chunk's per-step ``mean`` / biased ``var``
        ([K, C], ``n`` values each), as K sequential steps would."""
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self._update_running_stats(mean, var * (n / (n - 1)))

    def _update_running_stats(self, means: torch.Tensor, variances: torch.Tensor) -> None:
        """Apply ``r <- (1 - f_k) r + f_k s_k`` for k = 1..K at once: r_K = c r_0 + sum w_k s_k."""
        steps = means.shape[0]
        if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
            n0 = int(self.num_batches_tracked)
            factors = [1.0 / (n0 + k) for k in range(1, steps + 1)]
        else:
            factors = [float(self.momentum)] * steps
        self.num_batches_tracked.add_(steps)
        weights, tail = [], 1.0
        for f in reversed(factors):  # K python floats, no tensor work
            weights.append(f * tail)
            tail *= 1.0 - f
        w = torch.tensor(weights[::-1], dtype=means.dtype, device=means.device)
        self.running_mean.mul_(tail).add_((w @ means).to(self.running_mean.dtype))
        self.running_var.mul_(tail).add_((w @ variances).to(self.running_var.dtype))


class RMSNorm2d(nn.Module):
    """Per sample and channel ``x / sqrt(mean_HW(x^2) + eps)``, times an optional learnable
    per-channel weight (init 1). No running statistics: training and eval behave alike."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        if affine:
            self.weight = nn.Parameter(torch.ones(1, num_features, 1, 1))
        else:
            self.register_parameter("weight", None)

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        scale = torch.rsqrt(x.square().mean(dim=(2, 3), keepdim=True) + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        return x * scale

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}"


class MultiplyBy(nn.Module):
    """Multiply by one scalar, learnable (a parameter) or fixed (a non-persistent buffer).

    Replaces normalisation by a gain that lets the following neurons reach the threshold.
    """

    def __init__(self, scale_value: float = 5.0, learnable: bool = True) -> None:
        super().__init__()
        value = torch.tensor([float(scale_value)])
        if learnable:
            self.weight = nn.Parameter(value)
        else:
            self.register_buffer("weight", value, persistent=False)

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return x * self.weight

    def extra_repr(self) -> str:
        return f"learnable={isinstance(self.weight, nn.Parameter)}"


class NoNorm(nn.Module):
    """Identity, kept as a module so that monitors see the same layers for every norm kind."""

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return x


NORM_CLASSES = (BatchNorm2d, RMSNorm2d, MultiplyBy, NoNorm)


def make_norm(cfg: NormConfig, channels: int) -> nn.Module:
    """The norm layer of kind ``cfg.kind`` (bn | rms | mul | none) for ``channels`` channels."""
    if cfg.kind not in NORM_KINDS:
        raise ConfigError(f"config key 'norm.kind' = {cfg.kind!r} is invalid: allowed values are "
                          f"{', '.join(NORM_KINDS)} (e.g. norm=rms)")
    if not (math.isfinite(cfg.eps) and cfg.eps > 0):
        raise ConfigError(f"config key 'norm.eps' = {cfg.eps!r} is invalid: must be a positive "
                          "finite number")
    if cfg.kind == "bn":
        if cfg.momentum is not None and not 0.0 <= cfg.momentum <= 1.0:
            raise ConfigError(f"config key 'norm.momentum' = {cfg.momentum!r} is invalid: must "
                              "be in [0, 1] (or null: cumulative average)")
        return BatchNorm2d(channels, eps=cfg.eps, momentum=cfg.momentum, affine=cfg.learnable)
    if cfg.kind == "rms":
        return RMSNorm2d(channels, eps=cfg.eps, affine=cfg.learnable)
    if cfg.kind == "mul":
        if not math.isfinite(cfg.init_scale):
            raise ConfigError(f"config key 'norm.init_scale' = {cfg.init_scale!r} is invalid: "
                              "must be a finite number")
        return MultiplyBy(cfg.init_scale, learnable=cfg.learnable)
    return NoNorm()
