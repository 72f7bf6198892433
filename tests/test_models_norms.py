"""Norm layers: formulas, parameters, and BatchNorm's per-time-step chunk semantics."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from snnexp.config.schema import NormConfig
from snnexp.errors import ConfigError
from snnexp.models import count_trainable_parameters
from snnexp.models.norms import BatchNorm2d, MultiplyBy, NoNorm, RMSNorm2d, make_norm


def test_rmsnorm_formula_and_weight() -> None:
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    norm = make_norm(NormConfig(kind="rms", eps=1e-3), 4).double()
    assert isinstance(norm, RMSNorm2d) and norm.weight.shape == (1, 4, 1, 1)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 5.0).view(1, 4, 1, 1))
    expected = x / torch.sqrt(x.pow(2).mean(dim=(2, 3), keepdim=True) + 1e-3)
    torch.testing.assert_close(norm(x), expected * torch.arange(1.0, 5.0).view(1, 4, 1, 1))
    torch.testing.assert_close(norm(x, 3), norm(x))  # per sample: chunks change nothing
    fixed = make_norm(NormConfig(kind="rms", learnable=False), 4)
    assert fixed.weight is None and count_trainable_parameters(fixed) == 0


def test_multiply_by_learnable_or_fixed() -> None:
    x = torch.randn(2, 3, 4, 4)
    mul = make_norm(NormConfig(kind="mul"), 3)
    assert isinstance(mul, MultiplyBy) and count_trainable_parameters(mul) == 1
    torch.testing.assert_close(mul(x), 5.0 * x)
    fixed = make_norm(NormConfig(kind="mul", learnable=False, init_scale=2.5), 3)
    assert count_trainable_parameters(fixed) == 0 and fixed.state_dict() == {}
    torch.testing.assert_close(fixed(x), 2.5 * x)


def test_none_is_identity_and_bad_kind_fails() -> None:
    x = torch.randn(2, 3, 4, 4)
    none = make_norm(NormConfig(kind="none"), 3)
    assert isinstance(none, NoNorm) and none(x, 1) is x
    with pytest.raises(ConfigError, match=r"norm\.kind.*bn, rms, mul, none"):
        make_norm(NormConfig(kind="layer"), 3)
    with pytest.raises(ConfigError, match=r"norm\.eps"):
        make_norm(NormConfig(eps=0.0), 3)


def test_batchnorm_state_dict_looks_like_torch() -> None:
    ours = make_norm(NormConfig(kind="bn"), 8)
    assert isinstance(ours, nn.BatchNorm2d)
    ref = nn.BatchNorm2d(8)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert ours.eps == ref.eps and ours.momentum == ref.momentum
    ref.load_state_dict(ours.state_dict())


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_chunk_uses_per_step_statistics(momentum: float | None, affine: bool) -> None:
    steps, batch = 6, 3
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(4, momentum=momentum, affine=affine).double()
    if affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 2.0)
            ref.bias.uniform_(-1, 1)
    ours = BatchNorm2d(4, momentum=momentum, affine=affine).double()
    ours.load_state_dict(ref.state_dict())
    for chunk in range(3):  # several chunks: running statistics carry over
        x = (torch.randn(steps * batch, 4, 5, 7, dtype=torch.float64) * (chunk + 1) + chunk)
        x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
        g = torch.randn_like(x)
        y_ref = torch.cat([ref(x_ref[t * batch:(t + 1) * batch]) for t in range(steps)])
        y_ours = ours(x_ours, steps)
        torch.testing.assert_close(y_ours, y_ref, rtol=0, atol=1e-12)
        inputs_ref = [x_ref, *ref.parameters()]
        inputs_ours = [x_ours, *ours.parameters()]
        for a, b in zip(torch.autograd.grad(y_ref, inputs_ref, g),
                        torch.autograd.grad(y_ours, inputs_ours, g)):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-10)
        for name, buf in ref.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[name], buf, rtol=0, atol=1e-12,
                                       msg=name)
    # a chunk is an ordinary batch in eval mode (running statistics)
    ref.eval()
    ours.eval()
    x = torch.randn(steps * batch, 4, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(ours(x, steps), ref(x))


def test_batchnorm_float32_chunk_is_close_to_native() -> None:
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(16)
    ours = copy.deepcopy(ref)
    ours.__class__ = BatchNorm2d
    x = torch.randn(10 * 4, 16, 13, 17) * 2 + 3
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref = torch.cat([ref(x_ref[t * 4:(t + 1) * 4]) for t in range(10)])
    y_ours = ours(x_ours, 10)
    torch.testing.assert_close(y_ours, y_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(x)
    for a, b in zip(torch.autograd.grad(y_ref, [x_ref, *ref.parameters()], g),
                    torch.autograd.grad(y_ours, [x_ours, *ours.parameters()], g)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-5, atol=1e-6)


def test_batchnorm_chunk_needs_more_than_one_value_per_step() -> None:
    bn = BatchNorm2d(2)
    with pytest.raises(ValueError, match="more than 1 value"):
        bn(torch.randn(3, 2, 1, 1), 3)
