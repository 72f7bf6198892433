"""Network structure: reference parameter counts, resolutions, state API, errors."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from snnexp.config.schema import ModelConfig, NormConfig, StageConfig
from snnexp.errors import ConfigError
from snnexp.models import SNNRegressor, build_network, count_trainable_parameters
from snnexp.models.blocks import PlainBlock, SEWBlock, SpikingBlock

# docs/METHOD.md section 2: trainable parameters at hidden 512 on 2 x 260 x 346 input.
REFERENCE_COUNTS = {
    ("sew", "bn"): 5_545_776, ("sew", "rms"): 5_545_512, ("sew", "mul"): 5_545_260,
    ("sew", "none"): 5_545_248,
    ("spiking", "bn"): 5_545_776, ("spiking", "rms"): 5_545_512, ("spiking", "mul"): 5_545_260,
    ("spiking", "none"): 5_545_248,
    ("plain", "bn"): 5_545_488, ("plain", "rms"): 5_545_240, ("plain", "mul"): 5_545_003,
    ("plain", "none"): 5_544_992,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(("block", "norm"), list(REFERENCE_COUNTS))
def test_reference_parameter_counts(block: str, norm: str) -> None:
    net = build_network(ModelConfig(block_type=block), NormConfig(kind=norm), (2, 260, 346))
    assert net.flat_features == 32 * 16 * 21
    assert count_trainable_parameters(net) == REFERENCE_COUNTS[(block, norm)]


def test_reference_layout() -> None:
    net = build_network(ModelConfig(), NormConfig(), (2, 260, 346))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    assert all(c.padding == (1, 1) for c in convs if c.kernel_size == (3, 3))
    s0 = net.stages[0]
    assert s0.adapt.conv.kernel_size == (3, 3) and net.stages[1].adapt is None
    assert net.stages[2].adapt.conv.kernel_size == (1, 1)
    block = s0.blocks[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert block.downsample.conv.kernel_size == (1, 1) and block.downsample.conv.stride == (2, 2)
    assert net.stages[1].blocks[0].downsample is None
    assert [s.pool.kernel_size for s in net.stages] == [2, 1, 2, 2]
    assert net.fc_hidden.bias is None and net.fc_out.bias is None
    assert (net.fc_hidden.in_features, net.fc_hidden.out_features) == (10752, 512)


def test_stage_block_type_overrides_the_model() -> None:
    stages = [StageConfig(8, 3, 8, 1, "plain", 2, 2, 1), StageConfig(8, 1, 8, 2, None, 1, 1, 1),
              StageConfig(12, 1, 12, 1, "spiking", 2, 1, 1)]
    net = build_network(ModelConfig(stages=stages, hidden=8), NormConfig(), (2, 24, 30))
    kinds = [type(b) for s in net.stages for b in s.blocks]
    assert kinds == [PlainBlock, SEWBlock, SEWBlock, SpikingBlock]


@pytest.mark.parametrize("shape", [(2, 240, 320), (2, 480, 640), (2, 65, 86), (1, 17, 23)])
def test_builds_and_runs_at_any_resolution(shape: tuple[int, int, int]) -> None:
    net = build_network(ModelConfig(hidden=8), NormConfig(), shape)
    h, w = shape[1:]
    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # stride-2 block
    for k in (2, 1, 2, 2):
        h, w = h // k, w // k
    assert net.flat_features == 32 * h * w
    net.reset_state()
    x = torch.rand(2, 1, *shape)
    assert net.forward_chunk(x).shape == (2, 1)
    assert net.forward_step(x[0]).shape == (1,)
    assert torch.isfinite(net.output_membrane()).all()


def test_too_small_input_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="too small|empty"):
        build_network(ModelConfig(hidden=8), NormConfig(), (2, 6, 6))


def test_bad_settings_name_the_key() -> None:
    cases = [(ModelConfig(block_type="dense"), NormConfig(), "model.block_type"),
             (ModelConfig(connect_f="OR"), NormConfig(), "model.connect_f"),
             (ModelConfig(), NormConfig(kind="ln"), "norm.kind"),
             (ModelConfig(stages=[StageConfig(block_type="x")]), NormConfig(),
              r"model.stages\[0\].block_type")]
    for model, norm, key in cases:
        with pytest.raises(ConfigError, match=key):
            build_network(model, norm, (2, 32, 40))


def test_accepts_dictconfig() -> None:
    model = OmegaConf.create({"block_type": "plain", "hidden": 8,
                              "stages": [{"channels": 8, "k_pool": 2, "stride_1": 2}]})
    net = build_network(model, OmegaConf.create({"kind": "rms"}), (2, 16, 16))
    assert isinstance(net, SNNRegressor)
    assert net.fc_hidden.in_features == 8 * 4 * 4


def test_state_api() -> None:
    net = build_network(ModelConfig(hidden=8), NormConfig(), (2, 16, 20))
    net.reset_state()
    with pytest.raises(RuntimeError, match="set_output_membrane"):
        net.output_membrane()
    net.set_output_membrane(torch.tensor([0.5, 0.25]))
    y = net(torch.rand(3, 2, 2, 16, 20))  # 5-D: a chunk
    assert y.shape == (3, 2) and y.requires_grad
    torch.testing.assert_close(net.output_membrane(), y[-1])
    net.detach_state()
    assert not net.output_membrane().requires_grad
    assert all(not m.v.requires_grad for m in net.modules() if hasattr(m, "node"))
    assert net(torch.rand(2, 2, 16, 20)).shape == (2,)  # 4-D: a step
    net.reset_state()
    assert all(m.v == 0.0 for m in net.modules() if hasattr(m, "node"))
    with pytest.raises(ValueError, match="frames"):
        net(torch.rand(2, 16, 20))
