"""NIR export (the Neuromorphic Intermediate Representation), where the network fits it.

NIR describes continuous-time primitives: Conv2d / Affine / Linear with bias, LIF neurons that
reset *to* a potential, a leaky integrator (LI), sum pooling, and sums where edges meet. A
layer without such a primitive makes the export fail with one line naming it and why:
max pooling, soft reset (subtracting the threshold), per-sample RMS normalisation, the SEW
AND / IAND products.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


class _Builder:
    """Collects NIR nodes and edges while walking the network stage by stage."""

    def __init__(self, step: StepModule, dt: float) -> None:
        import numpy as np

        self.np = np
        self.step, self.dt = step, dt
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.shapes = {s.name: s.shape[1:] for s in step.specs}  # per sample, no batch

    def add(self, name: str, node: Any, sources: list[str]) -> list[str]:
        self.nodes[name] = node
        self.edges += [(src, name) for src in sources]
        return [name]

    def conv(self, name: str, conv: nn.Conv2d, norm: nn.Module, sources: list[str],
             in_hw: tuple[int, int]) -> list[str]:
        """conv + norm folded into one NIR Conv2d with bias."""
        import nir

        np = self.np
        w = conv.weight.detach().double()
        scale, shift = _norm_affine(norm, conv.out_channels)
        w = w * scale.view(-1, 1, 1, 1)
        node = nir.Conv2d(input_shape=tuple(in_hw), weight=w.float().numpy(),
                          stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                          groups=conv.groups, bias=shift.float().numpy().astype(np.float32))
        return self.add(name, node, sources)

    def lif(self, name: str, sn: ExplicitLIF, sources: list[str]) -> list[str]:
        import nir

        np = self.np
        shape = self.shapes[name]
        tau = 1.0 / float(sn.decay) if sn.decay is not None else float(sn.tau)
        def full(value: float) -> Any:
            return np.full(shape, value, dtype=np.float32)

        node = nir.LIF(tau=full(tau * self.dt), r=full(1.0), v_leak=full(sn.v_reset),
                       v_threshold=full(sn.v_threshold), v_reset=full(sn.v_reset))
        return self.add(name, node, sources)


def _norm_affine(norm: nn.Module, channels: int) -> tuple[Any, Any]:
    """A norm in eval mode as per-channel (scale, shift), float64."""
    import torch

    from snnexp.models.norms import BatchNorm2d, MultiplyBy, NoNorm

    if isinstance(norm, BatchNorm2d):
        with torch.no_grad():
            var = norm.running_var.double()
            scale = torch.rsqrt(var + norm.eps)
            if norm.affine:
                scale = scale * norm.weight.double()
            shift = -norm.running_mean.double() * scale
            if norm.affine:
                shift = shift + norm.bias.double()
        return scale, shift
    if isinstance(norm, MultiplyBy):
        factor = float(norm.weight.detach().reshape(()))
        return torch.full((channels,), factor, dtype=torch.float64), \
            torch.zeros(channels, dtype=torch.float64)
    if isinstance(norm, NoNorm):
        return torch.ones(channels, dtype=torch.float64), torch.zeros(channels,
                                                                      dtype=torch.float64)
    raise ConfigError(f"the network cannot be exported to NIR: its norm {type(norm).__name__} "
                      "has no fixed affine form; use norm=bn, mul or none")


def _hw(b: _Builder, name: str) -> tuple[int, int]:
    return tuple(int(s) for s in b.shapes[name][-2:])  # type: ignore[return-value]


def _block(b: _Builder, name: str, block: nn.Module, src: list[str],
           in_hw: tuple[int, int]) -> list[str]:
    """A plain / Spiking-ResNet / SEW (ADD) block; returns the nodes whose sum is its output."""
    from snnexp.models.blocks import SEWBlock, SpikingBlock

    s1 = b.lif(f"{name}.sn1", block.sn1,
               b.conv(f"{name}.conv1", block.conv1, block.norm1, src, in_hw))
    branch = b.conv(f"{name}.conv2", block.conv2, block.norm2, s1, _hw(b, f"{name}.sn1"))
    if isinstance(block, SpikingBlock):  # LIF(branch + shortcut)
        short = src if block.downsample is None else b.conv(
            f"{name}.downsample", block.downsample.conv, block.downsample.norm, src, in_hw)
        return b.lif(f"{name}.sn2", block.sn2, branch + short)
    out = b.lif(f"{name}.sn2", block.sn2, branch)
    if isinstance(block, SEWBlock):  # ADD: spikes + shortcut, summed where the edges meet
        if block.downsample is None:
            return out + src
        d = block.downsample
        short = b.lif(f"{name}.downsample.sn", d.sn,
                      b.conv(f"{name}.downsample.conv", d.conv, d.norm, src, in_hw))
        return out + short
    return out


def write_nir_graph(step: StepModule, path: Path, dt: float) -> None:
    """Write ``step``'s network as a NIR graph to ``path`` (or a one-line ConfigError).

    One network step is one Euler step of length ``dt`` (the window, in seconds): SpikingJelly's
    ``v += (x - (v - v_reset)) / tau`` is NIR's ``tau_nir dv/dt = (v_leak - v) + r I`` with
    ``tau_nir = tau * dt``, ``v_leak = v_reset``, ``r = 1``; eval-mode norms are folded into
    the convolutions' weights and biases; the output integrator is an LI node.
    """
    import nir
    import numpy as np

    blocker = nir_blocker(step)
    if blocker is not None:
        raise ConfigError(f"the network cannot be exported to NIR: {blocker}; export it with "
                          "format=onnx or format=torchscript instead")
    net = step.net
    b = _Builder(step, dt)
    c, h, w = step.input_shape
    src = b.add("input", nir.Input(input_type={"input": np.array([c, h, w])}), [])
    hw = (h, w)
    for i, stage in enumerate(net.stages):
        if stage.adapt is not None:
            a = stage.adapt
            src = b.lif(f"stages.{i}.adapt.sn", a.sn,
                        b.conv(f"stages.{i}.adapt.conv", a.conv, a.norm, src, hw))
            hw = _hw(b, f"stages.{i}.adapt.sn")
        for j, block in enumerate(stage.blocks):
            src = _block(b, f"stages.{i}.blocks.{j}", block, src, hw)
            hw = _hw(b, f"stages.{i}.blocks.{j}.sn2")
    feat = (int(net.stages[-1].blocks[-1].conv2.out_channels) if len(net.stages) else c, *hw)
    src = b.add("flatten", nir.Flatten(input_type={"input": np.array(feat)}, start_dim=0), src)
    src = b.add("fc_hidden", nir.Linear(weight=net.fc_hidden.weight.detach().numpy()), src)
    src = b.lif("sn_hidden", net.sn_hidden, src)
    src = b.add("fc_out", nir.Linear(weight=net.fc_out.weight.detach().numpy()), src)
    tau_out = float(net.integrator.tau) * dt
    src = b.add("integrator", nir.LI(tau=np.array([tau_out], np.float32),
                                     r=np.array([1.0], np.float32),
                                     v_leak=np.array([0.0], np.float32)), src)
    b.add("output", nir.Output(output_type={"output": np.array([1])}), src)
    graph = nir.NIRGraph(nodes=b.nodes, edges=b.edges,
                         metadata={"dt": dt, "source": "snnexp", "prediction": "integrator"})
    nir.write(str(path), graph)
