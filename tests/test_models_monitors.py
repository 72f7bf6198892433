"""Monitors: recorded activity / statistics equal manual computations; no hooks left behind."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from snnexp.config.schema import ModelConfig, NeuronConfig, NormConfig
from snnexp.models import Monitors, build_network
from snnexp.models.monitors import amplification
from snnexp.models.neurons import SpikingNeuron, make_neuron
from snnexp.models.norms import NORM_CLASSES


def _num_hooks(net: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in net.modules())


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sn = make_neuron(NeuronConfig(tau=2.0))

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return self.sn(x, steps)


def test_activity_of_a_known_input() -> None:
    # tau 2, threshold 1, soft reset, h = v + (x - v) / 2: x = 3 fires every step
    # (h = 1.5, 1.75, 1.875, ...); x = 1.2 fires at step 3 only (h = 0.6, 0.9, 1.05, 0.625).
    x = torch.tensor([3.0, 1.2, 0.0, 0.0])
    net = Tiny()
    with Monitors(net) as mon:
        net.sn.reset_state()
        for _ in range(2):
            net(x)
        net(torch.stack([x, x]).flatten(), 2)  # a chunk of 2 steps
    np.testing.assert_allclose(mon.spike_activity()["sn"], [0.25, 0.25, 0.5, 0.25])


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = build_network(ModelConfig(hidden=16), NormConfig(kind="bn"), (2, 24, 30)).double()
    with torch.no_grad():
        net.fc_hidden.weight.mul_(20)
    return net


@pytest.mark.parametrize("chunked", [False, True], ids=["step", "chunk"])
def test_monitors_equal_manual_statistics(chunked: bool) -> None:
    net = _net()
    torch.manual_seed(1)
    x = torch.poisson(torch.full((6, 3, 2, 24, 30), 1.0, dtype=torch.float64))
    captured: dict[str, list] = {}

    def capture(name: str):
        def hook(module, args, out):
            captured.setdefault(name, []).append((args[0].detach(), out.detach()))
        return hook

    handles = [m.register_forward_hook(capture(n)) for n, m in net.named_modules()
               if isinstance(m, (SpikingNeuron, *NORM_CLASSES))]
    net.reset_state()
    with Monitors(net, spikes=True, norms=True) as mon:
        if chunked:
            net.forward_chunk(x[:4])
            net.forward_chunk(x[4:])
        else:
            for t in range(6):
                net.forward_step(x[t])
    for h in handles:
        h.remove()
    steps = 6
    activity, stats = mon.spike_activity(), mon.norm_stats()
    spiking = [n for n, m in net.named_modules() if isinstance(m, SpikingNeuron)]
    norms = [n for n, m in net.named_modules() if isinstance(m, NORM_CLASSES)]
    assert sorted(activity) == sorted(spiking) and sorted(stats) == sorted(norms)
    assert activity["sn_hidden"].max() > 0
    for name in spiking:  # manual: mean of each step's output over samples and neurons
        outs = torch.cat([o for _, o in captured[name]]).view(steps, 3, -1)
        np.testing.assert_allclose(activity[name], outs.mean(dim=(1, 2)).numpy())
    for name in norms:
        shape = (steps, 3, *captured[name][0][0].shape[1:])
        for prefix, idx in (("in", 0), ("out", 1)):
            t = torch.cat([c[idx] for c in captured[name]]).view(shape)
            per_channel = t.transpose(1, 2).flatten(2)  # [T, C, B * H * W]
            expected = {"mean": per_channel.mean(2), "std": per_channel.std(2, correction=0),
                        "min": per_channel.amin(2), "max": per_channel.amax(2)}
            for stat, value in expected.items():
                np.testing.assert_allclose(stats[name][f"{prefix}_{stat}"], value, atol=1e-12)
        assert stats[name]["in_mean"].shape == (steps, shape[2])
    amp = mon.amplification()
    for name in norms:
        np.testing.assert_allclose(amp[name], stats[name]["out_std"] / stats[name]["in_std"])
    assert amplification(stats).keys() == amp.keys()


def test_step_and_chunk_monitors_agree() -> None:
    a = _net()
    b = copy.deepcopy(a)
    x = torch.poisson(torch.full((4, 2, 2, 24, 30), 1.0, dtype=torch.float64))
    with Monitors(a, norms=True) as ma, Monitors(b, norms=True) as mb:
        a.reset_state()
        b.reset_state()
        for t in range(4):
            a.forward_step(x[t])
        b.forward_chunk(x)
    for name, act in ma.spike_activity().items():
        np.testing.assert_allclose(mb.spike_activity()[name], act, atol=1e-12)
    for name, s in ma.norm_stats().items():
        for key, val in s.items():
            np.testing.assert_allclose(mb.norm_stats()[name][key], val, atol=1e-9)


def test_no_hooks_when_off_or_after_exit() -> None:
    net = _net()
    assert _num_hooks(net) == 0
    with Monitors(net, spikes=False, norms=False) as mon:
        assert _num_hooks(net) == 0 and not mon.active
    with Monitors(net, spikes=True, norms=True) as mon:
        assert _num_hooks(net) > 0 and mon.active
        net.reset_state()
        net.forward_step(torch.rand(1, 2, 24, 30, dtype=torch.float64))
    assert _num_hooks(net) == 0 and not mon.active
    assert len(mon.spike_activity()["sn_hidden"]) == 1  # data survive the exit
    with pytest.raises(ZeroDivisionError), Monitors(net, spikes=True):
        raise ZeroDivisionError
    assert _num_hooks(net) == 0
