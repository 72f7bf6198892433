"""Residual blocks (plain, Spiking-ResNet, SEW-ResNet) and the network's stages.

Layer order, strides and shortcuts as docs/METHOD.md section 2 (and SpikingJelly's
``sew_resnet.BasicBlock``): conv -> norm -> neuron, then the combine. Every conv is bias-free
and the 3x3 convs have padding 1. Blocks take ``(x, steps)`` like the norms and neurons they
contain: convolutions see the flattened ``[steps * B, ...]`` batch, norms and neurons the time
structure. How fast they run is :mod:`snnexp.engine`'s business (``engine.prepare``).
"""

from __future__ import annotations

import torch
from torch import nn

from snnexp.config.schema import BLOCK_TYPES, CONNECT_FUNCTIONS, StageConfig
from snnexp.errors import ConfigError
from snnexp.models.factory import LayerFactory


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (the downsampling shortcut)."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class ConvNorm(nn.Module):
    """conv + norm (the Spiking-ResNet shortcut)."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return self.norm(self.conv(x), steps)


class ConvNormNeuron(ConvNorm):
    """conv + norm + spiking neuron (the stem, channel adaptation, SEW shortcut)."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module, sn: nn.Module) -> None:
        super().__init__(conv, norm)
        self.sn = sn

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return self.sn(self.norm(self.conv(x), steps), steps)


class _TwoConvBlock(nn.Module):
    """conv3x3(stride_1) + norm + LIF, conv3x3(stride_2) + norm, and the block's last LIF."""

    def __init__(self, channels: int, mid_channels: int, stride_1: int, stride_2: int,
                 layers: LayerFactory) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, mid_channels, stride_1)
        self.norm1 = layers.norm(mid_channels)
        self.sn1 = layers.neuron()
        self.conv2 = conv3x3(mid_channels, channels, stride_2)
        self.norm2 = layers.norm(channels)
        self.sn2 = layers.neuron()

    def branch(self, x: torch.Tensor, steps: int | None) -> torch.Tensor:
        """The residual branch up to norm2 (before the block's last LIF)."""
        s = self.sn1(self.norm1(self.conv1(x), steps), steps)
        return self.norm2(self.conv2(s), steps)


class PlainBlock(_TwoConvBlock):
    """conv3x3(stride_1) + norm + LIF, conv3x3(stride_2) + norm + LIF; no shortcut."""

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return self.sn2(self.branch(x, steps), steps)


def _shortcut_stride(stride_1: int, stride_2: int) -> int:
    # The reference downsamples the shortcut (conv1x1 stride 2) when stride_1 is 2; in general
    # the shortcut must match the branch's total stride stride_1 * stride_2.
    return stride_1 * stride_2


class SpikingBlock(_TwoConvBlock):
    """Spiking-ResNet: LIF(branch + shortcut); shortcut identity or conv1x1 + norm."""

    def __init__(self, channels: int, mid_channels: int, stride_1: int, stride_2: int,
                 layers: LayerFactory) -> None:
        super().__init__(channels, mid_channels, stride_1, stride_2, layers)
        stride = _shortcut_stride(stride_1, stride_2)
        self.downsample = (ConvNorm(conv1x1(channels, channels, stride), layers.norm(channels))
                           if stride != 1 else None)

    def shortcut(self, x: torch.Tensor, steps: int | None) -> torch.Tensor:
        return x if self.downsample is None else self.downsample(x, steps)

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return self.sn2(self.branch(x, steps) + self.shortcut(x, steps), steps)


class SEWBlock(_TwoConvBlock):
    """SEW-ResNet: connect(LIF(branch), shortcut); shortcut identity or conv1x1 + norm + LIF.

    connect_f: ADD s + id, AND s * id, IAND id * (1 - s), with s the branch's spikes.
    """

    def __init__(self, channels: int, mid_channels: int, stride_1: int, stride_2: int,
                 layers: LayerFactory, connect_f: str = "ADD") -> None:
        super().__init__(channels, mid_channels, stride_1, stride_2, layers)
        if connect_f not in CONNECT_FUNCTIONS:
            raise ConfigError(f"config key 'model.connect_f' = {connect_f!r} is invalid: allowed "
                              f"values are {', '.join(CONNECT_FUNCTIONS)} (e.g. "
                              "model.connect_f=ADD)")
        self.connect_f = connect_f
        stride = _shortcut_stride(stride_1, stride_2)
        self.downsample = (ConvNormNeuron(conv1x1(channels, channels, stride),
                                          layers.norm(channels), layers.neuron())
                           if stride != 1 else None)

    def shortcut(self, x: torch.Tensor, steps: int | None) -> torch.Tensor:
        return x if self.downsample is None else self.downsample(x, steps)

    def connect(self, s: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """Combine the branch's spikes ``s`` with the shortcut."""
        if self.connect_f == "ADD":
            return s + identity
        if self.connect_f == "AND":
            return s * identity
        return identity * (1.0 - s)

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        s = self.sn2(self.branch(x, steps), steps)
        return self.connect(s, self.shortcut(x, steps))

    def extra_repr(self) -> str:
        return f"connect_f={self.connect_f}"


def make_block(block_type: str, channels: int, mid_channels: int, stride_1: int, stride_2: int,
               layers: LayerFactory, connect_f: str = "ADD",
               key: str = "model.block_type") -> nn.Module:
    """A block of type sew | plain | spiking (``key`` names the setting in errors)."""
    if block_type not in BLOCK_TYPES:
        raise ConfigError(f"config key '{key}' = {block_type!r} is invalid: allowed values are "
                          f"{', '.join(BLOCK_TYPES)} (e.g. model=sew)")
    if block_type == "sew":
        return SEWBlock(channels, mid_channels, stride_1, stride_2, layers, connect_f)
    if block_type == "spiking":
        return SpikingBlock(channels, mid_channels, stride_1, stride_2, layers)
    return PlainBlock(channels, mid_channels, stride_1, stride_2, layers)


class Stage(nn.Module):
    """[conv(up_kernel_size) + norm + LIF if the channels change] + num_blocks blocks + pool.

    Every block of the stage uses the stage's stride_1 / stride_2 (the reference has one block
    per stage). The MaxPool2d(k_pool) is there also when k_pool is 1, as in the reference.
    """

    def __init__(self, in_channels: int, cfg: StageConfig, block_type: str, connect_f: str,
                 layers: LayerFactory, key: str = "model.stages[0]") -> None:
        super().__init__()
        ch, k = cfg.channels, cfg.up_kernel_size
        self.adapt = (ConvNormNeuron(nn.Conv2d(in_channels, ch, k, padding=k // 2, bias=False),
                                     layers.norm(ch), layers.neuron())
                      if in_channels != ch else None)
        block_key = f"{key}.block_type" if cfg.block_type is not None else "model.block_type"
        self.blocks = nn.ModuleList(
            make_block(block_type, ch, cfg.mid_channels, cfg.stride_1, cfg.stride_2, layers,
                       connect_f, key=block_key)
            for _ in range(cfg.num_blocks))
        self.pool = nn.MaxPool2d(cfg.k_pool)

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        if self.adapt is not None:
            x = self.adapt(x, steps)
        for block in self.blocks:
            x = block(x, steps)
        return self.pool(x)
