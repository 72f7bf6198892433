"""Spiking neurons, surrogate gradients and the non-spiking output integrator.

Every temporal module of the network (neurons, norms, the integrator) shares one calling
convention, so that the step-by-step and the chunked execution run the same modules:

* ``module(x)``: one time step, ``x`` is ``[B, ...]``;
* ``module(x, steps)``: ``steps`` time steps flattened time-major, ``x`` is ``[steps * B, ...]``.

Stateful modules derive from :class:`StatefulModule` (``reset_state`` / ``detach_state``), which
is all the network needs to know about them; a custom neuron only has to follow this
convention to replace the SpikingJelly one (see :class:`snnexp.models.factory.LayerFactory`).
"""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate as sj_surrogate
from torch import nn

from snnexp.config.schema import NEURON_KINDS, RESETS, SURROGATES, NeuronConfig, SurrogateConfig
from snnexp.errors import ConfigError

# Width / slope used when ``surrogate.alpha`` is None. atan and sigmoid are SpikingJelly's own
# defaults; all four peak at a gradient of 1 at the threshold.
SURROGATE_DEFAULT_ALPHA = {"atan": 2.0, "sigmoid": 4.0, "triangular": 1.0, "fast_sigmoid": 10.0}


def _check_choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"config key '{key}' = {value!r} is invalid: allowed values are "
                          f"{', '.join(allowed)} (e.g. {key}={allowed[0]})")


# --------------------------------------------------------------------------- surrogates
class _HeavisideSpike(torch.autograd.Function):
    """Heaviside forward shared by the custom surrogates; subclasses define the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)


class _TriangularSpike(_HeavisideSpike):
    """Heaviside forward; backward sigma'(x) = max(0, 1 - |x| / a) / a."""

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        a = ctx.alpha
        return grad * (1.0 - x.abs() / a).clamp_min(0.0) / a, None


class _FastSigmoidSpike(_HeavisideSpike):
    """Heaviside forward; backward sigma'(x) = 1 / (1 + alpha |x|)^2 (SuperSpike)."""

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad / (1.0 + ctx.alpha * x.abs()).square(), None


