"""The spiking regressor: stages of residual blocks, a spiking hidden layer, an integrator.

The network is stateful (membrane potentials persist between calls) and runs either one time
step per call (:meth:`SNNRegressor.forward_step`, the reference) or a chunk of K steps per call
(:meth:`SNNRegressor.forward_chunk`): convolutions, pools and linear layers then process the
K * B frames as one batch, neurons iterate over the K steps (SpikingJelly's multi-step path),
and BatchNorm uses per-time-step statistics, so both modes give the same results.
:func:`snnexp.engine.prepare` swaps layer groups for faster engine modules; the network itself
never decides how fast it runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from snnexp.config.schema import ModelConfig, NormConfig
from snnexp.errors import ConfigError
from snnexp.models.blocks import Stage
from snnexp.models.factory import LayerFactory
from snnexp.models.neurons import StatefulModule


class SNNRegressor(nn.Module):
    """Event frames ``[.., C, H, W]`` -> one regressed value per sample and time step.

    Layout (docs/METHOD.md section 2): ``stages`` -> flatten -> ``fc_hidden`` (no bias) ->
    ``sn_hidden`` (LIF) -> ``fc_out`` (no bias) -> ``integrator`` (non-spiking, tau_out), whose
    membrane after each step is the prediction. The flattened feature size is measured by a dry
    run on ``input_shape``, so any resolution and any input downsampling work.
    ``layers`` supplies the norm / neuron / integrator modules (default: the configured ones).
    ``outputs`` > 1 (classification): ``fc_out`` feeds that many integrators, one per class,
    and the prediction per step is ``[B, outputs]``.
    """

    def __init__(self, model: ModelConfig, norm: NormConfig, input_shape: tuple[int, int, int],
                 layers: LayerFactory | None = None, outputs: int = 1) -> None:
        super().__init__()
        if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
            raise ValueError(f"input_shape must be (channels, height, width), got {input_shape}")
        self.input_shape = tuple(int(s) for s in input_shape)
        layers = layers if layers is not None else LayerFactory(model.neuron, norm)
        stages, channels = [], self.input_shape[0]
        for i, st in enumerate(model.stages):
            block_type = st.block_type if st.block_type is not None else model.block_type
            stages.append(Stage(channels, st, block_type, model.connect_f, layers,
                                key=f"model.stages[{i}]"))
            channels = st.channels
        self.stages = nn.ModuleList(stages)
        self.flat_features = self._measure_features()
        self.fc_hidden = nn.Linear(self.flat_features, model.hidden, bias=False)
        self.sn_hidden = layers.neuron()
        self.outputs = int(outputs)
        self.fc_out = nn.Linear(model.hidden, self.outputs, bias=False)
        self.integrator = layers.integrator()

    @torch.no_grad()
    def _measure_features(self) -> int:
        """Flattened size of the stages' output for one input frame (dry run, eval mode)."""
        was_training = self.training
        self.eval()
        try:
            out = self._features(torch.zeros(1, *self.input_shape), None)
        except RuntimeError as err:
            c, h, w = self.input_shape
            raise ConfigError(
                f"input frames of {c} x {h} x {w} are too small for model.stages: their strides "
                f"and pooling shrink them to nothing ({err}); lower data.downsample or use fewer "
                "stages / smaller k_pool") from None
        finally:
            self.train(was_training)
            self.reset_state()
        if out.numel() == 0:
            raise ConfigError(f"model.stages reduce input frames of shape {self.input_shape} to "
                              "an empty feature map; lower data.downsample or k_pool")
        return out[0].numel()

    # ------------------------------------------------------------------ forward
    def _features(self, x: torch.Tensor, steps: int | None) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x, steps)
        return x

    def _run(self, x: torch.Tensor, steps: int | None) -> torch.Tensor:
        x = self._features(x, steps).flatten(1)
        x = self.sn_hidden(self.fc_hidden(x), steps)
        y = self.fc_out(x)
        return self.integrator(y.squeeze(-1) if self.outputs == 1 else y, steps)

    def forward_step(self, x: torch.Tensor) -> torch.Tensor:
        """One time step: frames ``[B, C, H, W]`` -> predictions ``[B]``."""
        return self._run(x, None)

    def forward_chunk(self, x: torch.Tensor) -> torch.Tensor:
        """K time steps at once: frames ``[K, B, C, H, W]`` -> predictions ``[K, B]``
        (``[K, B, outputs]`` with several outputs)."""
        k, b = x.shape[:2]
        y = self._run(x.flatten(0, 1), k)
        return y.view(k, b) if self.outputs == 1 else y.view(k, b, self.outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dispatch on the rank: ``[B, C, H, W]`` one step, ``[K, B, C, H, W]`` a chunk."""
        if x.dim() == 4:
            return self.forward_step(x)
        if x.dim() == 5:
            return self.forward_chunk(x)
        raise ValueError(f"expected [B, C, H, W] or [K, B, C, H, W] frames, got {tuple(x.shape)}")

    # ------------------------------------------------------------------ state
    def _stateful(self) -> list[StatefulModule]:
        return [m for m in self.modules() if isinstance(m, StatefulModule)]

    def reset_state(self) -> None:
        """Reset every neuron and the integrator (start of a sequence)."""
        for m in self._stateful():
            m.reset_state()

    def detach_state(self) -> None:
        """Cut the autograd history of all states, keeping their values (TBPTT truncation)."""
        for m in self._stateful():
            m.detach_state()

    def set_output_membrane(self, v: torch.Tensor) -> None:
        """Set the integrator's membrane ``[B]`` (the initial condition, e.g. the first label)."""
        self.integrator.set_membrane(v)

    def output_membrane(self) -> torch.Tensor:
        """The integrator's membrane ``[B]``, i.e. the latest prediction."""
        if self.integrator.v is None:
            raise RuntimeError("the output membrane is unset: run a step or call "
                               "set_output_membrane() after reset_state()")
        return self.integrator.v


def build_network(model: ModelConfig | Any, norm: NormConfig | Any,
                  input_shape: tuple[int, int, int], outputs: int = 1) -> SNNRegressor:
    """Validate the model / norm settings and build the network for ``input_shape`` (C, H, W).

    Accepts the schema dataclasses or composed DictConfigs; bad settings raise ConfigError
    naming the key and the allowed values. ``outputs``: 1 (regression) or the number of classes.
    """
    from snnexp.config.validate import to_schema, validate_model

    model = to_schema(model, ModelConfig)
    norm = to_schema(norm, NormConfig)
    validate_model(model, norm)
    return SNNRegressor(model, norm, tuple(input_shape), outputs=outputs)


def count_trainable_parameters(module: nn.Module) -> int:
    """Number of scalar parameters that require gradients."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
