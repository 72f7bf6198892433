"""Engine modules: the model's layer groups, run fast on a chunk, with their own fallback.

Each class derives from the plain module it replaces (:func:`snnexp.engine.prepare` swaps them
in) and adopts its children, parameters and buffers, so state_dict keys and the optimizer's
tensors stay the plain model's. One time step always runs the plain forward (the reference;
a frozen network's linear layers excepted, see :class:`EngineLinear`); a chunk (in inference
also one of K = 1) runs the native kernels where they apply (``native`` on, CPU float32/64, a
LIF with a known surrogate, no hook watching a member) and otherwise the members one after
the other, in the channels_last layout for float32 (oneDNN's convolutions are 3-4x faster
there).

Groups fused on a chunk:

* ``EngineConvNormNeuron``: conv3x3 of spikes by table lookup (a strided 1x1 shortcut conv
  by a kernel that reads only the pixels it samples), per-step BatchNorm + LIF in one
  pass; as the stem (few input channels, inference) conv + BatchNorm + LIF in one pass;
* blocks: the same for each conv + norm + LIF, the SEW ADD in the last LIF's pass, the
  Spiking-ResNet sum (inference) before it, and the stage's MaxPool2d(2) (inference);
* ``EngineLIF`` / ``EngineBatchNorm2d``: a neuron or BatchNorm run on its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as nn_module

from snnexp.engine import functions, native, ops
from snnexp.models.blocks import (
    ConvNorm,
    ConvNormNeuron,
    PlainBlock,
    SEWBlock,
    SpikingBlock,
    Stage,
)
from snnexp.models.neurons import SpikingNeuron
from snnexp.models.norms import BatchNorm2d

# Inputs with at most this many channels (event frames: 2) take the fused stem kernel; oneDNN's
# convolutions are weak there (few input channels), but win with more.
STEM_MAX_IN_CHANNELS = 4
# EngineLinear in inference: inputs of at most this many rows (one window, a few windows) with
# at most this fraction of nonzero values read only those weight rows. Measured on the
# reference fc_hidden (10752 -> 512, float32, one thread, EPYC AVX-512, loaded machine): dense
# 0.9-1.8 ms per window; sparse 0.08 ms at 5 % nonzero, 0.14 at 15 %, 0.44 at 30 %, 1.2 at 50 %.
SPARSE_LINEAR_MAX_ROWS = 64
SPARSE_LINEAR_MAX_DENSITY = 0.5


def hooked(*modules: nn.Module | None) -> bool:
    """Whether a forward hook watches any of ``modules`` (or every module): they must then run
    as themselves, so the hook sees what it expects."""
    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        return True
    return any(m is not None and bool(m._forward_hooks or m._forward_pre_hooks)
               for m in modules)


def single_step_fuses() -> bool:
    """Whether a chunk of one step (K = 1) takes the kernels: in inference (no autograd; e.g.
    `snnexp infer`'s one window per call). Training with K = 1 keeps PyTorch's per-module path
    (the kernels' float64 batch statistics would round differently from the step loop's)."""
    return not torch.is_grad_enabled()


def _fits(residual: torch.Tensor, x: torch.Tensor) -> bool:
    return (residual.shape == x.shape and residual.dtype == x.dtype
            and residual.device == x.device)


def _pooled(x: torch.Tensor, pool: bool) -> torch.Tensor:
    """MaxPool2d(2) where the fused pass did not pool (same values)."""
    return F.max_pool2d(x, 2) if pool else x


class EngineModule(nn.Module):
    """What the engine modules share: the backend switch, the layout, the spike convs."""

    native: bool = True  # native kernels on chunks where they apply (False: PyTorch only)
    channels_last: bool | None = None  # chunk layout; None: channels_last for float32
    frozen: bool = False  # inference of fixed weights: derived copies of them may be kept

    def __init__(self) -> None:
        super().__init__()
        self._derived: dict[str, object] = {}  # copies derived from weights (spike tables, W^T)

    @classmethod
    def adopt(cls, plain: nn.Module) -> EngineModule:
        """An engine module holding ``plain``'s children, parameters, buffers and settings
        (the same objects: nothing is copied)."""
        module = cls.__new__(cls)
        module.__dict__.update(vars(plain))
        module._derived = {}
        return module

    def configure(self, native_kernels: bool, channels_last: bool | None) -> None:
        """Use the native kernels (or PyTorch only) and this chunk layout."""
        self.native = native_kernels
        self.channels_last = channels_last

    def kernels(self, x: torch.Tensor) -> bool:
        """Whether the native kernels may run on ``x``."""
        return self.native and native.supports(x)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """A chunk's images in the engine's layout."""
        cl = x.dtype == torch.float32 if self.channels_last is None else self.channels_last
        return x.contiguous(memory_format=torch.channels_last) if cl and x.dim() == 4 else x

    def lif_applies(self, sn: nn.Module, x: torch.Tensor, steps: int | None) -> bool:
        """Whether the neuron layer ``sn`` may run on chunk ``x`` through the kernels."""
        return (steps is not None and (steps > 1 or single_step_fuses()) and self.kernels(x)
                and ops.lif_spec(sn) is not None and not hooked(sn))

    def extra_repr(self) -> str:
        base = super().extra_repr()
        backend = f"backend={'native' if self.native else 'torch'}"
        return f"{base}, {backend}" if base else backend

    # ------------------------------------------------------------------ spike convolutions
    def conv_chunk(self, name: str, x: torch.Tensor, steps: int | None) -> torch.Tensor:
        """The child conv ``name`` of ``x``; on a chunk, a conv whose input holds only 0 / 1
        (spikes) sums lookup-table entries (one per tap and group of 8 input channels instead
        of Cin multiply-adds; same sums, another rounding order; in training PyTorch's
        convolution backward gives the gradients). An input with other values (e.g. a SEW ADD
        output, 0 / 1 / 2) is detected by the kernel; the conv then runs dense, and does so
        directly from then on."""
        conv = self._modules[name]
        if self._strided_pointwise(conv, x, steps):
            s = conv.stride[0]
            if self.kernels(x):
                return functions.StridedPointwiseConv.apply(x, conv.weight, s)
            # oneDNN's backward of this conv is wrong for channels_last inputs of some channel
            # counts (see kernels.cpp): the same sums as a 1x1 conv of the sampled pixels
            sampled = x[:, :, ::s, ::s].contiguous(memory_format=functions.memory_format_of(x))
            return F.conv2d(sampled, conv.weight)
        if not self._spike_conv_applies(name, conv, x, steps):
            return conv(x)
        status: list[bool] = []
        out = functions.SpikeConv.apply(x, conv.weight, self._tables(name, conv, x.dtype),
                                        conv.stride[0], conv.padding[0], status)
        if status:
            self._derived[name] = None  # not spikes: skip the check from now on
        return out

    def _spike_conv_applies(self, name: str, conv: nn.Module, x: torch.Tensor,
                            steps: int | None) -> bool:
        if steps is None or x.dim() != 4 or not self.kernels(x):
            return False
        if name in self._derived and self._derived[name] is None:
            return False  # dense input seen before
        k = conv.kernel_size[0] if type(conv) is nn.Conv2d else 0
        if not (type(conv) is nn.Conv2d and conv.kernel_size == (k, k)
                and k in functions.SPIKE_CONV_KERNEL_SIZES and conv.stride[0] == conv.stride[1]
                and conv.padding == (k // 2,) * 2 and conv.dilation == (1, 1)
                and conv.groups == 1 and conv.bias is None
                and conv.padding_mode == "zeros" and conv.weight.dtype == x.dtype):
            return False
        if (functions.spike_conv_table_bytes(conv.weight, x.dtype)
                > functions.SPIKE_CONV_MAX_TABLE_BYTES):
            return False
        return not hooked(conv)

    def _strided_pointwise(self, conv: nn.Module, x: torch.Tensor, steps: int | None) -> bool:
        """A 1x1 conv of stride > 1 (the downsampling shortcut) on a CPU chunk: the kernels
        read only the pixels it samples and write its input gradient in one pass."""
        if steps is None or x.dim() != 4 or x.device.type != "cpu":
            return False
        return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1)
                and conv.stride[0] == conv.stride[1] > 1 and conv.padding == (0, 0)
                and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is None
                and conv.weight.dtype == x.dtype and not hooked(conv))

    def _tables(self, name: str, conv: nn.Conv2d, dtype: torch.dtype) -> torch.Tensor:
        """The conv's lookup tables, kept with the weight they were built from and rebuilt when
        the weight changed (a comparison of a few thousand values per chunk)."""
        w = conv.weight.detach()
        cached = self._derived.get(name)
        if cached is None or cached[0].dtype != dtype or not torch.equal(cached[1], w):
            cached = (functions.spike_conv_tables(w, dtype), w.clone())
            self._derived[name] = cached
        return cached[0]

    # ------------------------------------------------------------------ norm + neuron
    def norm_lif_fuses(self, norm: nn.Module, sn: nn.Module, x: torch.Tensor,
                       steps: int | None) -> bool:
        """Whether ``sn(norm(x, steps), steps)`` may run as one kernel pass."""
        if not (ops.is_batch_norm(norm) and self.lif_applies(sn, x, steps)) or hooked(norm):
            return False
        if norm.training or not norm.track_running_stats:
            return x.shape[0] // steps * x.shape[2] * x.shape[3] > 1
        return not torch.is_grad_enabled()

    def norm_neuron(self, norm: nn.Module, sn: nn.Module, x: torch.Tensor, steps: int | None,
                    residual: torch.Tensor | None = None, pool: bool = False,
                    residual_before: bool = False) -> torch.Tensor:
        """``sn(norm(x, steps), steps)`` (``+ residual`` if given; ``residual_before``:
        ``sn(norm(x, steps) + residual, steps)``), in one kernel pass where it applies.
        ``pool`` (a chunk in inference) returns MaxPool2d(2) of the result, in the same pass
        where the kernels apply."""
        if residual is not None and residual_before:
            return self._neuron_of_sum(norm, sn, x, steps, residual, pool)
        if residual is not None and not _fits(residual, x):
            return _pooled(sn(norm(x, steps), steps) + residual, pool)
        if self.norm_lif_fuses(norm, sn, x, steps):
            return ops.lif(sn, x, steps, norm, residual, pool=pool)
        y = norm(x, steps)
        if (residual is not None or pool) and self.lif_applies(sn, y, steps):
            return ops.lif(sn, y, steps, None, residual, pool=pool)
        s = sn(y, steps)
        return _pooled(s if residual is None else s + residual, pool)

    def _neuron_of_sum(self, norm: nn.Module, sn: nn.Module, x: torch.Tensor,
                       steps: int | None, residual: torch.Tensor, pool: bool) -> torch.Tensor:
        """``sn(norm(x) + residual)`` (pooled if ``pool``): in inference on a chunk one kernel
        pass (eval BatchNorm folded in; other norms run first), otherwise module by module."""
        if _fits(residual, x) and not torch.is_grad_enabled():
            if (self.norm_lif_fuses(norm, sn, x, steps) and not norm.training
                    and norm.track_running_stats):
                return ops.lif(sn, x, steps, norm, residual, pool=pool, residual_before=True)
            y = norm(x, steps)
            if self.lif_applies(sn, y, steps):
                return ops.lif(sn, y, steps, None, residual, pool=pool, residual_before=True)
            return _pooled(sn(y + residual, steps), pool)
        return _pooled(sn(norm(x, steps) + residual, steps), pool)


# ---------------------------------------------------------------------- single layers
class EngineLIF(EngineModule, SpikingNeuron):
    """A LIF layer whose chunks run through the native kernel (SpikingJelly's path else)."""

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        if (steps is None or (steps == 1 and not single_step_fuses()) or not self.kernels(x)
                or ops.lif_spec(self) is None or hooked(self)):
            return SpikingNeuron.forward(self, x, steps)
        return ops.lif(self, x, steps)


class EngineBatchNorm2d(EngineModule, BatchNorm2d):
    """Per-step BatchNorm whose training chunks compute the K statistics in one kernel pass."""

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        if (steps is None or steps == 1 or not (self.training or not self.track_running_stats)
                or not self.kernels(x) or x.dim() != 4
                or x.shape[0] // steps * x.shape[2] * x.shape[3] <= 1):
            return BatchNorm2d.forward(self, x, steps)
        return ops.batch_norm(self, x, steps)


class EngineLinear(EngineModule, nn.Linear):
    """A linear layer whose input in inference is mostly zeros (the flattened spike map before
    the hidden layer): with frozen weights only the weight rows of the nonzero inputs are read.

    The reference network's ``fc_hidden`` holds 22 MB of weights that a dense product reads for
    every window; at one window per call that read is a large part of its time. A network
    prepared with ``frozen=True`` (inference of a loaded checkpoint: its weights do not change)
    keeps the transposed weight ``[in, out]``, and the product of a sample sums the rows of
    its nonzero inputs times their values (an embedding bag; exact: the zeros add nothing;
    another summation order). Denser inputs (``SPARSE_LINEAR_MAX_DENSITY``), autograd and
    networks that train use the dense product.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.frozen or torch.is_grad_enabled() or x.dim() != 2
                or x.shape[0] > SPARSE_LINEAR_MAX_ROWS or x.device.type != "cpu"
                or x.dtype != self.weight.dtype or hooked(self)):
            return nn.Linear.forward(self, x)
        rows, cols = torch.nonzero(x, as_tuple=True)
        if cols.numel() > SPARSE_LINEAR_MAX_DENSITY * x.numel():
            return nn.Linear.forward(self, x)
        # per sample the weighted sum of the weight rows of its nonzero inputs (one bag each)
        offsets = torch.searchsorted(rows, torch.arange(x.shape[0], device=x.device))
        y = F.embedding_bag(cols, self._transposed(), offsets, mode="sum",
                            per_sample_weights=x[rows, cols])
        return y if self.bias is None else y + self.bias

    def _transposed(self) -> torch.Tensor:
        """``weight.T`` contiguous; rebuilt if the weight was replaced or changed in place
        through itself (its version counter; a frozen network's weights should not change)."""
        w = self.weight.detach()
        key = (w.data_ptr(), self.weight._version, w.dtype, tuple(w.shape))
        cached = self._derived.get("weight_t")
        if cached is None or cached[1] != key:
            cached = (w.t().contiguous(), key)
            self._derived["weight_t"] = cached
        return cached[0]


# ---------------------------------------------------------------------- groups
class EngineConvNorm(EngineModule, ConvNorm):
    """conv + norm (the Spiking-ResNet shortcut): the conv of spikes by table lookup."""

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        if steps is None:
            return ConvNorm.forward(self, x)
        return self.norm(self.conv_chunk("conv", self.layout(x), steps), steps)


class EngineConvNormNeuron(EngineModule, ConvNormNeuron):
    """conv + norm + LIF in one kernel pass where it applies.

    As the network's stem (a conv3x3 of at most ``STEM_MAX_IN_CHANNELS`` channels, eval
    BatchNorm, inference) conv + BatchNorm + LIF run as one pass that never writes the conv's
    output, reading the frames in any layout and writing the spikes in the engine's layout.
    """

    def stem_applies(self, x: torch.Tensor, steps: int | None) -> bool:
        """Whether chunk ``x`` runs through the fused conv + LIF kernel."""
        conv, norm = self.conv, self.norm
        if steps is None or torch.is_grad_enabled() or x.dim() != 4:
            return False
        if not (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3)
                and conv.stride == (1, 1) and conv.padding == (1, 1)
                and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is None
                and conv.padding_mode == "zeros" and conv.in_channels <= STEM_MAX_IN_CHANNELS
                and conv.weight.dtype == x.dtype):
            return False
        if not ops.is_batch_norm(norm) or norm.training or not norm.track_running_stats:
            return False
        return self.lif_applies(self.sn, x, steps) and not hooked(conv, norm)

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        if steps is None:
            return ConvNormNeuron.forward(self, x)
        if self.stem_applies(x, steps):
            cl = x.dtype == torch.float32 if self.channels_last is None else self.channels_last
            return ops.conv_norm_lif(self.conv, self.norm, self.sn, x, steps, cl)
        return self.norm_neuron(self.norm, self.sn, self.conv_chunk("conv", self.layout(x), steps),
                                steps)


class _EngineTwoConv(EngineModule):
    """The branch of the two-conv blocks up to conv2 (norm2 and the last LIF come fused)."""

    takes_pool = True  # the stage's MaxPool2d(2) folds into the last LIF pass

    def branch_conv(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        s = self.norm_neuron(self.norm1, self.sn1, self.conv_chunk("conv1", x, steps), steps)
        return self.conv_chunk("conv2", s, steps)


class EnginePlainBlock(_EngineTwoConv, PlainBlock):
    """conv + norm + LIF twice, each fused where it applies (+ the stage's pool)."""

    def forward(self, x: torch.Tensor, steps: int | None = None, pool: bool = False
                ) -> torch.Tensor:
        if steps is None:
            return PlainBlock.forward(self, x)
        return self.norm_neuron(self.norm2, self.sn2, self.branch_conv(self.layout(x), steps),
                                steps, pool=pool)


class EngineSpikingBlock(_EngineTwoConv, SpikingBlock):
    """Spiking-ResNet: in inference norm2 + the shortcut add + LIF (+ pool) in one pass."""

    def forward(self, x: torch.Tensor, steps: int | None = None, pool: bool = False
                ) -> torch.Tensor:
        if steps is None:
            return SpikingBlock.forward(self, x)
        x = self.layout(x)
        identity = self.shortcut(x, steps)
        return self.norm_neuron(self.norm2, self.sn2, self.branch_conv(x, steps), steps,
                                residual=identity, pool=pool, residual_before=True)


class EngineSEWBlock(_EngineTwoConv, SEWBlock):
    """SEW-ResNet: the ADD (and the stage's pool) in the last LIF's kernel pass."""

    @property
    def takes_pool(self) -> bool:
        return self.connect_f == "ADD"

    def forward(self, x: torch.Tensor, steps: int | None = None, pool: bool = False
                ) -> torch.Tensor:
        if steps is None:
            return SEWBlock.forward(self, x)
        if pool and not self.takes_pool:
            raise ValueError(f"SEW connect_f {self.connect_f} cannot fold a pool")
        x = self.layout(x)
        branch = self.branch_conv(x, steps)
        identity = self.shortcut(x, steps)
        if self.connect_f == "ADD":
            return self.norm_neuron(self.norm2, self.sn2, branch, steps, residual=identity,
                                    pool=pool)
        return self.connect(self.norm_neuron(self.norm2, self.sn2, branch, steps), identity)


class EngineStage(EngineModule, Stage):
    """A stage whose MaxPool2d(2) folds into its last block's final LIF pass in inference, and
    whose MaxPool2d(1) (a copy) is skipped."""

    def pool_folds(self, steps: int | None) -> bool:
        """A chunk in inference (no autograd: the backward needs the pool's indices) and an
        unhooked MaxPool2d(2) (stride 2, no padding, floor mode)."""
        p = self.pool
        return (steps is not None and not torch.is_grad_enabled()
                and type(p) is nn.MaxPool2d and p.kernel_size in (2, (2, 2))
                and p.stride in (2, (2, 2)) and p.padding in (0, (0, 0))
                and p.dilation in (1, (1, 1)) and not p.ceil_mode
                and not p.return_indices and not hooked(p))

    def pool_is_identity(self) -> bool:
        """MaxPool2d(1) (stride 1, no padding) copies its input: skipped unless hooked."""
        p = self.pool
        return (type(p) is nn.MaxPool2d and p.kernel_size in (1, (1, 1))
                and p.stride in (1, (1, 1)) and p.padding in (0, (0, 0))
                and not p.ceil_mode and not (hooked(p) or p._backward_hooks))

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        if steps is None:
            return Stage.forward(self, x)
        if self.adapt is not None:
            x = self.adapt(x, steps)
        for i, block in enumerate(self.blocks):
            if (i == len(self.blocks) - 1 and getattr(block, "takes_pool", False)
                    and self.pool_folds(steps)):
                return block(x, steps, pool=True)
            x = block(x, steps)
        return x if self.pool_is_identity() else self.pool(x)


# plain module type -> engine module type (exact types: a subclass of a plain module may
# compute something else and stays as it is)
ENGINE_MODULES: dict[type, type[EngineModule]] = {
    SpikingNeuron: EngineLIF,
    nn.Linear: EngineLinear,
    BatchNorm2d: EngineBatchNorm2d,
    ConvNorm: EngineConvNorm,
    ConvNormNeuron: EngineConvNormNeuron,
    PlainBlock: EnginePlainBlock,
    SpikingBlock: EngineSpikingBlock,
    SEWBlock: EngineSEWBlock,
    Stage: EngineStage,
}
