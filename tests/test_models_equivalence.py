"""Step-by-step and chunked execution give the same outputs, gradients and BN statistics."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from snnexp import engine
from snnexp.config.schema import ModelConfig, NeuronConfig, NormConfig, SurrogateConfig
from snnexp.engine import native
from snnexp.models import Monitors, build_network

SHAPE = (2, 32, 40)
K, CHUNKS, B = 10, 5, 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")
# the plain model's chunk path, and the engine's backends (engine.prepare)
BACKENDS = ["plain", pytest.param("native", marks=pytest.mark.skipif(
    not native.available(), reason="no C++ compiler: no native kernels")), "torch"]


def excite(net: torch.nn.Module, conv_gain: float, fc_gain: float = 6.0) -> None:
    """Re-initialise weights so that every layer, the hidden one included, fires at init."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * conv_gain
                               / math.sqrt(fan_in))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.fill_(0.5)  # shift the normalised pre-activations towards the threshold
        w = net.fc_hidden.weight
        w.copy_(torch.randn(w.shape, generator=g) * fc_gain / math.sqrt(w.shape[1]))


def make_net(block: str, norm: str, *, connect: str = "ADD", kind: str = "lif",
             reset: str = "soft", surrogate: str = "atan") -> torch.nn.Module:
    torch.manual_seed(0)
    model = ModelConfig(block_type=block, connect_f=connect, hidden=16,
                        neuron=NeuronConfig(kind=kind, reset=reset,
                                            surrogate=SurrogateConfig(surrogate)))
    net = build_network(model, NormConfig(kind=norm), SHAPE).double()
    excite(net, conv_gain=5.0 if norm == "none" else 3.0)
    return net


def data(steps: int = K * CHUNKS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames = torch.poisson(torch.full((steps, B, *SHAPE), 0.5, dtype=torch.float64), g)
    labels = torch.rand(steps + 1, B, generator=g, dtype=torch.float64)
    return frames, labels


def compare(block: str, norm: str, train: bool, backend: str = "plain", **kw: str) -> None:
    """Run CHUNKS chunks of K steps in both modes with detach between chunks; compare all.
    ``backend``: the chunk network's (``plain``: not prepared)."""
    ref = make_net(block, norm, **kw)
    frames, labels = data()
    if not train and norm == "bn":  # give eval mode non-trivial running statistics
        ref.train().reset_state()
        with torch.no_grad():
            for c in range(3):
                ref.forward_chunk(frames[c * K:(c + 1) * K])
    ref.train(train).reset_state()
    fast = copy.deepcopy(ref)
    if backend != "plain":
        engine.prepare(fast, backend)
    params_ref, params_fast = list(ref.parameters()), list(fast.parameters())
    for net in (ref, fast):
        net.reset_state()
        net.set_output_membrane(labels[0])
    with Monitors(fast, spikes=True) as mon:
        for c in range(CHUNKS):
            x, y = frames[c * K:(c + 1) * K], labels[c * K + 1:(c + 1) * K + 1]
            out_ref = torch.stack([ref.forward_step(x[t]) for t in range(K)])
            out_fast = fast.forward_chunk(x)
            torch.testing.assert_close(out_fast, out_ref, rtol=0, atol=1e-9)
            g_ref = torch.autograd.grad(((out_ref - y) ** 2).mean(), params_ref)
            g_fast = torch.autograd.grad(((out_fast - y) ** 2).mean(), params_fast)
            for (name, _), a, b in zip(ref.named_parameters(), g_ref, g_fast):
                torch.testing.assert_close(b, a, rtol=0, atol=1e-9, msg=f"grad of {name}")
            for (name, a), b in zip(ref.named_buffers(), fast.buffers()):
                torch.testing.assert_close(b, a, rtol=0, atol=1e-9, msg=f"buffer {name}")
            torch.testing.assert_close(fast.output_membrane(), ref.output_membrane(),
                                       rtol=0, atol=1e-9)
            ref.detach_state()
            fast.detach_state()
    activity = mon.spike_activity()
    assert activity["sn_hidden"].shape == (K * CHUNKS,)
    for name, act in activity.items():  # the comparison is meaningful only if all layers fire
        assert act[K:].mean() > 0.01, f"{name} must fire after the first chunk"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("norm", ["bn", "rms", "mul", "none"])
@pytest.mark.parametrize("block", ["sew", "spiking", "plain"])
def test_step_and_chunk_agree(block: str, norm: str, train: bool, backend: str) -> None:
    compare(block, norm, train, backend)


@pytest.mark.parametrize("kw", [
    {"connect": "AND"}, {"connect": "IAND"}, {"kind": "plif", "reset": "hard"},
    {"surrogate": "triangular"}, {"surrogate": "fast_sigmoid", "reset": "hard"},
    {"surrogate": "sigmoid", "kind": "plif"},
], ids=lambda kw: "-".join(kw.values()))
@pytest.mark.parametrize("backend", BACKENDS)
def test_step_and_chunk_agree_variants(kw: dict[str, str], backend: str) -> None:
    compare("sew", "bn", True, backend, **kw)


@pytest.mark.parametrize("norm", ["bn", "rms", "mul", "none"])
@pytest.mark.parametrize("block", ["sew", "spiking", "plain"])
def test_gradient_reaches_every_parameter(block: str, norm: str) -> None:
    net = make_net(block, norm).train()
    frames, labels = data(K)
    net.reset_state()
    net.set_output_membrane(labels[0])
    ((net.forward_chunk(frames) - labels[1:]) ** 2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, f"no gradient reaches {name}"


def test_float32_chunk_matches_steps() -> None:
    """float32 runs SpikingJelly's native LIF kernel; both modes must still agree closely."""
    ref = make_net("sew", "bn").float().train()
    fast = copy.deepcopy(ref)
    frames, labels = data(20)
    frames, labels = frames.float(), labels.float()
    for net in (ref, fast):
        net.reset_state()
        net.set_output_membrane(labels[0])
    for c in range(2):
        x = frames[c * K:(c + 1) * K]
        out_ref = torch.stack([ref.forward_step(x[t]) for t in range(K)])
        torch.testing.assert_close(fast.forward_chunk(x), out_ref, rtol=1e-4, atol=1e-5)
        ref.detach_state()
        fast.detach_state()


def test_mixed_step_and_chunk_calls_share_state() -> None:
    a = make_net("sew", "rms")
    b = copy.deepcopy(a)
    frames, labels = data(12)
    for net in (a, b):
        net.reset_state()
        net.set_output_membrane(labels[0])
    out_a = a.forward_chunk(frames)
    out_b = torch.cat([torch.stack([b.forward_step(frames[t]) for t in range(5)]),
                       b.forward_chunk(frames[5:9]), b(frames[9:12])])
    torch.testing.assert_close(out_b, out_a, rtol=0, atol=1e-9)
