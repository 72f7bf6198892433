"""Neurons, surrogate gradients and the output integrator."""

from __future__ import annotations

import math

import pytest
import torch
from spikingjelly.activation_based import neuron as sj_neuron

from snnexp.config.schema import ModelConfig, NeuronConfig, NormConfig, SurrogateConfig
from snnexp.errors import ConfigError
from snnexp.models import build_network, count_trainable_parameters
from snnexp.models.neurons import (
    SURROGATE_DEFAULT_ALPHA,
    OutputIntegrator,
    make_neuron,
    make_surrogate,
)


def _trace(neuron: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    neuron.reset_state()
    vs = []
    for t in range(x.shape[0]):
        neuron(x[t])
        vs.append(neuron.v.clone())
    return vs


def test_soft_and_hard_reset_are_honoured() -> None:
    x = torch.full((4, 1), 3.0)  # tau 2: h = 1.5 at step 1, fires
    soft = _trace(make_neuron(NeuronConfig(reset="soft")), x)
    hard = _trace(make_neuron(NeuronConfig(reset="hard")), x)
    assert soft[0].item() == pytest.approx(0.5)  # 1.5 - threshold
    assert hard[0].item() == pytest.approx(0.0)  # reset to 0
    assert any(not torch.equal(s, h) for s, h in zip(soft, hard))
    assert make_neuron(NeuronConfig(reset="soft")).node.v_reset is None
    assert make_neuron(NeuronConfig(reset="hard")).node.v_reset == 0.0


def test_reset_option_changes_the_network_output() -> None:
    outs = []
    for reset in ("soft", "hard"):
        torch.manual_seed(0)
        net = build_network(ModelConfig(hidden=8, neuron=NeuronConfig(reset=reset)),
                            NormConfig(), (2, 16, 20))
        torch.manual_seed(1)
        x = torch.poisson(torch.full((6, 2, 2, 16, 20), 1.0)) * 3
        net.reset_state()
        with torch.no_grad():
            net.fc_hidden.weight.mul_(20)
            outs.append(net.forward_chunk(x))
    assert not torch.allclose(outs[0], outs[1])


def test_plif_has_a_learnable_tau() -> None:
    sn = make_neuron(NeuronConfig(kind="plif", tau=3.0))
    w = sn.node.w
    assert isinstance(w, torch.nn.Parameter) and w.requires_grad
    assert 1.0 / torch.sigmoid(w).item() == pytest.approx(3.0)
    out = sn(torch.linspace(0.5, 4.0, 8), None)
    (out.sum() + sn.v.sum()).backward()
    assert w.grad is not None and w.grad.abs().item() > 0
    lif = build_network(ModelConfig(hidden=8), NormConfig(), (2, 16, 20))
    plif = build_network(ModelConfig(hidden=8, neuron=NeuronConfig(kind="plif")), NormConfig(),
                         (2, 16, 20))
    num_neuron_layers = sum(1 for m in plif.modules() if isinstance(m, sj_neuron.BaseNode))
    assert count_trainable_parameters(plif) == count_trainable_parameters(lif) + num_neuron_layers


def _expected_grad(name: str, a: float, x: torch.Tensor) -> torch.Tensor:
    if name == "atan":
        return a / 2 / (1 + (math.pi / 2 * a * x) ** 2)
    if name == "sigmoid":
        s = torch.sigmoid(a * x)
        return a * s * (1 - s)
    if name == "triangular":
        return torch.clamp(1 - x.abs() / a, min=0) / a
    return 1 / (1 + a * x.abs()) ** 2


@pytest.mark.parametrize("alpha", [None, 0.7, 3.0])
@pytest.mark.parametrize("name", ["atan", "sigmoid", "triangular", "fast_sigmoid"])
def test_surrogate_gradient_matches_formula(name: str, alpha: float | None) -> None:
    a = SURROGATE_DEFAULT_ALPHA[name] if alpha is None else alpha
    x = torch.linspace(-2.5, 2.5, 101, dtype=torch.float64, requires_grad=True)
    spikes = make_surrogate(SurrogateConfig(name, alpha))(x)
    torch.testing.assert_close(spikes, (x >= 0).double())
    (grad,) = torch.autograd.grad(spikes.sum(), x)
    torch.testing.assert_close(grad, _expected_grad(name, a, x.detach()))


@pytest.mark.parametrize("steps", [None, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # float32: native kernels
@pytest.mark.parametrize("name", ["atan", "sigmoid", "triangular", "fast_sigmoid"])
def test_neuron_backward_uses_the_surrogate(name: str, dtype: torch.dtype,
                                            steps: int | None) -> None:
    """First step from rest: spike = H(x / tau - thr), so d spike / dx = sigma'(x/tau - thr)/tau."""
    sn = make_neuron(NeuronConfig(tau=2.0, surrogate=SurrogateConfig(name, 1.5)))
    x = torch.linspace(-1.0, 5.0, 12, dtype=dtype).repeat(steps or 1).requires_grad_()
    out = sn(x, steps)
    (grad,) = torch.autograd.grad(out[:12].sum(), x)
    expected = _expected_grad(name, 1.5, x[:12].detach().double() / 2 - 1) / 2
    torch.testing.assert_close(grad[:12].double(), expected, rtol=1e-5, atol=1e-6)


def test_neuron_settings_become_floats_and_bad_ones_fail() -> None:
    sn = make_neuron(NeuronConfig(tau=2, v_threshold=1))  # ints: SpikingJelly requires floats
    assert sn.node.tau == 2.0 and isinstance(sn.node.v_threshold, float)
    bad = [NeuronConfig(kind="izh"), NeuronConfig(reset="none"), NeuronConfig(tau=1.0),
           NeuronConfig(surrogate=SurrogateConfig("erf")),
           NeuronConfig(surrogate=SurrogateConfig("atan", -1.0))]
    keys = ["model.neuron.kind", "model.neuron.reset", "model.neuron.tau",
            "model.neuron.surrogate.name", "model.neuron.surrogate.alpha"]
    for cfg, key in zip(bad, keys):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            make_neuron(cfg)
    with pytest.raises(ConfigError, match="lif, plif"):
        make_neuron(NeuronConfig(kind="izh"))


def test_detach_state_keeps_value_and_cuts_history() -> None:
    sn = make_neuron(NeuronConfig())
    x = torch.full((3,), 0.8, requires_grad=True)
    sn(x)
    v = sn.v
    assert v.requires_grad
    sn.detach_state()
    assert not sn.v.requires_grad and torch.equal(sn.v, v.detach())
    sn.reset_state()
    assert sn.v == 0.0


def test_integrator_initial_condition_reaches_the_prediction() -> None:
    tau = 20.0
    v0 = torch.tensor([0.3, -0.7], dtype=torch.float64)
    integ = OutputIntegrator(tau)
    integ.set_membrane(v0)
    y = integ(torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(y, v0 * (1 - 1 / tau))
    integ.set_membrane(v0)
    y = integ(torch.zeros(3 * 2, dtype=torch.float64), 3).view(3, 2)
    torch.testing.assert_close(y[-1], v0 * (1 - 1 / tau) ** 3)

    net = build_network(ModelConfig(hidden=8), NormConfig(), (2, 16, 20)).double()
    for chunk in (False, True):
        net.reset_state()
        net.set_output_membrane(v0)
        zeros = torch.zeros(2, 2, 16, 20, dtype=torch.float64)
        y = net.forward_chunk(zeros[None])[0] if chunk else net.forward_step(zeros)
        torch.testing.assert_close(y, v0 * (1 - 1 / tau))
        torch.testing.assert_close(net.output_membrane(), y)


def test_integrator_is_spikingjelly_lif_charge_without_firing() -> None:
    x = torch.randn(7, 4, dtype=torch.float64)
    integ = OutputIntegrator(5.0)
    ours = integ(x.flatten(), 7).view(7, 4)
    for v_reset in (0.0, None):
        lif = sj_neuron.LIFNode(tau=5.0, v_threshold=1e9, v_reset=v_reset, store_v_seq=True,
                                step_mode="m")
        lif(x)
        torch.testing.assert_close(ours, lif.v_seq)


def test_integrator_rejects_a_batch_of_another_size() -> None:
    integ = OutputIntegrator(20.0)
    integ.set_membrane(torch.zeros(3))
    with pytest.raises(RuntimeError, match="reset_state"):
        integ(torch.zeros(2))
    integ.reset_state()
    assert integ(torch.ones(2)).shape == (2,)
