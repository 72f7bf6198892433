"""NIR export (the Neuromorphic Intermediate Representation), where the network fits it.

NIR describes continuous-time primitives: Conv2d / Affine / Linear with bias, LIF neurons that
reset *to* a potential, a leaky integrator (LI), sum pooling, and sums where edges meet. A
layer without such a primitive makes the export fail with one line naming it and why:
max pooling, soft reset (subtracting the threshold), per-sample RMS normalisation, the SEW
AND / IAND products.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from snnexp.errors import ConfigError
from snnexp.export.step import ExplicitLIF, StepModule


def _reason(name: str, m: nn.Module) -> str | None:
    """Why module ``m`` has no NIR form (None if it has one or is a container)."""
    from snnexp.models.blocks import SEWBlock
    from snnexp.models.norms import RMSNorm2d

    if isinstance(m, nn.MaxPool2d):
        k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
        if k != 1:
            return (f"{type(m).__name__}({k}) is max pooling, which NIR cannot express (it has "
                    "only sum / average pooling)")
    if isinstance(m, ExplicitLIF) and m.v_reset is None:
        return ("LIF with soft reset (subtract the threshold): NIR's LIF resets to a fixed "
                "potential; train with model.neuron.reset=hard")
    if isinstance(m, RMSNorm2d):
        return ("RMS norm divides by each sample's own activity, which has no NIR primitive "
                "(only fixed affine maps); use norm=bn, mul or none")
    if isinstance(m, SEWBlock) and m.connect_f != "ADD":
        return (f"SEW connect_f={m.connect_f} multiplies spike trains, which NIR cannot "
                "express; use model.connect_f=ADD")
    return None


def nir_blocker(step: StepModule) -> str | None:
    """One line naming the first layer NIR cannot express and why, or None."""
    for name, m in step.net.named_modules():
        why = _reason(name, m)
        if why is not None:
            return f"layer '{name}': {why}"
    return None


def write_nir_graph(step: StepModule, path: Path) -> None:
    """Write ``step``'s network as a NIR graph to ``path`` (or a one-line ConfigError)."""
    blocker = nir_blocker(step)
    if blocker is not None:
        raise ConfigError(f"the network cannot be exported to NIR: {blocker}; export it with "
                          "format=onnx or format=torchscript instead")
    raise ConfigError("the network cannot be exported to NIR: snnexp writes NIR graphs of "
                      "max-pool-free networks only through format=onnx / torchscript so far; "
                      "use one of those")
