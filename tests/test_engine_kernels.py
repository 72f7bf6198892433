"""The native kernels against the plain modules (per-step BatchNorm + SpikingJelly LIF).

This is the one test module that needs the compiled kernels (skipped without a C++ compiler);
the others run whichever path is available. Every test runs once per kernel path this machine
can build and run (AVX-512, AVX2 + FMA via -march=x86-64-v3, portable C++ via x86-64-v2; each
built once, then cached).
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest
import torch

from snnexp.config.schema import NeuronConfig, NormConfig, SurrogateConfig
from snnexp.engine import native, ops, prepare
from snnexp.engine.modules import EngineConvNormNeuron, EngineModule
from snnexp.models.neurons import make_neuron
from snnexp.models.norms import make_norm

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels unavailable")
K, B, C, H, W = 5, 3, 8, 6, 7


def _paths() -> dict[str, str]:
    """-march value -> kernel path, one -march per distinct path that builds and loads here."""
    paths: dict[str, str] = {}
    for march in native.MARCHES:
        try:
            isa = native.isa(native.open_library(native.build(march)))
        except (OSError, subprocess.SubprocessError):
            continue  # e.g. the x86-64 levels on ARM
        if isa not in paths.values():
            paths[march] = isa
    return paths


PATHS = _paths() if native.available() else {}


@pytest.fixture(autouse=True, scope="module", params=list(PATHS) or ["native"])
def kernel_path(request) -> str:
    """Runs the module's tests with the kernels of each buildable path in turn."""
    previous = native.march()
    native.load(request.param)
    yield request.param
    native.load(previous)


def test_each_march_builds_its_own_reported_path(kernel_path: str) -> None:
    """The loaded library reports the path its -march selects, and each path is its own cached
    file (the cache key holds the flags)."""
    want = {"x86-64-v3": "avx2", "x86-64-v2": "portable"}
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if kernel_path in want:
        assert native.isa() == want[kernel_path]
    elif " avx512f" in cpu:
        assert native.isa() == "avx512"
    elif " avx2" in cpu and " fma" in cpu:
        assert native.isa() == "avx2"
    assert native.describe() == f"{native.isa()} (-march={kernel_path})"
    files = {native.build(m) for m in PATHS}
    assert len(files) == len(PATHS)


def test_invalid_march_is_refused_and_keeps_the_loaded_kernels(kernel_path: str) -> None:
    before = native.lib()
    with pytest.raises(ValueError, match="-march"):
        native.load("native -O0")
    assert native.lib() is before and native.march() == kernel_path


def test_a_march_the_compiler_rejects_leaves_pytorch_with_a_warning(kernel_path: str) -> None:
    """A CPU name the compiler does not know: a warning, no kernels (the engine then runs
    PyTorch), and the next load() of a good path brings them back."""
    try:
        with pytest.warns(RuntimeWarning, match="kernels unavailable"):
            assert native.load("no-such-cpu") is None
        assert not native.available() and native.isa() == "unavailable"
    finally:
        native.load(kernel_path)
    assert native.available()


def _modules(dtype: torch.dtype, momentum: float | None = 0.1, **neuron):
    surrogate = SurrogateConfig(neuron.pop("surrogate", "atan"))
    norm = make_norm(NormConfig(kind="bn", momentum=momentum), C).to(dtype)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-0.5, 1.0)
    return norm, make_neuron(NeuronConfig(surrogate=surrogate, **neuron))


def _run(norm, sn, x, v0, g_out, g_v, fused: bool, train: bool = True):
    """Output, final v and gradients of (out * g_out).sum() + (v * g_v).sum()."""
    norm.train(train)
    x = x.detach().clone().requires_grad_()
    v0 = v0.detach().clone().requires_grad_()
    sn.reset_state()
    sn.node.v = v0
    out = ops.lif(sn, x, K, norm) if fused else sn(norm(x, K), K)
    v = sn.node.v
    if not torch.is_grad_enabled():
        return out, v, ()
    loss = (out * g_out).sum() + (v * g_v).sum()
    grads = torch.autograd.grad(loss, [x, v0, norm.weight, norm.bias])
    return out, v, grads


