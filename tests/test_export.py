"""`snnexp export`: the per-step module in TorchScript and ONNX runs like the PyTorch model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from snnexp.errors import ConfigError
from tests.ship_support import compose, make_checkpoint, recording

MODELS = {
    "sew-rms-soft": [],
    "plain-bn-hard": ["model=plain", "norm=bn", "model.neuron.reset=hard"],
    "spiking-mul-plif": ["model=spiking", "norm=mul", "model.neuron.kind=plif"],
}


@pytest.fixture(scope="module")
def frames(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """200 windows of the recording (the tiny setting's framing) and their labels."""
    from snnexp.data.pipeline import prepare_recording
    from snnexp.inference.model import load_model

    model = load_model(make_checkpoint(tmp_path_factory.mktemp("c"), sim_dir))
    prep = prepare_recording(recording(sim_dir), model.config.data)
    return (torch.from_numpy(np.asarray(prep.frames(100, 300), dtype=np.float32)),
            torch.from_numpy(prep.labels[100:300]))


def _export(ckpt: Path, fmt: str, out: Path, **extra: str):
    from snnexp.commands.export import export

    args = [f"ckpt={ckpt}", f"format={fmt}", f"output={out}", f"paths.output_dir={out.parent}",
            *[f"{k}={v}" for k, v in extra.items()]]
    return export(compose("export", args))


@pytest.mark.parametrize("name", list(MODELS))
def test_exported_step_module_matches_the_model_over_200_steps(name, sim_dir, tmp_path, frames,
                                                               one_torch_thread) -> None:
    import onnxruntime as ort

    from snnexp.inference.model import load_model

    ckpt = make_checkpoint(tmp_path, sim_dir, *MODELS[name])
    model = load_model(ckpt)
    res_ts = _export(ckpt, "torchscript", tmp_path / "m.pt")
    res_onnx = _export(ckpt, "onnx", tmp_path / "m.onnx")
    meta = json.loads(Path(res_onnx["metadata"]).read_text())
    assert meta["input_shape"] == [1, *model.input_shape] and meta["window_us"] == 10000
    assert meta["target_map"] == model.target_map.as_dict()
    ts = torch.jit.load(res_ts["output"])
    sess = ort.InferenceSession(res_onnx["output"], providers=["CPUExecutionProvider"])
    x_all, labels = frames
    state = [torch.zeros(s["shape"]) for s in meta["states"]]
    y_idx = [s["initial"] for s in meta["states"]].index("y0")
    state[y_idx] = labels[:1].clone()
    ts_state = list(state)
    ort_state = [s.numpy() for s in state]
    net = model.net
    net.reset_state()
    net.set_output_membrane(labels[:1])
    ref, got_ts, got_onnx = [], [], []
    with torch.no_grad():
        for t in range(1, len(x_all)):
            x = x_all[t:t + 1]
            ref.append(float(net.forward_step(x)[0]))
            y, *ts_state = ts(x, *ts_state)
            got_ts.append(float(y[0]))
            out = sess.run(None, {"frame": x.numpy(),
                                  **{f"state_{i}": v for i, v in enumerate(ort_state)}})
            got_onnx.append(float(out[0][0]))
            ort_state = out[1:]
    ref = np.asarray(ref)
    assert np.ptp(ref) > 1e-3  # the prediction moves: the comparison is not of constants
    assert np.abs(np.asarray(got_ts) - ref).max() <= 1e-5
    assert np.abs(np.asarray(got_onnx) - ref).max() <= 1e-5


def test_nir_names_the_layer_it_cannot_express(sim_dir, tmp_path) -> None:
    ckpt = make_checkpoint(tmp_path, sim_dir, "norm=bn", "model.neuron.reset=hard")
    with pytest.raises(ConfigError, match=r"cannot be exported to NIR: layer 'stages.0.pool': "
                                          r"MaxPool2d\(2\) is max pooling"):
        _export(ckpt, "nir", tmp_path / "m.nir")
    ckpt = make_checkpoint(tmp_path, sim_dir)
    with pytest.raises(ConfigError, match=r"layer 'stages.0.adapt.norm': RMS norm"):
        _export(ckpt, "nir", tmp_path / "m.nir")
    assert not (tmp_path / "m.nir").exists() and not (tmp_path / "m.nir.json").exists()


def test_unknown_format_and_existing_output_are_refused(sim_dir, tmp_path) -> None:
    ckpt = make_checkpoint(tmp_path, sim_dir)
    with pytest.raises(ConfigError, match="format=tflite is unknown: choose one of torchscript, "
                                          "onnx, nir"):
        _export(ckpt, "tflite", tmp_path / "m.tflite")
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="already exists: choose another output=PATH or pass "
                                          "overwrite=true"):
        _export(ckpt, "onnx", target)
    assert target.read_bytes() == b"keep me"
    _export(ckpt, "onnx", target, overwrite="true")
    assert target.stat().st_size > 10_000


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