class _AlphaSpike(nn.Module):
    """A spike function module over one of the autograd functions above, with its ``alpha``."""

    function: type[_HeavisideSpike]

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function.apply(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Triangular(_AlphaSpike):
    """Spike function with a piecewise-linear (triangular) surrogate of half-width ``alpha``."""

    function = _TriangularSpike

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(alpha)


class FastSigmoid(_AlphaSpike):
    """Spike function with the fast-sigmoid surrogate 1 / (1 + alpha |x|)^2 of slope ``alpha``."""

    function = _FastSigmoidSpike

    def __init__(self, alpha: float = 10.0) -> None:
        super().__init__(alpha)


def make_surrogate(cfg: SurrogateConfig, key: str = "model.neuron.surrogate") -> nn.Module:
    """Spike function (Heaviside forward, surrogate backward) named by ``cfg.name``.

    atan and sigmoid are SpikingJelly's (so its multi-step LIF kernels apply); triangular and
    fast_sigmoid are our own autograd functions.
    """
    _check_choice(f"{key}.name", cfg.name, SURROGATES)
    alpha = SURROGATE_DEFAULT_ALPHA[cfg.name] if cfg.alpha is None else float(cfg.alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"config key '{key}.alpha' = {cfg.alpha!r} is invalid: must be a "
                          "positive finite number or null (the surrogate's default)")
    if cfg.name == "atan":
        return sj_surrogate.ATan(alpha=alpha)
    if cfg.name == "sigmoid":
        return sj_surrogate.Sigmoid(alpha=alpha)
    if cfg.name == "triangular":
        return Triangular(alpha)
    return FastSigmoid(alpha)


# --------------------------------------------------------------------------- neurons
class StatefulModule(nn.Module):
    """A module carrying state across time steps; the network resets / truncates it."""

    def reset_state(self) -> None:
        """Forget the state (start of a sequence)."""
        raise NotImplementedError

    def detach_state(self) -> None:
        """Keep the state's value but cut its autograd history (TBPTT truncation)."""
        raise NotImplementedError


class SpikingNeuron(StatefulModule):
    """A layer of SpikingJelly LIF / PLIF neurons run one step or a whole chunk at a time.

    One step runs SpikingJelly's single-step path (the reference), a chunk its multi-step path
    (which picks SpikingJelly's own CPU / CUDA / Triton kernels), both on the same state.
    """

    def __init__(self, node: sj_neuron.BaseNode) -> None:
        super().__init__()
        self.node = node

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        if steps is None:
            return self.node.single_step_forward(x)
        return self.node.multi_step_forward(x.unflatten(0, (steps, -1))).flatten(0, 1)

    @property
    def v(self) -> torch.Tensor | float:
        """Membrane potential after the last step (a float before the first step)."""
        return self.node.v

    def reset_state(self) -> None:
        self.node.reset()

    def detach_state(self) -> None:
        v = self.node.v
        if isinstance(v, torch.Tensor):
            self.node.v = v.detach()  # out of place: SpikingJelly's detach_() fails on views


def make_neuron(cfg: NeuronConfig, key: str = "model.neuron") -> SpikingNeuron:
    """SpikingJelly LIF (``lif``) or parametric LIF (``plif``, learnable tau) from ``cfg``.

    ``reset`` soft means v_reset None (subtract the threshold), hard means v_reset 0.0.
    SpikingJelly requires float arguments, hence the casts.
    """
    _check_choice(f"{key}.kind", cfg.kind, NEURON_KINDS)
    _check_choice(f"{key}.reset", cfg.reset, RESETS)
    tau = float(cfg.tau)
    if not (math.isfinite(tau) and tau > 1.0):
        raise ConfigError(f"config key '{key}.tau' = {cfg.tau!r} is invalid: must be a finite "
                          "number > 1")
    v_threshold = float(cfg.v_threshold)
    if not (math.isfinite(v_threshold) and v_threshold > 0):
        raise ConfigError(f"config key '{key}.v_threshold' = {cfg.v_threshold!r} is invalid: "
                          "must be a positive finite number")
    common = dict(
        decay_input=True,
        v_threshold=v_threshold,
        v_reset=None if cfg.reset == "soft" else 0.0,
        surrogate_function=make_surrogate(cfg.surrogate, f"{key}.surrogate"),
        detach_reset=bool(cfg.detach_reset),
    )
    if cfg.kind == "lif":
        node = sj_neuron.LIFNode(tau=tau, **common)
    else:
        node = sj_neuron.ParametricLIFNode(init_tau=tau, **common)
    return SpikingNeuron(node)


class OutputIntegrator(StatefulModule):
    """Non-spiking leaky integrator whose membrane is the network's prediction.

    ``v <- v + (x - v) / tau`` each step: SpikingJelly LIF's charge with decay_input, for
    v_reset None and 0 alike, with an infinite threshold (it never fires). Written out because
    SpikingJelly's LIF with an infinite threshold and soft reset computes inf * 0 = NaN.
    The state starts at 0 after :meth:`reset_state`, or at the value given to
    :meth:`set_membrane` (the sequence's initial condition). Inputs and state are ``[B]``.
    """

    def __init__(self, tau: float) -> None:
        super().__init__()
        tau = float(tau)
        if not (math.isfinite(tau) and tau > 1.0):
            raise ConfigError(f"config key 'model.neuron.tau_out' = {tau!r} is invalid: must be "
                              "a finite number > 1")
        self.tau = tau
        self.v: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        xs = x.unsqueeze(0) if steps is None else x.unflatten(0, (steps, -1))
        v = self.v
        if v is None:
            v = torch.zeros_like(xs[0])
        else:
            if v.shape != xs.shape[1:]:
                raise RuntimeError(f"output membrane has shape {tuple(v.shape)} but the batch "
                                   f"gives {tuple(xs.shape[1:])}: call reset_state() or "
                                   "set_output_membrane() for the new batch")
            v = v.to(dtype=x.dtype, device=x.device)
        out = []
        for xt in xs.unbind(0):
            v = v + (xt - v) / self.tau
            out.append(v)
        self.v = v
        return v if steps is None else torch.stack(out).flatten(0, 1)

    def set_membrane(self, v: torch.Tensor) -> None:
        """Initial condition of the next step (detached copy)."""
        self.v = v.detach().clone()

    def reset_state(self) -> None:
        self.v = None

    def detach_state(self) -> None:
        if self.v is not None:
            self.v = self.v.detach()

    def extra_repr(self) -> str:
        return f"tau={self.tau}"