NEURONS = [{}, {"reset": "hard"}, {"detach_reset": False},
           {"reset": "hard", "detach_reset": False, "surrogate": "sigmoid"},
           {"surrogate": "triangular"}, {"surrogate": "fast_sigmoid"}, {"tau": 3.0}]
# every neuron variant on a small input; the default one also on an input split over threads
CASES = [(n, layout, (H, W)) for n in NEURONS for layout in ("nchw", "channels_last")]
CASES += [({}, layout, (48, 40)) for layout in ("nchw", "channels_last")]
# a chunk of ~9 MB (float64), split over threads
CASES += [({}, layout, (96, 96)) for layout in ("nchw", "channels_last")]


@pytest.mark.parametrize(("neuron", "layout", "size"), CASES,
                         ids=lambda v: (("-".join(str(x) for x in v.values()) or "default")
                                        if isinstance(v, dict) else
                                        "x".join(map(str, v)) if isinstance(v, tuple) else v))
def test_fused_bn_lif_matches_fallback_float64(neuron: dict, layout: str,
                                               size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    dtype = torch.float64
    h, w = size
    x = torch.randn(K * B, C, h, w, dtype=dtype) * 2 + 0.5
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    v0 = torch.rand(B, C, h, w, dtype=dtype)
    g_out, g_v = torch.randn_like(x), torch.randn_like(v0)
    norm_a, sn_a = _modules(dtype, **dict(neuron))
    norm_b, sn_b = _modules(dtype, **dict(neuron))
    norm_b.load_state_dict(norm_a.state_dict())
    ref = _run(norm_a, sn_a, x, v0, g_out, g_v, fused=False)
    got = _run(norm_b, sn_b, x, v0, g_out, g_v, fused=True)
    assert 0.05 < ref[0].mean() < 0.95  # spikes and silences both occur
    for name, a, b in zip(["out", "v", "dx", "dv0", "dweight", "dbias"],
                          [ref[0], ref[1], *ref[2]], [got[0], got[1], *got[2]]):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-10, msg=name)
    for name, buf in norm_a.state_dict().items():
        torch.testing.assert_close(norm_b.state_dict()[name], buf, rtol=0, atol=1e-12, msg=name)
    # inference: BatchNorm folded into the neuron
    with torch.no_grad():
        ref = _run(norm_a, sn_a, x, v0, g_out, g_v, fused=False, train=False)
        got = _run(norm_b, sn_b, x, v0, g_out, g_v, fused=True, train=False)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], ref[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_float32_kernels(layout: str) -> None:
    """float32: LIF alone is bit-identical to SpikingJelly; BatchNorm alone is close."""
    torch.manual_seed(1)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = (torch.randn(K * B, C, H, W) * 2).contiguous(memory_format=fmt).requires_grad_()
    sn = make_neuron(NeuronConfig())
    g = torch.randn_like(x)
    outs = []
    for fused in (False, True):
        sn.reset_state()
        out = ops.lif(sn, x, K) if fused else sn(x, K)
        outs.append((out, sn.node.v, torch.autograd.grad((out * g).sum(), x)[0]))
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    norm = make_norm(NormConfig(kind="bn"), C)
    ys = []
    for fused in (False, True):
        y = ops.batch_norm(norm, x, K) if fused else norm(x, K)
        ys.append((y, *torch.autograd.grad((y * g).sum(), [x, norm.weight, norm.bias])))
    for a, b in zip(*ys):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_torch_backend_runs_no_kernel(kernel_calls: list[str]) -> None:
    """trainer.engine=torch: the same engine modules, PyTorch / SpikingJelly only; native: the
    kernels."""
    from snnexp.config.schema import ModelConfig
    from snnexp.models import build_network

    net = build_network(ModelConfig(hidden=8), NormConfig(kind="bn"), (2, 16, 20))
    x = torch.poisson(torch.full((K, 2, 2, 16, 20), 0.5))
    prepare(net, "torch")
    net(x).sum().backward()
    assert kernel_calls == []
    prepare(net, "native")
    net.reset_state()
    net(x).sum().backward()
    assert {"stats", "fwd", "bwd"} <= set(kernel_calls)


def _engine(native_kernels: bool) -> EngineModule:
    """A bare engine module, for its norm + neuron dispatch on loose modules."""
    eng = EngineModule()
    eng.configure(native_kernels, None)
    return eng


@pytest.mark.parametrize("norm_kind", ["bn", "rms"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "mixed"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("size", [(H, W), (96, 96)], ids=["small", "large"])
def test_fused_residual_add_matches_fallback(norm_kind: str, layout: str, dtype: torch.dtype,
                                             size: tuple[int, int]) -> None:
    """norm -> LIF -> + residual (SEW ADD) with the add in the kernel against the fallback:
    outputs identical, gradients of x, v0, residual and the norm's weights;
    training and inference. ``mixed``: the residual in the other layout than x."""
    torch.manual_seed(2)
    fmt = torch.contiguous_format if layout == "nchw" else torch.channels_last
    x = (torch.randn(K * B, C, *size, dtype=dtype) * 2 + 0.5).contiguous(memory_format=fmt)
    res = (torch.rand(K * B, C, *size, dtype=dtype) < 0.3).to(dtype)
    if layout == "channels_last":
        res = res.contiguous(memory_format=torch.channels_last)
    v0 = torch.rand(B, C, *size, dtype=dtype)
    g_out, g_v = torch.randn_like(x), torch.randn_like(v0)
    results = []
    for fused in (False, True):
        norm = make_norm(NormConfig(kind=norm_kind), C).to(dtype)
        sn = make_neuron(NeuronConfig())
        eng = _engine(fused)
        for train in (True, False):
            norm.train(train)
            xs, vs, rs = (t.detach().clone().requires_grad_(train) for t in (x, v0, res))
            sn.reset_state()
            sn.node.v = vs
            with torch.set_grad_enabled(train):
                out = eng.norm_neuron(norm, sn, xs, K, residual=rs)
            v = sn.node.v
            grads = ()
            if train:
                grads = torch.autograd.grad((out * g_out).sum() + (v * g_v).sum(),
                                            [xs, vs, rs, norm.weight])
            results.append((out, v, *grads))
    # float32: the norms' reductions round differently (double sums in the kernel, the
    # gradient's layout); the weight gradient sums over all K * B * H * W values
    tol = dict(rtol=0, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    half = len(results) // 2
    for ref, got in zip(results[:half], results[half:]):
        torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)  # spikes + residual
        for a, b in zip(ref[1:], got[1:]):
            torch.testing.assert_close(b, a, **tol)



# ------------------------------------------------------------------ fused stem (conv + BN + LIF)
def _stem(c_out: int, dtype: torch.dtype, **neuron):
    """An event-frame stem as the network builds it: conv3x3 (2 -> c_out) + BN (eval, moved
    running statistics) + LIF."""
    from torch import nn

    from snnexp.models.blocks import ConvNormNeuron

    torch.manual_seed(0)
    conv = nn.Conv2d(2, c_out, 3, padding=1, bias=False).to(dtype)
    norm = make_norm(NormConfig(kind="bn"), c_out).to(dtype)
    with torch.no_grad():
        conv.weight.mul_(3.0)  # enough drive for spikes from count frames
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-0.5, 1.0)
        norm.running_mean.uniform_(-0.3, 0.3)
        norm.running_var.uniform_(0.5, 2.0)
    return ConvNormNeuron(conv, norm, make_neuron(NeuronConfig(**neuron))).eval()


def _stem_chunks(stem, frames: torch.Tensor, fused: bool, channels_last: bool | None = None):
    """Spikes of two consecutive chunks (the second continues the first's membranes) and the
    final membrane, through the engine's fused kernel or the plain conv -> norm -> neuron."""
    stem.sn.reset_state()
    if fused:
        stem = EngineConvNormNeuron.adopt(stem)
        stem.configure(True, channels_last)
    outs = []
    with torch.no_grad():
        for chunk in frames.split(K):
            x = chunk.flatten(0, 1)
            assert not fused or stem.stem_applies(x, K)
            outs.append(stem(x, K))
    return torch.cat(outs), stem.sn.node.v


STEMS = [(16, {}), (16, {"reset": "hard"}), (5, {}), (5, {"tau": 3.0})]


@pytest.mark.parametrize(("c_out", "neuron"), STEMS, ids=["c16", "c16-hard", "c5", "c5-tau3"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_fused_stem_matches_unfused_float64(c_out: int, neuron: dict, layout: str) -> None:
    """Inference of the stem in one conv + LIF pass equals conv, BatchNorm, LIF one after the
    other (float64: no spike flips), over two chunks, with spikes in both layouts."""
    stem = _stem(c_out, torch.float64, **neuron)
    frames = torch.poisson(torch.full((2 * K, B, 2, 13, 17), 0.8, dtype=torch.float64))
    if layout == "channels_last":  # frames arrive in either layout
        frames = frames.contiguous(memory_format=torch.channels_last_3d)
    cl = layout == "channels_last"
    ref, v_ref = _stem_chunks(stem, frames, fused=False, channels_last=cl)
    out, v = _stem_chunks(stem, frames, fused=True, channels_last=cl)
    assert 0.02 < ref.mean() < 0.8  # spikes and silences both occur
    assert out.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(v, v_ref, rtol=0, atol=1e-12)


def test_fused_stem_float32_and_network_use(kernel_calls: list[str]) -> None:
    """float32 at a larger size: the fused stem agrees with the unfused path up to rounding (a
    few borderline spikes at most); the network takes it in inference only."""
    from snnexp.config.schema import ModelConfig
    from snnexp.models import build_network

    stem = _stem(16, torch.float32)
    frames = torch.poisson(torch.full((2 * K, 2, 2, 60, 80), 0.5))
    ref, v_ref = _stem_chunks(stem, frames, fused=False)
    out, v = _stem_chunks(stem, frames, fused=True)
    assert 0.02 < ref.mean() < 0.8
    assert (out != ref).float().mean() < 1e-3
    same = (out == ref).view(2 * K, 2, *out.shape[1:]).all(0)  # neurons without a flipped spike
    assert same.float().mean() > 0.99
    torch.testing.assert_close(v[same], v_ref[same], atol=1e-4, rtol=1e-4)

    net = prepare(build_network(ModelConfig(hidden=16), NormConfig(kind="bn"), (2, 40, 48)),
                  "native")
    x = torch.poisson(torch.full((K, 2, 2, 40, 48), 0.5))
    kernel_calls.clear()  # count the network's calls only
    net.eval()
    with torch.no_grad():
        net(x)
    assert kernel_calls.count("conv_lif") == 1
    kernel_calls.clear()
    net.reset_state()
    net.train()
    net(x).sum().backward()  # training: the conv output is needed for the backward
    assert "conv_lif" not in kernel_calls


def test_build_without_openmp_gives_the_same_results(monkeypatch,
                                                      kernel_path: str) -> None:
    """A compiler without OpenMP (e.g. Apple clang) gets the serial build of the same kernels:
    it loads, and a chunk split over two parts gives the OpenMP build's result bit for bit."""
    from snnexp.engine import functions

    if kernel_path != "native":
        pytest.skip("the serial build does not depend on the path: tested with native only")
    serial = native.open_library(native.build(native.march(), openmp=False))
    norm, sn = _modules(torch.float32)
    norm.eval()
    x = torch.randn(K * B, C, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = functions.fixed_affine_lif(x, K, 0.0, ops.lif_spec(sn), *ops.folded_affine(norm))
        monkeypatch.setattr(native, "_lib", serial)
        got = functions.fixed_affine_lif(x, K, 0.0, ops.lif_spec(sn), *ops.folded_affine(norm))
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


# ------------------------------------------------------------------ pool folded into the last LIF
def _pool_net(block: str, norm: str, reset: str = "soft"):
    from snnexp.config.schema import ModelConfig, StageConfig
    from snnexp.models import build_network

    torch.manual_seed(0)
    cfg = ModelConfig(block_type=block, hidden=16, neuron=NeuronConfig(reset=reset),
                      stages=[StageConfig(channels=8, up_kernel_size=3, mid_channels=8, k_pool=2,
                                          stride_1=1, stride_2=1),
                              StageConfig(channels=8, up_kernel_size=1, mid_channels=8, k_pool=2,
                                          stride_1=2, stride_2=1)])
    net = prepare(build_network(cfg, NormConfig(kind=norm), (2, 27, 35)).double(),  # odd: floor
                  "native")
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(2.5)  # spiking hidden layers
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@contextlib.contextmanager
def _hooked(net, types: tuple[type, ...]):
    """Modules of ``types`` get a no-op forward hook, which keeps them observable, so they run
    as their own modules (a hooked pool after the block, a hooked conv as PyTorch's dense
    convolution, a hooked neuron after its norm and add)."""
    handles = [m.register_forward_hook(lambda *a: None) for m in net.modules()
               if isinstance(m, types)] if types else []
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _eval_chunks(net, frames: torch.Tensor, hooked: tuple[type, ...] = ()):
    """Predictions and membranes over two chunks (modules of the ``hooked`` types hooked)."""
    net.reset_state()
    with _hooked(net, hooked), torch.no_grad():
        out = torch.cat([net(chunk) for chunk in frames.split(K)])
    return out, [m.node.v.clone() for m in net.modules() if hasattr(m, "node")]


def _grads(net, frames: torch.Tensor, hooked: tuple[type, ...] = ()):
    """Parameter gradients of one training chunk (modules of the ``hooked`` types hooked)."""
    net.train()
    net.reset_state()
    net.zero_grad()
    with _hooked(net, hooked):
        net(frames).sum().backward()  # at init the output is 0: no square
    return [p.grad.clone() for p in net.parameters() if p.grad is not None]


@pytest.mark.parametrize(("block", "norm", "reset"), [("sew", "bn", "soft"), ("sew", "bn", "hard"),
                                                      ("plain", "bn", "soft"),
                                                      ("sew", "rms", "soft"),
                                                      ("spiking", "bn", "soft")])
def test_pool_folded_into_lif_matches_separate_pool_float64(block: str, norm: str, reset: str,
                                                            kernel_calls: list[str]) -> None:
    """Inference with MaxPool2d(2) folded into the block's last LIF pass gives the predictions
    and every membrane of the separate pool (odd feature maps: floor mode), and runs the
    folded kernel; training never folds it (the backward needs the pool's indices)."""
    net = _pool_net(block, norm, reset)
    frames = torch.poisson(torch.full((2 * K, 2, 2, 27, 35), 0.7, dtype=torch.float64))
    out, states = _eval_chunks(net, frames)
    folded = kernel_calls.count("fwd_pool")
    ref, ref_states = _eval_chunks(net, frames, hooked=(torch.nn.MaxPool2d,))
    assert kernel_calls.count("fwd_pool") == folded
    kernel_calls.clear()
    net.train()
    net.reset_state()
    net(frames[: K]).sum().backward()
    assert "fwd_pool" not in kernel_calls
    assert folded == 2 * 2  # both stages' pools, both chunks
    spikes = [v for v in states if v.dim() == 4]
    assert any(0.0 < float((v > 0).float().mean()) for v in spikes)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    for v, w in zip(states, ref_states):
        torch.testing.assert_close(v, w, rtol=0, atol=0)



@pytest.mark.parametrize(("norm", "reset"), [("bn", "soft"), ("bn", "hard"), ("rms", "soft")])
def test_spiking_block_sum_fused_into_lif_matches_modules_float64(norm: str, reset: str,
                                                                  kernel_calls: list[str]) -> None:
    """Inference of a Spiking-ResNet block with norm2 + shortcut add + LIF (+ pool) in one
    kernel pass gives the predictions and membranes of the modules run one by one (hooked
    neurons), in float64; training keeps the modules."""
    from snnexp.models.neurons import SpikingNeuron

    net = _pool_net("spiking", norm, reset)
    frames = torch.poisson(torch.full((2 * K, 2, 2, 27, 35), 0.7, dtype=torch.float64))
    out, states = _eval_chunks(net, frames)
    assert kernel_calls.count("fwd_pool") == 2 * 2  # both stages' blocks, both chunks
    ref, ref_states = _eval_chunks(net, frames, hooked=(SpikingNeuron,))
    spikes = [v for v in states if v.dim() == 4]
    assert any(0.0 < float((v > 0).float().mean()) for v in spikes)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    for v, w in zip(states, ref_states):
        torch.testing.assert_close(v, w, rtol=0, atol=1e-12)
    grads = _grads(net, frames[:K])
    ref_grads = _grads(net, frames[:K], hooked=(SpikingNeuron,))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)

# (Cin, C, kernel, stride, input size): the reference's stage-0 convs (stride 2 and 1), its
# 24- and 32-channel stages, a partial channel group with a generic width, a 1x1 shortcut
SPIKE_CONVS = [(16, 16, 3, 2, (27, 35)), (16, 16, 3, 1, (14, 18)), (24, 24, 3, 1, (9, 11)),
               (32, 32, 3, 1, (7, 9)), (13, 9, 3, 2, (10, 13)), (16, 16, 1, 2, (11, 13))]


def _spikes(n: int, c: int, size: tuple[int, int], dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, c, *size, generator=g) < 0.3).to(dtype)
    x[0] = 1.0  # every channel active
    x[1] = 0.0  # silent
    return x


@pytest.mark.parametrize(("cin", "c", "k", "stride", "size"), SPIKE_CONVS,
                         ids=["16-s2", "16-s1", "24", "32", "13to9", "1x1"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_spike_conv_matches_dense_conv(cin: int, c: int, k: int, stride: int,
                                       size: tuple[int, int], layout: str,
                                       dtype: torch.dtype) -> None:
    """The table-lookup convolution of spikes equals PyTorch's convolution (float64 to
    rounding; float32 to its rounding of another summation order) and keeps the layout."""
    from snnexp.engine.functions import spike_conv

    x = _spikes(6, cin, size, dtype)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    w = torch.randn(c, cin, k, k, generator=torch.Generator().manual_seed(1), dtype=dtype)
    out = spike_conv(x, w, stride, k // 2)
    ref = torch.nn.functional.conv2d(x, w, stride=stride, padding=k // 2)
    assert out is not None and out.is_contiguous(memory_format=fmt)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("value", [2.0, 0.5, -1.0, float("nan")])
def test_spike_conv_leaves_other_inputs_to_the_dense_conv(value: float) -> None:
    """A value other than 0 / 1 anywhere (e.g. a SEW ADD output of 2) is detected: the kernel
    declines, and the network's conv gives PyTorch's result."""
    from snnexp.engine.functions import spike_conv

    x = _spikes(4, 16, (12, 15), torch.float32).contiguous(memory_format=torch.channels_last)
    x[3, 5, 11, 14] = value  # the last pixel of the last frame
    eng = _engine(True)
    eng.conv = conv = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False)
    assert spike_conv(x, conv.weight.detach(), 1, 1) is None
    with torch.no_grad():
        for _ in range(2):  # detected, then dense directly
            torch.testing.assert_close(eng.conv_chunk("conv", x, 2), conv(x), rtol=0, atol=0,
                                       equal_nan=True)


def test_spike_conv_follows_weight_changes() -> None:
    """The lookup tables kept on a conv are rebuilt when its weight changes (an optimizer step,
    load_state_dict, an edit through .data)."""
    eng = _engine(True)
    eng.conv = conv = torch.nn.Conv2d(16, 8, 3, padding=1, bias=False).double()
    x = _spikes(4, 16, (9, 10), torch.float64)

    def conv_chunk(conv, x, steps):
        return eng.conv_chunk("conv", x, steps)

    with torch.no_grad():
        torch.testing.assert_close(conv_chunk(conv, x, 2), conv(x), rtol=0, atol=1e-12)
        conv.weight.data.mul_(-0.5)
        torch.testing.assert_close(conv_chunk(conv, x, 2), conv(x), rtol=0, atol=1e-12)
        conv.load_state_dict({"weight": torch.randn_like(conv.weight)})
        torch.testing.assert_close(conv_chunk(conv, x, 2), conv(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("block", ["sew", "plain", "spiking"])
def test_spike_conv_in_the_network_matches_dense_float64(block: str,
                                                         kernel_calls: list[str]) -> None:
    """The blocks' conv3x3 layers as table lookups give the predictions and every membrane of
    PyTorch's dense convolutions in inference, and the same gradients in training (PyTorch's
    convolution backward), in float64."""
    net = _pool_net(block, "bn")
    frames = torch.poisson(torch.full((2 * K, 2, 2, 27, 35), 0.7, dtype=torch.float64))
    out, states = _eval_chunks(net, frames)
    lookups = kernel_calls.count("spike_conv")
    ref, ref_states = _eval_chunks(net, frames, hooked=(torch.nn.Conv2d,))
    assert kernel_calls.count("spike_conv") == lookups  # hooked convs ran dense
    assert lookups >= 2 * 3  # per chunk at least stage 0's two convs and stage 1's second
    spikes = [v for v in states if v.dim() == 4]
    assert any(0.0 < float((v > 0).float().mean()) for v in spikes)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    for v, w in zip(states, ref_states):
        torch.testing.assert_close(v, w, rtol=0, atol=1e-12)

    kernel_calls.clear()
    grads = _grads(net, frames[:K])
    assert kernel_calls.count("spike_conv") >= 3
    ref_grads = _grads(net, frames[:K], hooked=(torch.nn.Conv2d,))
    assert len(grads) == len(ref_grads) == len(list(net.parameters()))
    assert all(float(g.abs().max()) > 0 for g in grads[:3])  # the stage-0 convs learn
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


# (Cin, C, stride, input size): the reference's stage-0 shortcut, its later channel counts,
# channel counts that are no multiple of a vector width (oneDNN's backward of this conv breaks
# on those with a channels_last input: wrong weight gradients on AVX2, heap corruption on
# AVX-512), odd sizes (the last row / column not sampled) and stride 3
STRIDED_1X1 = [(16, 16, 2, (12, 14)), (24, 32, 2, (9, 11)), (5, 16, 2, (12, 14)),
               (2, 7, 2, (8, 8)), (13, 9, 3, (10, 13))]


@pytest.mark.parametrize(("cin", "c", "stride", "size"), STRIDED_1X1,
                         ids=["16", "24to32", "5to16", "2to7", "13to9-s3"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("backend", ["native", "torch"])
def test_strided_1x1_shortcut_conv_and_gradients_match_float64(
        cin: int, c: int, stride: int, size: tuple[int, int], layout: str, dtype: torch.dtype,
        backend: str, kernel_calls: list[str]) -> None:
    """A chunk through a block's strided 1x1 shortcut conv gives the float64 reference's output,
    input gradient and weight gradient (to float32 rounding), in the input's layout, with
    either backend: the native kernels read only the sampled pixels, the torch backend convolves
    the sampled pixels (both bypass oneDNN's strided 1x1 backward)."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = _spikes(6, cin, size, dtype).contiguous(memory_format=fmt).requires_grad_()
    eng = _engine(backend == "native")
    eng.conv = conv = torch.nn.Conv2d(cin, c, 1, stride=stride, bias=False).to(dtype)
    out = eng.conv_chunk("conv", x, 2)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    gx, gw = torch.autograd.grad(out, [x, conv.weight], g)
    assert out.is_contiguous(memory_format=fmt)
    if backend == "native":
        assert gx.is_contiguous(memory_format=fmt)
        assert {"pw_fwd", "pw_grad", "pw_wgrad"} <= set(kernel_calls)
    else:
        assert not kernel_calls
    xd = x.detach().double().requires_grad_()
    wd = conv.weight.detach().double().requires_grad_()
    ref = torch.nn.functional.conv2d(xd, wd, stride=stride)
    ref_gx, ref_gw = torch.autograd.grad(ref, [xd, wd], g.double())
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for got, want in ((out, ref), (gx, ref_gx), (gw, ref_gw)):
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
