"""The export formats, one writer each, registered by name (``format=`` of `snnexp export`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from snnexp.errors import require
from snnexp.export.step import StepModule

Writer = Callable[[StepModule, Path, dict[str, Any]], None]
FORMATS: dict[str, tuple[str, Writer]] = {}  # name -> (file suffix, writer)


def register(name: str, suffix: str) -> Callable[[Writer], Writer]:
    def deco(fn: Writer) -> Writer:
        FORMATS[name] = (suffix, fn)
        return fn

    return deco


def example_inputs(step: StepModule) -> tuple[torch.Tensor, ...]:
    """A frame with a few events and the initial state: inputs for tracing."""
    frame = torch.zeros(1, *step.input_shape)
    frame[0, :, ::3, ::5] = 1.0
    return (frame, *step.initial_state(0.5))


def _trace(step: StepModule) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(step, example_inputs(step), check_trace=False)


@register("torchscript", ".pt")
def write_torchscript(step: StepModule, path: Path, options: dict[str, Any]) -> None:
    """A traced TorchScript module (``torch.jit.load`` in Python or libtorch in C++)."""
    _trace(step).save(str(path))


@register("onnx", ".onnx")
def write_onnx(step: StepModule, path: Path, options: dict[str, Any]) -> None:
    """An ONNX graph (TorchScript-based exporter; opset ``options['opset']``)."""
    onnx = require("onnx", "format=onnx needs the onnx package: pip install onnx onnxruntime "
                   "(or pip install 'snnexp[export]')")
    n = len(step.specs)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(step, example_inputs(step), str(path), dynamo=False,
                          opset_version=int(options.get("opset", 17)),
                          input_names=["frame", *[f"state_{i}" for i in range(n)]],
                          output_names=["y", *[f"next_state_{i}" for i in range(n)]],
                          keep_initializers_as_inputs=True)
    # The exporter's pass that merges equal initializers (e.g. norm weights still at 1) leaves
    # nodes pointing at removed names, so it is skipped above; the weights are then moved out
    # of the graph inputs here (constants again, as onnxruntime prefers).
    graph = onnx.load(str(path))
    weights = {t.name for t in graph.graph.initializer}
    keep = [i for i in graph.graph.input if i.name not in weights]
    del graph.graph.input[:]
    graph.graph.input.extend(keep)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))


@register("nir", ".nir")
def write_nir(step: StepModule, path: Path, options: dict[str, Any]) -> None:
    """A NIR graph, where the network can be expressed in NIR's primitives."""
    require("nir", "format=nir needs the nir package: pip install nir (or pip install "
            "'snnexp[export]')")
    from snnexp.export.nir import write_nir_graph

    write_nir_graph(step, path, dt=float(options["window_us"]) * 1e-6)
