"""Chunk operations of the native kernels on the model's plain modules.

Each function computes what the named modules compute one after the other on a chunk
(``[K * B, ...]`` time-major), reading their parameters and writing their state (the neuron's
membrane, BatchNorm's running statistics) as the modules would. Callers (the engine modules of
:mod:`snnexp.engine.modules`) decide when they apply; :func:`lif_spec` says whether a neuron can
run through the kernels at all.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate as sj_surrogate
from torch import nn

from snnexp.engine.functions import (
    FusedBatchNormLIF,
    FusedLIF,
    LifSpec,
    conv_lif,
    fixed_affine_lif,
    lif_pool,
)
from snnexp.models.neurons import FastSigmoid, SpikingNeuron, Triangular
from snnexp.models.norms import BatchNorm2d

# The kernels' surrogate ids (snnexp/engine/kernels.cpp: surrogate()).
SURROGATE_IDS: dict[type, int] = {sj_surrogate.Sigmoid: 0, sj_surrogate.ATan: 1,
                                  Triangular: 2, FastSigmoid: 3}


def lif_spec(sn: nn.Module) -> LifSpec | None:
    """The constants of a neuron layer for the kernels, or None if they do not apply (not a
    SpikingJelly LIF with decay_input and one of the four surrogates, e.g. PLIF)."""
    node = getattr(sn, "node", None)
    if not isinstance(sn, SpikingNeuron) or type(node) is not sj_neuron.LIFNode \
            or not node.decay_input:
        return None
    sg_id = SURROGATE_IDS.get(type(node.surrogate_function))
    alpha = getattr(node.surrogate_function, "alpha", None)
    spiking = getattr(node.surrogate_function, "spiking", True)
    if sg_id is None or not spiking or not isinstance(alpha, (int, float)):
        return None
    return LifSpec(float(node.tau), float(node.v_threshold),
                   None if node.v_reset is None else float(node.v_reset),
                   bool(node.detach_reset), sg_id, float(alpha))


def is_batch_norm(norm: nn.Module) -> bool:
    """The model's per-step BatchNorm (its engine subclass included), nothing derived further."""
    from snnexp.engine.modules import EngineBatchNorm2d

    return type(norm) in (BatchNorm2d, EngineBatchNorm2d)


def folded_affine(norm: BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = x * scale + shift`` per channel (running statistics folded
    in), computed like PyTorch's CPU kernel."""
    with torch.no_grad():
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.affine:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.affine:
            shift = shift + norm.bias
    return scale, shift


def membrane(sn: SpikingNeuron, frames: int, steps: int, shape: torch.Size
             ) -> torch.Tensor | float:
    """The membrane to continue from, checked against a chunk of ``frames`` frames."""
    v0 = sn.node.v  # a tensor, or SpikingJelly's initial float after a reset
    if isinstance(v0, torch.Tensor) and (v0.shape[0] * steps != frames or v0.shape[1:] != shape):
        raise RuntimeError(f"membrane of shape {tuple(v0.shape)} does not fit a chunk of "
                           f"{steps} steps of {(frames, *shape)}: call reset_state() first")
    return v0


def batch_norm(norm: BatchNorm2d, x: torch.Tensor, steps: int) -> torch.Tensor:
    """``norm(x, steps)`` with batch statistics (per time step) and their running-statistics
    update, in one kernel pass."""
    weight, bias = (norm.weight, norm.bias) if norm.affine else (None, None)
    y, _, mean, var = FusedBatchNormLIF.apply(x, weight, bias, None, steps, norm.eps, None)
    norm.record_batch_stats(mean, var, x.shape[0] // steps * x[0, 0].numel())
    return y


def lif(sn: SpikingNeuron, x: torch.Tensor, steps: int, norm: BatchNorm2d | None = None,
        residual: torch.Tensor | None = None, pool: bool = False,
        residual_before: bool = False) -> torch.Tensor:
    """``sn(norm(x, steps), steps)`` through the kernels (``norm`` None: LIF alone).

    ``norm`` with batch statistics is fused with its running-statistics update; with running
    statistics it must run without autograd and is folded into the neuron. With ``residual``
    (x's shape, dtype and device) the result is spikes + residual, or with ``residual_before``
    (inference only) the neuron's input is norm(x) + residual. ``pool`` (inference only)
    returns MaxPool2d(2) of that result, computed in the same pass.
    """
    spec = lif_spec(sn)
    v0 = membrane(sn, x.shape[0], steps, x.shape[1:])
    if residual_before and (torch.is_grad_enabled() or (norm is not None and norm.training)):
        raise ValueError("residual_before is fused in inference only (no autograd, "
                         "BatchNorm with running statistics)")
    if pool or residual_before:  # inference-only passes
        scale, shift = folded_affine(norm) if norm is not None else (None, None)
        run = lif_pool if pool else fixed_affine_lif
        out, v_new = run(x, steps, v0, spec, scale, shift, residual, residual_before)
    elif norm is None:
        out, v_new = FusedLIF.apply(x, v0, steps, spec, residual)
    elif norm.training or not norm.track_running_stats:
        weight, bias = (norm.weight, norm.bias) if norm.affine else (None, None)
        out, v_new, mean, var = FusedBatchNormLIF.apply(x, weight, bias, v0, steps, norm.eps,
                                                        spec, residual)
        norm.record_batch_stats(mean, var, x.shape[0] // steps * x[0, 0].numel())
    else:
        out, v_new = fixed_affine_lif(x, steps, v0, spec, *folded_affine(norm), residual)
    sn.node.v = v_new
    return out


def conv_norm_lif(conv: nn.Conv2d, norm: BatchNorm2d, sn: SpikingNeuron, x: torch.Tensor,
                  steps: int, channels_last: bool) -> torch.Tensor:
    """Inference: ``sn(norm(conv(x), steps), steps)`` of a stem layer (conv3x3, eval
    BatchNorm) as one conv + LIF pass; spikes channels_last or contiguous."""
    shape = torch.Size((conv.out_channels, *x.shape[2:]))
    v0 = membrane(sn, x.shape[0], steps, shape)
    out, v_new = conv_lif(x, conv.weight, steps, v0, lif_spec(sn), *folded_affine(norm),
                          channels_last)
    sn.node.v = v_new
    return out
