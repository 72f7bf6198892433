"""``norm -> neuron`` (and a stem's ``conv -> norm -> neuron``) as one fused kernel call on a
chunk when that is exact and observable.

Blocks call :func:`norm_neuron` where a norm feeds a spiking neuron directly. A per-step
BatchNorm followed by a LIF then runs as one native pass (training: batch statistics and the
running-statistics update; inference without autograd: the BatchNorm folded into the neuron).
In inference, a stem layer (conv3x3 of a few-channel input, eval BatchNorm, LIF) runs as one
conv + LIF kernel that never writes the convolution's output (:func:`can_fuse_conv`), and a
conv3x3 whose input is spikes sums table entries instead of multiplying (:func:`conv_chunk`).
Otherwise, and whenever a hook watches either module (e.g. :class:`Monitors` recording norm
statistics), the two modules run one after the other, so hooks see what they expect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as nn_module

from snnexp.engine import functions as kernels
from snnexp.engine import native
from snnexp.models.neurons import SpikingNeuron
from snnexp.models.norms import BatchNorm2d


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


def _global_hooks() -> bool:
    return bool(nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks)


def can_fuse(norm: nn.Module, sn: nn.Module, x: torch.Tensor, steps: int | None) -> bool:
    """Whether ``sn(norm(x, steps), steps)`` may run as one fused kernel call."""
    if steps is None or steps == 1 or type(norm) is not BatchNorm2d:
        return False
    if not (isinstance(sn, SpikingNeuron) and norm.fused and sn.can_fuse(x)):
        return False
    if _hooked(norm) or _hooked(sn) or _global_hooks():
        return False
    if norm.training or not norm.track_running_stats:
        return x.shape[0] // steps * x.shape[2] * x.shape[3] > 1
    return not torch.is_grad_enabled()


# Inputs with at most this many channels (event frames: 2) take the fused stem kernel; oneDNN's
# convolutions are weak there (few input channels), but win with more.
STEM_MAX_IN_CHANNELS = 4


def can_fuse_conv(conv: nn.Module, norm: nn.Module, sn: nn.Module, x: torch.Tensor,
                  steps: int | None) -> bool:
    """Whether ``sn(norm(conv(x), steps), steps)`` may run as one conv + LIF kernel: a chunk in
    inference (no autograd), a bias-free conv3x3 / stride 1 / padding 1 of at most
    ``STEM_MAX_IN_CHANNELS`` channels, BatchNorm with running statistics, a fusable LIF, no
    hooks."""
    if steps is None or torch.is_grad_enabled() or x.dim() != 4:
        return False
    if not (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.bias is None and conv.padding_mode == "zeros"
            and conv.in_channels <= STEM_MAX_IN_CHANNELS and conv.weight.dtype == x.dtype):
        return False
    if (type(norm) is not BatchNorm2d or norm.training or not norm.track_running_stats
            or not norm.fused):
        return False
    if not (isinstance(sn, SpikingNeuron) and sn.can_fuse(x)):
        return False
    return not (_hooked(conv) or _hooked(norm) or _hooked(sn) or _global_hooks())


def conv_chunk(conv: nn.Module, x: torch.Tensor, steps: int | None) -> torch.Tensor:
    """``conv(x)``; on a chunk, a conv3x3 whose input holds only 0 / 1 (spikes) runs as the
    table-lookup kernel :func:`snnexp.engine.functions.spike_conv` (one table entry per tap and
    group of 8 input channels instead of Cin multiply-adds; same sums, another rounding order;
    in training PyTorch's convolution backward gives the gradients). An input with other values
    (e.g. a SEW ADD output, 0 / 1 / 2) is detected by the kernel; the conv then runs dense, and
    does so directly from then on."""
    if not _spike_conv_applies(conv, x, steps):
        return conv(x)
    status: list[bool] = []
    out = kernels.SpikeConv.apply(x, conv.weight, _spike_tables(conv, x.dtype), conv.stride[0],
                                  conv.padding[0], status)
    if status:
        conv._snn_dense_input = True  # not spikes: skip the check in later chunks
    return out


def _spike_conv_applies(conv: nn.Module, x: torch.Tensor, steps: int | None) -> bool:
    if steps is None or x.dim() != 4:
        return False
    if not (type(conv) is nn.Conv2d and conv.kernel_size[0] == conv.kernel_size[1]
            and conv.kernel_size[0] in kernels.SPIKE_CONV_KERNEL_SIZES
            and conv.stride[0] == conv.stride[1]
            and conv.padding == (conv.kernel_size[0] // 2,) * 2 and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.bias is None
            and conv.padding_mode == "zeros" and conv.weight.dtype == x.dtype):
        return False
    if getattr(conv, "_snn_dense_input", False) or not native.supports(x):
        return False
    if kernels.spike_conv_table_bytes(conv.weight, x.dtype) > kernels.SPIKE_CONV_MAX_TABLE_BYTES:
        return False
    return not (_hooked(conv) or _global_hooks())


def _spike_tables(conv: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """The conv's lookup tables, kept on the module with the weight they were built from and
    rebuilt when the weight changed (a comparison of a few thousand values per chunk)."""
    w = conv.weight.detach()
    cached = getattr(conv, "_snn_spike_tables", None)
    if cached is None or cached[0].dtype != dtype or not torch.equal(cached[1], w):
        cached = (kernels.spike_conv_tables(w, dtype), w.clone())
        conv._snn_spike_tables = cached
    return cached[0]


def _fits(residual: torch.Tensor, x: torch.Tensor) -> bool:
    return (residual.shape == x.shape and residual.dtype == x.dtype
            and residual.device == x.device)


def norm_neuron(norm: nn.Module, sn: nn.Module, x: torch.Tensor, steps: int | None,
                residual: torch.Tensor | None = None, pool: bool = False,
                residual_before: bool = False) -> torch.Tensor:
    """``sn(norm(x, steps), steps)`` (``+ residual`` if given), fused when :func:`can_fuse`
    allows; the residual add then happens in the same kernel pass. ``residual_before``:
    ``sn(norm(x, steps) + residual, steps)`` instead (Spiking-ResNet), fused in inference.
    ``pool`` (a chunk in inference, see :func:`pool_fusable`) returns MaxPool2d(2) of the
    result, in the same pass when the kernels apply."""
    if residual is not None and residual_before:
        return _neuron_of_sum(norm, sn, x, steps, residual, pool)
    if residual is not None and not _fits(residual, x):
        return _pooled(sn(norm(x, steps), steps) + residual, pool)
    if can_fuse(norm, sn, x, steps):
        return sn.run_fused(x, steps, norm, residual, pool=pool)
    y = norm(x, steps)
    if (residual is not None or pool) and steps is not None and steps != 1 \
            and isinstance(sn, SpikingNeuron) and sn.can_fuse(y) \
            and not (_hooked(sn) or _global_hooks()):
        return sn.run_fused(y, steps, None, residual, pool=pool)
    s = sn(y, steps)
    return _pooled(s if residual is None else s + residual, pool)


def _neuron_of_sum(norm: nn.Module, sn: nn.Module, x: torch.Tensor, steps: int | None,
                   residual: torch.Tensor, pool: bool) -> torch.Tensor:
    """``sn(norm(x) + residual)`` (pooled if ``pool``): in inference on a chunk one kernel
    pass (eval BatchNorm folded in; other norms run first), otherwise module by module."""
    if (_fits(residual, x) and steps is not None and steps != 1 and not torch.is_grad_enabled()
            and isinstance(sn, SpikingNeuron) and not (_hooked(sn) or _global_hooks())):
        if can_fuse(norm, sn, x, steps) and not norm.training and norm.track_running_stats:
            return sn.run_fused(x, steps, norm, residual, pool=pool, residual_before=True)
        y = norm(x, steps)
        if sn.can_fuse(y):
            return sn.run_fused(y, steps, None, residual, pool=pool, residual_before=True)
        return _pooled(sn(y + residual, steps), pool)
    return _pooled(sn(norm(x, steps) + residual, steps), pool)


def _pooled(x: torch.Tensor, pool: bool) -> torch.Tensor:
    """MaxPool2d(2) where the fused pass did not pool (same values)."""
    return F.max_pool2d(x, 2) if pool else x


def pool_fusable(pool: nn.Module, steps: int | None) -> bool:
    """Whether a stage's pool may be folded into its last block's final LIF pass: a chunk in
    inference (no autograd: the backward needs the pool's indices) and an unhooked
    MaxPool2d(2) (stride 2, no padding, floor mode)."""
    return (steps is not None and steps > 1 and not torch.is_grad_enabled()
            and type(pool) is nn.MaxPool2d and pool.kernel_size in (2, (2, 2))
            and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0))
            and pool.dilation in (1, (1, 1)) and not pool.ceil_mode
            and not pool.return_indices and not _hooked(pool) and not _global_hooks())
