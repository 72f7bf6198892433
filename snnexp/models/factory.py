"""Where the network gets its norm, neuron and integrator modules: the swap point.

Blocks and the network never construct a norm or a neuron themselves; they ask a
:class:`LayerFactory`. Another norm or neuron subclasses it and is passed to
:class:`snnexp.models.network.SNNRegressor`; nothing else changes as long as its modules follow
the temporal calling convention (``m(x)`` for a step, ``m(x, steps)`` for a flattened chunk)
and stateful ones derive from :class:`snnexp.models.neurons.StatefulModule`. (Speed is not
chosen here: :func:`snnexp.engine.prepare` swaps layer groups of a built network.)
"""

from __future__ import annotations

from torch import nn

from snnexp.config.schema import NeuronConfig, NormConfig
from snnexp.models.neurons import OutputIntegrator, SpikingNeuron, make_neuron
from snnexp.models.norms import make_norm


class LayerFactory:
    """Builds the configured norm layers, spiking neurons and the output integrator."""

    def __init__(self, neuron: NeuronConfig, norm: NormConfig) -> None:
        self.neuron_cfg = neuron
        self.norm_cfg = norm

    def norm(self, channels: int) -> nn.Module:
        """A norm layer for ``channels`` channels."""
        return make_norm(self.norm_cfg, channels)

    def neuron(self) -> SpikingNeuron:
        """A layer of spiking neurons (any input shape)."""
        return make_neuron(self.neuron_cfg)

    def integrator(self) -> OutputIntegrator:
        """The non-spiking output integrator (tau_out)."""
        return OutputIntegrator(self.neuron_cfg.tau_out)