def _ints(a) -> tuple[int, ...]:
    return tuple(int(v) for v in np.atleast_1d(a))


def _run_nir(graph, frames: torch.Tensor, y0: float) -> list[float]:
    """A small reference interpreter of the NIR graph: one Euler step of ``dt`` per frame,
    inputs summed where edges meet."""
    import torch.nn.functional as F

    dt = float(graph.metadata["dt"])
    preds, order, done = [], [], set()
    while len(order) < len(graph.nodes):  # topological order
        for name in graph.nodes:
            srcs = [a for a, b in graph.edges if b == name]
            if name not in done and all(s in done for s in srcs):
                order.append(name)
                done.add(name)
    state: dict[str, torch.Tensor] = {}
    for x in frames:
        out: dict[str, torch.Tensor] = {}
        for name in order:
            node = graph.nodes[name]
            kind = type(node).__name__
            srcs = [a for a, b in graph.edges if b == name]
            inp = sum(out[s] for s in srcs) if srcs else x
            if kind == "Conv2d":
                out[name] = F.conv2d(inp[None], _t(node.weight), _t(node.bias),
                                     _ints(node.stride), _ints(node.padding),
                                     _ints(node.dilation), int(node.groups))[0]
            elif kind == "Linear":
                out[name] = _t(node.weight) @ inp
            elif kind == "Flatten":
                out[name] = inp.flatten()
            elif kind in ("LIF", "LI"):
                v = state.get(name, torch.full_like(inp, y0) if kind == "LI"
                              else torch.zeros_like(inp))
                v = v + dt / _t(node.tau) * (_t(node.v_leak) - v + _t(node.r) * inp)
                if kind == "LIF":
                    spike = (v >= _t(node.v_threshold)).float()
                    v = spike * _t(node.v_reset) + (1 - spike) * v
                    out[name] = spike
                else:
                    out[name] = v
                state[name] = v
            else:  # Input, Output
                out[name] = inp
        preds.append(float(out["output"][0]))
    return preds


def test_nir_export_of_an_expressible_network_runs_like_the_model(sim_dir, tmp_path,
                                                                  frames) -> None:
    import nir

    from snnexp.inference.model import load_model

    no_pool = [f"model.stages.{i}.k_pool=1" for i in range(4)]
    ckpt = make_checkpoint(tmp_path, sim_dir, "norm=bn", "model.neuron.reset=hard", *no_pool)
    res = _export(ckpt, "nir", tmp_path / "m.nir")
    graph = nir.read(res["output"])
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert kinds == {"Input", "Conv2d", "LIF", "Flatten", "Linear", "LI", "Output"}
    model = load_model(ckpt)
    x_all, labels = frames
    model.net.reset_state()
    model.net.set_output_membrane(labels[:1])
    with torch.no_grad():
        ref = np.array([float(model.net.forward_step(x_all[t:t + 1])[0]) for t in range(1, 60)])
    got = np.array(_run_nir(graph, x_all[1:60], float(labels[0])))
    assert np.ptp(ref) > 1e-3
    assert np.abs(got - ref).max() <= 1e-4
