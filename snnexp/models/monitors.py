"""Switchable recorders of spike activity and norm-layer statistics (forward hooks).

Monitors attach forward hooks to an existing network and remove them on exit: the model is not
changed, and nothing is registered (zero cost) while no monitor is active. They work in both
execution modes: a chunk's flattened ``[K * B, ...]`` tensors are split back into K time steps
(the hooks read ``steps`` from the call's arguments), so every recorded series has one entry
per time step, in order.

    with Monitors(net, spikes=True, norms=True) as mon:
        ...  # run the network
    mon.spike_activity()  # {layer: [T]} mean spikes per neuron per step
    mon.norm_stats()      # {layer: {"in_mean": [T, C], ..., "out_max": [T, C]}}
    mon.amplification()   # {layer: [T, C]} out_std / in_std
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from snnexp.models.neurons import SpikingNeuron
from snnexp.models.norms import NORM_CLASSES

STATS = ("mean", "std", "min", "max")


def _steps(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    steps = args[1] if len(args) > 1 else kwargs.get("steps")
    return 1 if steps is None else int(steps)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _channel_stats(x: torch.Tensor, steps: int) -> dict[str, torch.Tensor]:
    """Per step and channel mean, std (population), min, max of ``[steps * B, C, ...]``."""
    x = _as_float(x.detach()).unflatten(0, (steps, -1))  # [K, B, C, ...]
    x = x.transpose(1, 2).flatten(2)  # [K, C, B * H * W]
    std, mean = torch.std_mean(x, dim=2, correction=0)
    return {"mean": mean, "std": std, "min": x.amin(dim=2), "max": x.amax(dim=2)}


class Monitors:
    """Record per-layer spike activity and / or per-norm-layer statistics of ``net``.

    Spiking layers are the :class:`SpikingNeuron` modules (not the non-spiking integrator); norm
    layers are all norm modules (also ``none``, the identity, whose in and out are equal).
    Layer names are the modules' names in ``net``. Use as a context manager, or call
    :meth:`attach` / :meth:`detach`; the records stay readable after detaching.
    """

    def __init__(self, net: nn.Module, spikes: bool = True, norms: bool = False) -> None:
        self.net = net
        self.spikes = spikes
        self.norms = norms
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._spikes: dict[str, list[torch.Tensor]] = {}
        self._norms: dict[str, dict[str, list[torch.Tensor]]] = {}

    # ------------------------------------------------------------------ hooks
    def attach(self) -> Monitors:
        """Register the hooks (idempotent)."""
        if self._handles:
            return self
        for name, module in self.net.named_modules():
            if self.spikes and isinstance(module, SpikingNeuron):
                self._handles.append(module.register_forward_hook(
                    self._spike_hook(name), with_kwargs=True))
            if self.norms and isinstance(module, NORM_CLASSES):
                self._handles.append(module.register_forward_hook(
                    self._norm_hook(name), with_kwargs=True))
        return self

    def detach(self) -> None:
        """Remove every hook; the recorded data stays."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def active(self) -> bool:
        """True while hooks are registered."""
        return bool(self._handles)

    def clear(self) -> None:
        """Forget the recorded data."""
        self._spikes.clear()
        self._norms.clear()

    def __enter__(self) -> Monitors:
        return self.attach()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.detach()

    def _spike_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
            steps = _steps(args, kwargs)
            spikes = _as_float(out.detach()).unflatten(0, (steps, -1)).flatten(1)
            self._spikes.setdefault(name, []).append(spikes.mean(dim=1))

        return hook

    def _norm_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
            steps = _steps(args, kwargs)
            store = self._norms.setdefault(name, {})
            for prefix, tensor in (("in", args[0]), ("out", out)):
                for stat, value in _channel_stats(tensor, steps).items():
                    store.setdefault(f"{prefix}_{stat}", []).append(value)

        return hook

    # ------------------------------------------------------------------ results
    def spike_activity(self) -> dict[str, np.ndarray]:
        """Per spiking layer: mean spikes per neuron (and sample) at each step, ``[T]``."""
        return {name: torch.cat(vals).cpu().numpy() for name, vals in self._spikes.items()
                if vals}

    def norm_stats(self) -> dict[str, dict[str, np.ndarray]]:
        """Per norm layer: ``{in,out}_{mean,std,min,max}`` per step and channel, ``[T, C]``.

        Statistics run over the batch and the pixels; std is the population std.
        """
        return {name: {key: torch.cat(vals).cpu().numpy() for key, vals in stats.items()}
                for name, stats in self._norms.items() if stats}

    def amplification(self) -> dict[str, np.ndarray]:
        """Per norm layer: ``out_std / in_std`` per step and channel, ``[T, C]``."""
        return amplification(self.norm_stats())


def amplification(stats: dict[str, dict[str, np.ndarray]], eps: float = 1e-12
                  ) -> dict[str, np.ndarray]:
    """``out_std / in_std`` of each layer of a :meth:`Monitors.norm_stats` result."""
    return {name: np.asarray(s["out_std"]) / np.maximum(np.asarray(s["in_std"]), eps)
            for name, s in stats.items()}
