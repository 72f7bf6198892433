"""The fast chunk engine computes what the per-step reference loop computes (float64).

20 chunks of TBPTT training (Adam) in both execution modes from the same network and data:
per-chunk losses, final parameters and BatchNorm buffers agree to 1e-9. Weights are scaled so
that every layer, the hidden one included, fires from the second chunk on (checked), otherwise
a wrong engine could still match.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from snnexp.config.schema import ModelConfig, NeuronConfig, NormConfig, SurrogateConfig
from snnexp.engine import native
from snnexp.models import Monitors, build_network
from snnexp.training.tbptt import run_sequence

SHAPE = (2, 24, 32)
K, CHUNKS, B = 10, 20, 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_net(block: str = "sew", norm: str = "bn", **neuron: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = ModelConfig(block_type=block, hidden=16,
                        neuron=NeuronConfig(**{k: v for k, v in neuron.items()
                                               if k != "surrogate"},
                                            surrogate=SurrogateConfig(neuron.get("surrogate",
                                                                                 "atan"))))
    net = build_network(model, NormConfig(kind=norm), SHAPE).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # strong weights: every layer fires
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 3.0
                               / math.sqrt(m.weight[0].numel()))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.fill_(0.5)
        w = net.fc_hidden.weight
        w.copy_(torch.randn(w.shape, generator=g) * 6.0 / math.sqrt(w.shape[1]))
    return net


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    steps = K * CHUNKS + 1
    frames = torch.poisson(torch.full((steps, B, *SHAPE), 0.5, dtype=torch.float64), g)
    labels = torch.rand(steps, B, generator=g, dtype=torch.float64)
    return frames, labels


def train(net: torch.nn.Module, execution: str, monitor: bool = False):
    frames, labels = data()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    if not monitor:
        return run_sequence(net, frames, labels, k=K, optimizer=opt, execution=execution), None
    with Monitors(net, spikes=True) as mon:
        out = run_sequence(net, frames, labels, k=K, optimizer=opt, execution=execution)
    return out, mon.spike_activity()


def assert_same_training(ref: torch.nn.Module, fast: torch.nn.Module, tol: float = 1e-9) -> None:
    out_ref, activity = train(ref, "step", monitor=True)
    out_fast, _ = train(fast, "chunk")
    assert len(out_ref.chunk_losses) == CHUNKS
    for name, act in activity.items():  # meaningful only if every layer fires after chunk 1
        assert act[K:].mean() > 0.01, f"{name} must fire after the first chunk"
    assert len(set(out_ref.chunk_losses[1:])) > 1
    torch.testing.assert_close(torch.tensor(out_fast.chunk_losses[1:]),
                               torch.tensor(out_ref.chunk_losses[1:]), rtol=0, atol=tol)
    torch.testing.assert_close(torch.tensor(out_fast.chunk_losses),
                               torch.tensor(out_ref.chunk_losses), rtol=0, atol=tol)
    torch.testing.assert_close(torch.from_numpy(out_fast.preds), torch.from_numpy(out_ref.preds),
                               rtol=0, atol=1e-6)
    for (name, a), b in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=tol, msg=f"parameter {name}")
    for (name, a), b in zip(ref.named_buffers(), fast.buffers()):
        torch.testing.assert_close(b, a, rtol=0, atol=tol, msg=f"buffer {name}")


@pytest.mark.parametrize("block", ["sew", "plain", "spiking"])
def test_fast_engine_trains_like_the_step_loop(block: str) -> None:
    ref = make_net(block)
    assert_same_training(ref, copy.deepcopy(ref))


@pytest.mark.parametrize("neuron", [{"reset": "hard"}, {"surrogate": "sigmoid"},
                                    {"surrogate": "triangular", "reset": "hard"},
                                    {"surrogate": "fast_sigmoid", "detach_reset": False}],
                         ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_fast_engine_neuron_variants(neuron: dict) -> None:
    ref = make_net("sew", **neuron)
    assert_same_training(ref, copy.deepcopy(ref))


def test_fast_engine_channels_last_float64() -> None:
    ref = make_net("sew")
    fast = copy.deepcopy(ref)
    fast.configure_engine(fused=True, channels_last=True)
    assert_same_training(ref, fast)


def test_fast_engine_eval_matches_step_loop() -> None:
    """Inference: BatchNorm (running statistics) folded into the neuron."""
    ref = make_net("sew")
    train(ref, "chunk")  # non-trivial running statistics
    fast = copy.deepcopy(ref)
    frames, labels = data(seed=3)
    with torch.no_grad():
        a = run_sequence(ref.eval(), frames, labels, k=K, execution="step")
        b = run_sequence(fast.eval(), frames, labels, k=K, execution="chunk")
    torch.testing.assert_close(torch.tensor(b.chunk_losses), torch.tensor(a.chunk_losses),
                               rtol=0, atol=1e-9)


def test_fused_path_is_used(kernel_calls: list[str]) -> None:
    """With the kernels available the chunk path runs them (no silent fallback)."""
    if not native.available():
        pytest.skip("no C++ compiler: the engine runs its PyTorch fallback")
    net = make_net("sew")
    frames, labels = data()
    run_sequence(net, frames[: K + 1], labels[: K + 1], k=K,
                 optimizer=torch.optim.Adam(net.parameters()), execution="chunk")
    assert {"stats", "fwd", "bwd", "affine3"} <= set(kernel_calls)
