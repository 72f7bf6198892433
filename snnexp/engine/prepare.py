"""``prepare(net, backend)``: the one pass that decides how a built network runs.

It swaps the network's layer groups (stem, conv + norm + LIF, blocks with their combine, stages
with their pool, single LIF and BatchNorm layers) for the engine modules of
:mod:`snnexp.engine.modules`, which adopt the same parameters and buffers (state_dict keys stay
the plain model's, so a checkpoint trained with one backend loads with another) and configures
them for the backend:

* ``native``: the native kernels of :mod:`snnexp.engine.native` (CPU); an error if they cannot
  be built;
* ``torch``: PyTorch and SpikingJelly only (SpikingJelly's multi-step LIF picks its own CPU /
  CUDA / Triton kernels), in the channels_last layout for float32 chunks;
* ``auto``: native where the kernels build and the network is on the CPU, else torch.

Single time steps run the plain modules' forward with every backend (except the linear layers
of a ``frozen`` network in inference: a sparse product, same sums in another order). Chunks of
one step (K = 1, one window per call in `snnexp infer`) take the fused kernels in inference.
``print(net)`` shows the engine modules and their backend.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from snnexp.engine import native, ops
from snnexp.engine.modules import ENGINE_MODULES, EngineLIF, EngineModule
from snnexp.errors import ConfigError

BACKENDS = ("auto", "native", "torch")

log = logging.getLogger(__name__)
_reported: set[str] = set()


def resolve_backend(backend: str, device: torch.device, march: str | None = None) -> str:
    """``native`` or ``torch`` for ``backend`` (auto | native | torch) on ``device``; ``march``
    (``trainer.kernel_march``) selects the instruction set the native kernels are built for."""
    if backend not in BACKENDS:
        raise ConfigError(f"config key 'trainer.engine' = {backend!r} is invalid: allowed values "
                          f"are {', '.join(BACKENDS)} (e.g. trainer.engine=auto)")
    if backend == "torch":
        return "torch"
    if march is not None and march != native.march() and device.type == "cpu":
        try:
            native.load(march)
        except ValueError:
            raise ConfigError(f"config key 'trainer.kernel_march' = {march!r} is invalid: use "
                              f"{', '.join(native.MARCHES)} (or another -march value of your "
                              "compiler)") from None
    if device.type != "cpu":
        if backend == "native":
            raise ConfigError(f"config key 'trainer.engine' = 'native' runs on the CPU only, the "
                              f"network is on {device.type}: use trainer.engine=auto or torch")
        return "torch"
    if native.available():
        return "native"
    if backend == "native":
        raise ConfigError("config key 'trainer.engine' = 'native' needs the native kernels, which "
                          "could not be built (no C++ compiler, or the build failed: see the "
                          "warning above): install g++ or use trainer.engine=auto or torch")
    return "torch"


def describe(backend: str, device: torch.device) -> str:
    """One line saying what runs the chunks."""
    if backend == "native":
        return f"engine: native kernels, {native.describe()} path, and PyTorch on {device}"
    if device.type == "cuda":
        return ("engine: torch on cuda (SpikingJelly's multi-step LIF: its CUDA / Triton kernels "
                "for float32 / float16, its PyTorch reference for float64)")
    return f"engine: torch on {device} (no native kernels)"


def prepare(net: nn.Module, backend: str = "auto", channels_last: bool | None = None,
            march: str | None = None, frozen: bool = False) -> nn.Module:
    """Swap ``net``'s layer groups for engine modules running ``backend`` (in place; also on an
    already prepared network, to change the backend). ``channels_last``: the chunks' layout
    (None: channels_last for float32). Call it after moving the network to its device and
    before attaching hooks or building the optimizer's DDP wrapper. ``march``: see
    :func:`resolve_backend`. ``frozen``: the weights will not change (inference of a loaded
    checkpoint), so modules may keep copies derived from them (the hidden layer's transposed
    weight, :class:`~snnexp.engine.modules.EngineLinear`). Returns ``net``."""
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    chosen = resolve_backend(backend, device, march)
    _swap(net, chosen == "native", channels_last)
    for m in net.modules():
        if isinstance(m, EngineModule):
            m.frozen = bool(frozen)
    line = describe(chosen, device)
    if line not in _reported:  # once per process and setting
        _reported.add(line)
        log.info(line)
    return net


def _swap(module: nn.Module, native_kernels: bool, channels_last: bool | None) -> None:
    for name, child in list(module.named_children()):
        engine_type = ENGINE_MODULES.get(type(child))
        if engine_type is EngineLIF and ops.lif_spec(child) is None:
            engine_type = None  # e.g. PLIF: SpikingJelly's own multi-step path, as it is
        if engine_type is not None:
            child = engine_type.adopt(child)
            setattr(module, name, child)
        if isinstance(child, EngineModule):
            child.configure(native_kernels, channels_last)
        _swap(child, native_kernels, channels_last)


def backend_of(net: nn.Module) -> str:
    """``native``, ``torch`` or ``plain`` (not prepared): what runs ``net``'s chunks."""
    for m in net.modules():
        if isinstance(m, EngineModule):
            return "native" if m.native else "torch"
    return "plain"
