"""The network as a per-step module with explicit state: ``(frame, *state) -> (y, *state)``.

Runtimes outside PyTorch (ONNX, TorchScript in C++) cannot keep hidden module state, so the
exported module takes every membrane potential as an input and returns its next value. It is a
copy of the network whose spiking neurons are replaced by :class:`ExplicitLIF`, the LIF / PLIF
step written out in plain tensor operations (SpikingJelly's reference equations: charge, fire
with the Heaviside step, soft or hard reset); the output integrator keeps its own equation.
``y`` is the integrator's membrane, the prediction in target units (see the metadata's target
map to turn it into degrees).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from snnexp.models.neurons import OutputIntegrator, SpikingNeuron, StatefulModule


class ExplicitLIF(StatefulModule):
    """One LIF / PLIF step on an explicit membrane ``v`` (set before the step)."""

    def __init__(self, sn: SpikingNeuron) -> None:
        super().__init__()
        node = sn.node
        self.v_threshold = float(node.v_threshold)
        self.v_reset = None if node.v_reset is None else float(node.v_reset)
        w = getattr(node, "w", None)  # PLIF: 1 / tau = sigmoid(w), learnt
        if isinstance(w, torch.Tensor):
            self.register_buffer("decay", torch.sigmoid(w.detach()).reshape(()))
            self.tau = None
        else:
            self.decay = None
            self.tau = float(node.tau)
        self.v: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        if steps is not None:
            raise ValueError("the exported network runs one step per call")
        v = self.v if self.v is not None else torch.zeros_like(x)
        base = 0.0 if self.v_reset is None else self.v_reset
        h = v + (x - (v - base)) / self.tau if self.decay is None else \
            v + (x - (v - base)) * self.decay
        spike = (h >= self.v_threshold).to(x.dtype)
        if self.v_reset is None:
            self.v = h - spike * self.v_threshold
        else:
            self.v = spike * self.v_reset + (1.0 - spike) * h
        return spike

    def reset_state(self) -> None:
        self.v = None

    def detach_state(self) -> None:
        if self.v is not None:
            self.v = self.v.detach()


@dataclass(frozen=True)
class StateSpec:
    """One state tensor of the step module: its name (the module path) and shape."""

    name: str
    shape: tuple[int, ...]


class StepModule(nn.Module):
    """``forward(frame [1, C, H, W], *state) -> (y [1], *next_state)`` (batch of one)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        net = copy.deepcopy(net).eval()
        for name, m in list(net.named_modules()):
            if isinstance(m, SpikingNeuron):
                parent_name, _, attr = name.rpartition(".")
                parent = net.get_submodule(parent_name) if parent_name else net
                setattr(parent, attr, ExplicitLIF(m))
        self.net = net
        self._names = [n for n, m in net.named_modules() if isinstance(m, StatefulModule)]
        self.states = [net.get_submodule(n) for n in self._names]
        self.input_shape = tuple(int(s) for s in net.input_shape)
        self.specs = self._measure()

    @torch.no_grad()
    def _measure(self) -> list[StateSpec]:
        for m in self.states:
            m.reset_state()
        self.net.forward_step(torch.zeros(1, *self.input_shape))
        specs = [StateSpec(n, tuple(m.v.shape)) for n, m in zip(self._names, self.states)]
        for m in self.states:
            m.reset_state()
        return specs

    def initial_state(self, y0: float = 0.0) -> list[torch.Tensor]:
        """Zero membranes; the integrator (the last state) at ``y0`` in target units."""
        state = [torch.zeros(s.shape) for s in self.specs]
        state[self.integrator_index] = torch.full(self.specs[self.integrator_index].shape,
                                                  float(y0))
        return state

    @property
    def integrator_index(self) -> int:
        return next(i for i, m in enumerate(self.states) if isinstance(m, OutputIntegrator))

    def forward(self, frame: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        for m, v in zip(self.states, state):
            m.v = v
        y = self.net.forward_step(frame)
        out = tuple(m.v for m in self.states)
        for m in self.states:
            m.reset_state()  # no tensors of the traced call left behind
        return (y, *out)


def metadata(step: StepModule, model: Any, fmt: str) -> dict[str, Any]:
    """What a runtime needs besides the file: input, window, target map and the states."""
    c, h, w = step.input_shape
    return {
        "format": fmt,
        "inputs": ["frame", *[f"state_{i}" for i in range(len(step.specs))]],
        "outputs": ["y", *[f"next_state_{i}" for i in range(len(step.specs))]],
        "input_shape": [1, c, h, w],
        "input": (f"event counts of one window, float32 [1, {c}, {h}, {w}]: channel 0 OFF, "
                  f"1 ON, sensor pixels summed over {model.downsample} x {model.downsample}"),
        "window_us": int(model.window_us),
        "downsample": int(model.downsample),
        "sensor": list(model.sensor) if model.sensor else None,
        "target_map": model.target_map.as_dict(),
        "output": ("y: the prediction in target units; angle_rad = (y - offset) / scale; "
                   "start y's state at the first label (or a known angle)"),
        "states": [{"name": s.name, "shape": list(s.shape),
                    "initial": "y0" if i == step.integrator_index else 0.0}
                   for i, s in enumerate(step.specs)],
        "checkpoint": str(model.path),
    }
