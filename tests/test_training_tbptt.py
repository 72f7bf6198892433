"""TBPTT procedure: chunk bounds, remainder, optimizer-step counts, loss positions, transient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snnexp.config.schema import ModelConfig, NormConfig, StageConfig
from snnexp.models import build_network
from snnexp.training.tbptt import chunk_bounds, run_sequence

SHAPE = (2, 16, 20)


def tiny_net(seed: int = 0, norm: str = "bn") -> torch.nn.Module:
    torch.manual_seed(seed)
    model = ModelConfig(stages=[StageConfig(4, 3, 4, 1, None, 2, 1, 1)], hidden=8)
    return build_network(model, NormConfig(kind=norm), SHAPE)


def batch(t: int = 26, b: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames = torch.poisson(torch.full((t, b, *SHAPE), 0.8), generator=g).to(torch.uint16)
    labels = torch.rand(t, b, generator=g)
    return frames, labels


def test_chunk_bounds_cover_steps_1_to_T_minus_1_with_remainder() -> None:
    assert chunk_bounds(26, 10) == [(1, 11), (11, 21), (21, 26)]
    assert chunk_bounds(21, 10) == [(1, 11), (11, 21)]
    assert chunk_bounds(2, 10) == [(1, 2)]
    assert chunk_bounds(1, 10) == []


class CountingAdam(torch.optim.Adam):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.calls = 0

    def step(self, closure=None):  # type: ignore[override]
        self.calls += 1
        return super().step(closure)


@pytest.mark.parametrize("execution", ["chunk", "step"])
def test_optimizer_steps_and_loss_positions(execution: str) -> None:
    net = tiny_net()
    frames, labels = batch(t=26)
    opt = CountingAdam(net.parameters(), lr=1e-3)
    losses: list[float] = []
    out = run_sequence(net, frames, labels, k=10, optimizer=opt, execution=execution,
                       on_chunk=lambda loss, step: losses.append(loss))
    assert opt.calls == out.optimizer_steps == 3  # 10 + 10 + remainder 5
    assert out.preds.shape == (25, 2) and out.targets.shape == (25, 2)
    np.testing.assert_allclose(out.targets, labels[1:].numpy(), rtol=0, atol=0)
    # each chunk's loss is the MSE of exactly its predictions against its labels
    bounds = [(0, 10), (10, 20), (20, 25)]
    expected = [float(np.mean((out.preds[a:b] - out.targets[a:b]) ** 2)) for a, b in bounds]
    # predictions of chunk n are made before chunk n's update, so they are the loss inputs
    np.testing.assert_allclose(losses, expected, rtol=1e-5)


def test_transient_steps_excluded_from_loss_and_updates() -> None:
    net = tiny_net()
    frames, labels = batch(t=26)
    opt = CountingAdam(net.parameters(), lr=1e-3)
    losses: list[float] = []
    out = run_sequence(net, frames, labels, k=10, transient=12, optimizer=opt,
                       on_chunk=lambda loss, step: losses.append(loss))
    # steps 1..12 are transient: chunk 1 (steps 1-10) has no counted step -> no update
    assert opt.calls == 2
    assert out.valid_from == 12
    assert out.counted_preds.shape == (13, 2)
    # chunk 2 covers steps 11-20; only steps 13-20 (preds index 12..19) count
    np.testing.assert_allclose(
        losses[0], float(np.mean((out.preds[12:20] - out.targets[12:20]) ** 2)), rtol=1e-5)


def test_initial_condition_is_the_first_label() -> None:
    net = tiny_net().eval()
    frames, labels = batch(t=3)
    frames.zero_()
    labels[0] = torch.tensor([0.25, 0.75])
    with torch.no_grad():
        out = run_sequence(net, frames, labels, k=10)
    # zero input: the integrator decays from the first label without any other drive
    tau = 20.0
    np.testing.assert_allclose(out.preds[0], [0.25 * (1 - 1 / tau), 0.75 * (1 - 1 / tau)],
                               rtol=1e-5)


def test_non_finite_loss_stops_with_clear_error() -> None:
    from snnexp.errors import TrainingError

    net = tiny_net()
    frames, labels = batch(t=26)
    labels[15, 0] = float("nan")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    with pytest.raises(TrainingError, match="optimizer step 2"):
        run_sequence(net, frames, labels, k=10, optimizer=opt)
