"""The chunk engine, with every backend, computes what the per-step reference loop computes
(float64); checkpoints, monitors and errors do not depend on the backend.

20 chunks of TBPTT training (Adam) in both execution modes from the same network and data:
per-chunk losses, final parameters and BatchNorm buffers agree to 1e-9. Weights are scaled so
that every layer, the hidden one included, fires from the second chunk on (checked), otherwise
a wrong engine could still match.
"""

from __future__ import annotations

import copy
import math
import platform

import pytest
import torch

from snnexp import engine
from snnexp.config.schema import (
    ModelConfig,
    NeuronConfig,
    NormConfig,
    StageConfig,
    SurrogateConfig,
)
from snnexp.engine import native
from snnexp.errors import ConfigError
from snnexp.models import Monitors, build_network
from snnexp.training.tbptt import run_sequence

SHAPE = (2, 24, 32)
K, CHUNKS, B = 10, 20, 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")
NATIVE = pytest.param("native", marks=pytest.mark.skipif(
    not native.available(), reason="no C++ compiler: no native kernels"))
BACKENDS = [NATIVE, "torch"]


def prepared(net: torch.nn.Module, backend: str, **kw) -> torch.nn.Module:
    """A prepared copy of ``net`` (the original stays plain: the step-loop reference)."""
    return engine.prepare(copy.deepcopy(net), backend, **kw)


def make_net(block: str = "sew", norm: str = "bn", **neuron: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = ModelConfig(block_type=block, hidden=16,
                        neuron=NeuronConfig(**{k: v for k, v in neuron.items()
                                               if k != "surrogate"},
                                            surrogate=SurrogateConfig(neuron.get("surrogate",
                                                                                 "atan"))))
    net = build_network(model, NormConfig(kind=norm), SHAPE).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # strong weights: every layer fires
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 3.0
                               / math.sqrt(m.weight[0].numel()))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.fill_(0.5)
        w = net.fc_hidden.weight
        w.copy_(torch.randn(w.shape, generator=g) * 6.0 / math.sqrt(w.shape[1]))
    return net


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    steps = K * CHUNKS + 1
    frames = torch.poisson(torch.full((steps, B, *SHAPE), 0.5, dtype=torch.float64), g)
    labels = torch.rand(steps, B, generator=g, dtype=torch.float64)
    return frames, labels


def train(net: torch.nn.Module, execution: str, monitor: bool = False):
    frames, labels = data()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    if not monitor:
        return run_sequence(net, frames, labels, k=K, optimizer=opt, execution=execution), None
    with Monitors(net, spikes=True) as mon:
        out = run_sequence(net, frames, labels, k=K, optimizer=opt, execution=execution)
    return out, mon.spike_activity()


def assert_same_training(ref: torch.nn.Module, fast: torch.nn.Module, tol: float = 1e-9) -> None:
    out_ref, activity = train(ref, "step", monitor=True)
    out_fast, _ = train(fast, "chunk")
    assert len(out_ref.chunk_losses) == CHUNKS
    for name, act in activity.items():  # meaningful only if every layer fires after chunk 1
        assert act[K:].mean() > 0.01, f"{name} must fire after the first chunk"
    assert len(set(out_ref.chunk_losses[1:])) > 1
    torch.testing.assert_close(torch.tensor(out_fast.chunk_losses[1:]),
                               torch.tensor(out_ref.chunk_losses[1:]), rtol=0, atol=tol)
    torch.testing.assert_close(torch.tensor(out_fast.chunk_losses),
                               torch.tensor(out_ref.chunk_losses), rtol=0, atol=tol)
    torch.testing.assert_close(torch.from_numpy(out_fast.preds), torch.from_numpy(out_ref.preds),
                               rtol=0, atol=1e-6)
    for (name, a), b in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=tol, msg=f"parameter {name}")
    for (name, a), b in zip(ref.named_buffers(), fast.buffers()):
        torch.testing.assert_close(b, a, rtol=0, atol=tol, msg=f"buffer {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block", ["sew", "plain", "spiking"])
def test_fast_engine_trains_like_the_step_loop(block: str, backend: str) -> None:
    ref = make_net(block)
    assert_same_training(ref, prepared(ref, backend))


@pytest.mark.parametrize("neuron", [{"reset": "hard"}, {"surrogate": "sigmoid"},
                                    {"surrogate": "triangular", "reset": "hard"},
                                    {"surrogate": "fast_sigmoid", "detach_reset": False}],
                         ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_fast_engine_neuron_variants(neuron: dict) -> None:
    ref = make_net("sew", **neuron)
    assert_same_training(ref, prepared(ref, "auto"))


def test_fast_engine_channels_last_float64() -> None:
    ref = make_net("sew")
    assert_same_training(ref, prepared(ref, "auto", channels_last=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_fast_engine_eval_matches_step_loop(backend: str) -> None:
    """Inference: BatchNorm (running statistics) folded into the neuron."""
    ref = make_net("sew")
    train(ref, "chunk")  # non-trivial running statistics
    fast = prepared(ref, backend)
    frames, labels = data(seed=3)
    with torch.no_grad():
        a = run_sequence(ref.eval(), frames, labels, k=K, execution="step")
        b = run_sequence(fast.eval(), frames, labels, k=K, execution="chunk")
    torch.testing.assert_close(torch.tensor(b.chunk_losses), torch.tensor(a.chunk_losses),
                               rtol=0, atol=1e-9)


def test_fused_path_is_used(kernel_calls: list[str]) -> None:
    """With the kernels available the chunk path runs them (no silent fallback)."""
    if not native.available():
        pytest.skip("no C++ compiler: the engine runs its PyTorch fallback")
    net = engine.prepare(make_net("sew"), "native")
    frames, labels = data()
    run_sequence(net, frames[: K + 1], labels[: K + 1], k=K,
                 optimizer=torch.optim.Adam(net.parameters()), execution="chunk")
    assert {"stats", "fwd", "bwd", "affine3"} <= set(kernel_calls)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_checkpoint_trained_with_one_backend_evaluates_with_another(backend: str) -> None:
    """The state_dict keeps the plain model's keys whatever the backend: weights trained with
    ``backend`` load into a plain network and into one prepared with the other backends, and
    all give the predictions of the step loop."""
    trained = prepared(make_net("sew"), backend)
    train(trained, "chunk")
    state = trained.state_dict()
    plain = make_net("sew")
    assert list(state) == list(plain.state_dict())
    frames, labels = data(seed=5)
    preds = []
    for other in ("plain", "native", "torch"):
        if other == "native" and not native.available():
            continue
        net = make_net("sew")
        if other != "plain":
            engine.prepare(net, other)
        net.load_state_dict(state)
        with torch.no_grad():
            out = run_sequence(net.eval(), frames, labels, k=K,
                               execution="step" if other == "plain" else "chunk")
        preds.append(torch.from_numpy(out.preds))
    for p in preds[1:]:
        torch.testing.assert_close(p, preds[0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("train_mode", [True, False], ids=["train", "eval"])
def test_monitors_record_the_same_statistics_with_every_backend(train_mode: bool) -> None:
    """Spike activity and norm statistics of the step loop, of the plain chunk path and of each
    backend's engine modules agree (float64)."""
    base = make_net("sew")
    frames, labels = data()
    frames, labels = frames[: 2 * K + 1], labels[: 2 * K + 1]
    records = {}
    for name in ("step", "plain", "native", "torch"):
        if name == "native" and not native.available():
            continue
        net = copy.deepcopy(base) if name in ("step", "plain") else prepared(base, name)
        net.train(train_mode)
        with Monitors(net, spikes=True, norms=True) as mon, torch.no_grad():
            run_sequence(net, frames, labels, k=K, execution="step" if name == "step" else "chunk")
        records[name] = (mon.spike_activity(), mon.norm_stats())
    ref_spikes, ref_norms = records.pop("step")
    assert len(ref_norms) >= 10 and all(v.mean() > 0.01 for v in ref_spikes.values())
    for name, (spikes, norms) in records.items():
        assert spikes.keys() == ref_spikes.keys() and norms.keys() == ref_norms.keys(), name
        for layer, act in ref_spikes.items():
            torch.testing.assert_close(torch.from_numpy(spikes[layer]), torch.from_numpy(act),
                                       rtol=0, atol=1e-9, msg=f"{name}: spikes of {layer}")
        for layer, stats in ref_norms.items():
            for key, value in stats.items():
                torch.testing.assert_close(torch.from_numpy(norms[layer][key]),
                                           torch.from_numpy(value), rtol=0, atol=1e-9,
                                           msg=f"{name}: {key} of {layer}")


def test_print_shows_the_engine_modules_and_backend() -> None:
    net = make_net("sew")
    plain = repr(net)
    assert "Engine" not in plain and "SEWBlock" in plain
    text = repr(engine.prepare(net, "torch"))
    assert "EngineSEWBlock" in text and "EngineStage" in text and "EngineLIF" in text
    assert "backend=torch" in text and "backend=native" not in text
    assert engine.backend_of(net) == "torch"
    if native.available():
        assert "backend=torch" not in repr(engine.prepare(net, "native"))  # re-prepared
        assert engine.backend_of(net) == "native"


def test_plif_neurons_stay_spikingjelly_modules() -> None:
    """No kernel for PLIF: its layers stay SpikingJelly's; the blocks still run the engine."""
    net = engine.prepare(make_net("sew", kind="plif"), "auto")
    kinds = {type(m).__name__ for m in net.modules()}
    assert "SpikingNeuron" in kinds and "EngineLIF" not in kinds and "EngineSEWBlock" in kinds


def test_bad_backends_stop_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    net = make_net("sew")
    with pytest.raises(ConfigError, match="trainer.engine.*auto, native, torch"):
        engine.prepare(net, "fast")
    monkeypatch.setattr(native, "available", lambda: False)  # e.g. no C++ compiler
    with pytest.raises(ConfigError, match="could not be built.*trainer.engine=auto or torch"):
        engine.prepare(net, "native")
    assert engine.backend_of(engine.prepare(net, "auto")) == "torch"
    with pytest.raises(ConfigError, match="CPU only"):
        engine.resolve_backend("native", torch.device("cuda"))
    assert engine.resolve_backend("auto", torch.device("cuda")) == "torch"


@pytest.mark.skipif(not native.available() or platform.machine() != "x86_64",
                    reason="x86-64 native kernels unavailable")
def test_kernel_march_selects_the_kernel_path_and_bad_values_stop(caplog, monkeypatch) -> None:
    """trainer.kernel_march reaches the kernel build (the portable path here), the engine logs
    the path it runs, results stay the step loop's, and a malformed value is one line."""
    import importlib

    prepare_module = importlib.import_module("snnexp.engine.prepare")  # the function shadows it
    monkeypatch.setattr(prepare_module, "_reported", set())  # the line is logged once a process
    previous = native.march()
    try:
        net = make_net("sew")
        with caplog.at_level("INFO", logger="snnexp.engine.prepare"):
            engine.prepare(net, "native", march="x86-64-v2")
        assert native.march() == "x86-64-v2" and native.isa() == "portable"
        assert "portable (-march=x86-64-v2)" in caplog.text
        with pytest.raises(ConfigError, match="trainer.kernel_march.*x86-64-v3"):
            engine.resolve_backend("auto", torch.device("cpu"), "native -O0")
        assert native.march() == "x86-64-v2"  # the loaded kernels are kept
    finally:
        native.load(previous)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_chunks_match_the_step_loop() -> None:
    """On CUDA the engine runs torch (SpikingJelly's multi-step LIF picks its CUDA / Triton
    kernels): float64 chunk training equals the step loop to 1e-9, and float32 (SpikingJelly's
    kernels) stays close."""
    ref = make_net("sew").cuda()
    fast = prepared(ref, "auto")
    assert engine.backend_of(fast) == "torch"
    with pytest.raises(ConfigError, match="CPU only"):
        engine.prepare(copy.deepcopy(ref), "native")
    frames, labels = data()
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-3)
    opt_fast = torch.optim.Adam(fast.parameters(), lr=1e-3)
    a = run_sequence(ref.train(), frames, labels, k=K, optimizer=opt_ref, execution="step")
    b = run_sequence(fast.train(), frames, labels, k=K, optimizer=opt_fast, execution="chunk")
    torch.testing.assert_close(torch.tensor(b.chunk_losses), torch.tensor(a.chunk_losses),
                               rtol=0, atol=1e-9)
    ref32 = make_net("sew").float().cuda()
    fast32 = prepared(ref32, "auto")
    x = frames[:K].float().cuda()
    for net in (ref32, fast32):
        net.train().reset_state()
        net.set_output_membrane(labels[0].float().cuda())
    out_ref = torch.stack([ref32(x[t]) for t in range(K)])
    torch.testing.assert_close(fast32(x), out_ref, rtol=1e-4, atol=1e-5)


def test_train_stops_on_a_bad_engine_before_the_data(compose_train, tmp_path) -> None:
    """trainer.engine is checked before the recording is read or simulated."""
    from snnexp.commands.train import train as train_command

    cfg = compose_train("trainer.engine=fastest", f"paths.data_dir={tmp_path / 'nodata'}")
    with pytest.raises(ConfigError, match="'trainer.engine' = 'fastest'.*auto, native, torch"):
        train_command(cfg)
    assert not (tmp_path / "nodata").exists() or not any((tmp_path / "nodata").iterdir())


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_steps_run_the_plain_modules_bit_for_bit(backend: str) -> None:
    """The step loop of a prepared network is the plain network's, bit for bit (float32,
    training: outputs, gradients and BatchNorm statistics)."""
    plain = make_net("sew").float().train()
    fast = prepared(plain, backend)
    frames, labels = data()
    x, y = frames[:5].float(), labels[:6].float()
    results = []
    for net in (plain, fast):
        net.reset_state()
        net.set_output_membrane(y[0])
        out = torch.stack([net(x[t]) for t in range(5)])
        grads = torch.autograd.grad(((out - y[1:]) ** 2).mean(), list(net.parameters()))
        results.append((out, grads, [b.clone() for b in net.buffers()]))
    (out_a, grads_a, bufs_a), (out_b, grads_b, bufs_b) = results
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
    assert all(torch.equal(a, b) for a, b in zip(bufs_a, bufs_b))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block", ["sew", "plain", "spiking"])
def test_one_step_chunks_in_inference_match_the_step_loop_float64(block: str, backend: str,
                                                                   kernel_calls) -> None:
    """`snnexp infer`'s path: chunks of K = 1 (one window per call) of a frozen prepared network
    in inference give the plain network's step loop (float64, 1e-9), on sparse event frames
    (the stem's and spike convs' silent-neighbourhood skips and the sparse hidden layer run),
    through the fused kernels where they apply."""
    ref = make_net(block)
    train(ref, "chunk")  # non-trivial running statistics
    fast = prepared(ref, backend, frozen=True)
    g = torch.Generator().manual_seed(5)
    frames = torch.poisson(torch.full((40, B, *SHAPE), 0.05, dtype=torch.float64), g)
    labels = torch.rand(40, B, generator=g, dtype=torch.float64)
    with torch.no_grad():
        a = run_sequence(ref.eval(), frames, labels, k=1, execution="step")
        kernel_calls.clear()
        b = run_sequence(fast.eval(), frames, labels, k=1, execution="chunk")
    assert len(set(a.preds[:, 0].round(6).tolist())) > 10  # the prediction moves
    torch.testing.assert_close(torch.from_numpy(b.preds), torch.from_numpy(a.preds),
                               rtol=0, atol=1e-9)
    if backend == "native":
        assert {"conv_lif", "fwd_pool", "spike_conv"} <= set(kernel_calls)
    else:
        assert not kernel_calls


def test_frozen_linear_layer_reads_only_the_rows_of_nonzero_inputs() -> None:
    """A frozen network's linear layers in inference: the sparse product equals the dense one
    (float64), rows without any nonzero input give the bias, and a weight changed in place is
    seen; training (autograd) and unfrozen networks keep nn.Linear's product."""
    from snnexp.engine.modules import EngineLinear

    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(300, 20)).double()
    fast = prepared(plain, "auto", frozen=True)
    assert isinstance(fast[0], EngineLinear)
    x = (torch.rand(3, 300, dtype=torch.float64) < 0.1) * torch.randint(1, 3, (3, 300)).double()
    x[1] = 0.0
    calls: list[int] = []
    original = torch.nn.functional.embedding_bag

    def spy(*args, **kw):
        calls.append(1)
        return original(*args, **kw)

    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.functional, "embedding_bag", spy)
        torch.testing.assert_close(fast(x), plain(x), rtol=0, atol=1e-12)
        assert calls and torch.equal(fast(x)[1], plain[0].bias)
        fast[0].weight.mul_(2.0)  # in place: the transposed copy is rebuilt
        plain[0].weight.mul_(2.0)
        torch.testing.assert_close(fast(x), plain(x), rtol=0, atol=1e-12)
        calls.clear()
        fast(torch.ones(3, 300, dtype=torch.float64))  # dense input: the dense product
        assert not calls
        engine.prepare(fast, "auto")  # not frozen (e.g. a network that trains)
        fast(x)
        assert not calls


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels", [5, 12])
def test_float32_chunks_with_narrow_strided_shortcuts_train_right(backend: str,
                                                                  channels: int) -> None:
    """A stage whose stride-2 block has a 5- or 12-channel 1x1 shortcut trains in float32
    chunks (channels_last, two threads) with either backend, with the float64 network's
    gradients to float32 precision. oneDNN's backward of that conv on a channels_last input
    returns wrong weight gradients (AVX2: this test with 5 channels), corrupts the heap or
    crashes the process (AVX-512, SIGSEGV / SIGFPE with 8 or 12 channels) in PyTorch 2.13,
    depending on sizes and threads; the engine does not run it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _train_narrow_shortcut(backend, channels)
    finally:
        torch.set_num_threads(threads)


def _train_narrow_shortcut(backend: str, channels: int) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(block_type="sew", hidden=16, stages=[StageConfig(
        channels=channels, up_kernel_size=3, mid_channels=channels, k_pool=1, stride_1=2,
        stride_2=1)])
    plain = build_network(cfg, NormConfig(kind="bn"), SHAPE)
    frames = torch.poisson(torch.full((K, B, *SHAPE), 0.5),
                           torch.Generator().manual_seed(1))
    grads = []
    for net, x in ((prepared(plain, backend), frames),
                   (prepared(plain.double(), "torch"), frames.double())):
        net.train().reset_state()
        net(x).sum().backward()
        grads.append({n: p.grad.double() for n, p in net.named_parameters()})
    fast, ref = grads
    shortcut = [n for n in ref if "downsample.conv" in n]
    assert shortcut and float(ref[shortcut[0]].abs().max()) > 0
    for name, r in ref.items():
        err = float((fast[name] - r).abs().max())
        assert err <= 1e-3 * float(r.abs().max()) + 1e-6, f"{name}: {err}"
