"""Autograd functions over the native kernels: fused per-step BatchNorm + LIF on a chunk, and
the inference passes (stem conv + LIF, LIF + pool); convolutions of spikes by table lookup.

A chunk is ``[K * B, ...]`` time-major, NCHW-contiguous or channels_last (any other layout is
made contiguous). Semantics equal the unfused reference (per-step BatchNorm of
:mod:`snnexp.models.norms`, then SpikingJelly's LIF over K steps): the forward writes only the
spikes and the final membrane; the backward recomputes the membranes from the saved input
(cache-resident tiles) instead of storing them. Callers check :func:`native.supports` first and
otherwise use the pure-PyTorch path.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from snnexp.engine import native


@dataclass(frozen=True)
class LifSpec:
    """LIF constants (decay_input, SpikingJelly semantics) and the surrogate's id / alpha."""

    tau: float
    threshold: float
    v_reset: float | None  # None: soft reset
    detach_reset: bool
    surrogate: int  # 0 sigmoid, 1 atan, 2 triangular, 3 fast sigmoid
    alpha: float

    def args(self) -> tuple[float, float, float, int]:
        hard = self.v_reset is not None
        return self.tau, self.threshold, float(self.v_reset or 0.0), int(hard)


@dataclass(frozen=True)
class Geometry:
    """How a chunk's per-step block ``[M]`` splits into channels and parallel units."""

    steps: int
    per_step: int  # M
    channels: int
    inner: int  # contiguous run with one channel (H * W), or 1 for channels_last
    units: int
    memory_format: torch.memory_format

    def args(self) -> tuple[int, int, int, int]:
        return self.steps, self.per_step, self.channels, self.inner


def geometry(x: torch.Tensor, steps: int) -> tuple[torch.Tensor, Geometry]:
    """``x`` in a kernel-readable layout and its geometry (4-D: per channel; else C = 1)."""
    batch = x.shape[0] // steps
    if x.dim() == 4:
        _, c, h, w = x.shape
        if x.is_contiguous():
            return x, Geometry(steps, batch * c * h * w, c, h * w, batch * c,
                               torch.contiguous_format)
        if x.is_contiguous(memory_format=torch.channels_last):
            return x, Geometry(steps, batch * c * h * w, c, 1, batch * h * w,
                               torch.channels_last)
        x = x.contiguous()
        return x, Geometry(steps, batch * c * h * w, c, h * w, batch * c, torch.contiguous_format)
    x = x.contiguous()
    inner = x[0].numel()
    return x, Geometry(steps, batch * inner, 1, inner, batch, torch.contiguous_format)


def _layout(t: torch.Tensor, g: Geometry) -> torch.Tensor:
    return t.contiguous(memory_format=g.memory_format) if t.dim() == 4 else t.contiguous()


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """The layout results of ``x`` come back in: channels_last if ``x`` is, else contiguous."""
    cl = torch.channels_last
    return cl if x.is_contiguous(memory_format=cl) else torch.contiguous_format


def batch_stats(x: torch.Tensor, g: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (step, channel) mean and biased variance ``[K, C]`` in float64 (one pass)."""
    k, c = g.steps, g.channels
    xs = x.view(k, -1, *x.shape[1:]) if x.dim() == 4 else x.view(k, -1)
    ref = (xs[:, 0, :, 0, 0] if x.dim() == 4 else xs[:, :1]).contiguous()  # a value per (k, c)
    parts = max(1, torch.get_num_threads())
    s1 = torch.zeros(parts, k, c, dtype=torch.float64)
    s2 = torch.zeros(parts, k, c, dtype=torch.float64)
    used = native.run("stats", x.dtype, g.units, x.numel(), lambda i, u0, u1: (
        x.data_ptr(), ref.data_ptr(), s1[i].data_ptr(), s2[i].data_ptr(), *g.args(), u0, u1))
    n = g.per_step // c
    m1 = s1[:used].sum(0) / n
    var = (s2[:used].sum(0) / n - m1.square()).clamp_min(0.0)
    return ref.double() + m1, var


Membrane = torch.Tensor | float  # initial membrane: a tensor, or one value for all neurons


def _v0(v0: Membrane | None, fmt: torch.memory_format) -> tuple[torch.Tensor | None, float]:
    """The kernels' initial-membrane arguments: (a tensor in ``fmt``, or None; the one value)."""
    if isinstance(v0, torch.Tensor):
        return (v0.contiguous(memory_format=fmt) if v0.dim() == 4 else v0.contiguous()), 0.0
    return None, float(v0 or 0.0)


def forward(x: torch.Tensor, g: Geometry, v0: Membrane | None, lif: LifSpec | None,
            scale: torch.Tensor | None = None, shift: torch.Tensor | None = None,
            residual: torch.Tensor | None = None, residual_before: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Affine (``scale``/``shift`` [K, C], optional) then LIF (optional): (out, final v).

    With ``residual`` (x's shape; LIF only) out is spikes + residual (the SEW ADD combine), or
    with ``residual_before`` the LIF's input is the affine's output + residual (Spiking-ResNet;
    no backward)."""
    out = torch.empty_like(x)
    res = _layout(residual, g) if residual is not None and lif is not None else None
    v_in, v0s = _v0(v0, g.memory_format)
    v = torch.empty_like(x[: x.shape[0] // g.steps]) if lif is not None else None
    tau, thr, vr, hard = lif.args() if lif is not None else (2.0, 1.0, 0.0, 0)
    native.run("fwd", x.dtype, g.units, x.numel(), lambda i, u0, u1: (
        x.data_ptr(), native.ptr(scale), native.ptr(shift), native.ptr(v_in), v0s,
        native.ptr(v), out.data_ptr(), native.ptr(res), *g.args(), tau, thr, vr, hard,
        int(lif is not None), int(residual_before), u0, u1))
    return out, v


def backward(x: torch.Tensor, g: Geometry, v0: Membrane | None, lif: LifSpec | None,
             grad_out: torch.Tensor | None, grad_v: torch.Tensor | None,
             scale: torch.Tensor | None, shift: torch.Tensor | None,
             mean: torch.Tensor | None, need_gv0: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None,
                        torch.Tensor | None]:
    """Gradient of the affine output, of v0 (if ``need_gv0``), and per (k, c) sum(gy) and
    sum(gy * (x - mean)) (if ``mean`` is given)."""
    grad_out = torch.zeros_like(x) if grad_out is None else _layout(grad_out, g)
    gy = torch.empty_like(x)
    v_in, v0s = _v0(v0, g.memory_format)
    gv0 = (torch.empty_like(x[: x.shape[0] // g.steps])
           if lif is not None and need_gv0 else None)
    grad_v = _layout(grad_v, g) if grad_v is not None and lif is not None else None
    parts = max(1, torch.get_num_threads())
    sums = mean is not None
    s1 = torch.zeros(parts, g.steps, g.channels, dtype=torch.float64) if sums else None
    s2 = torch.zeros_like(s1) if sums else None
    spec = lif or LifSpec(2.0, 1.0, None, True, 1, 2.0)
    tau, thr, vr, hard = spec.args()
    used = native.run("bwd", x.dtype, g.units, x.numel(), lambda i, u0, u1: (
        x.data_ptr(), native.ptr(scale), native.ptr(shift), native.ptr(v_in), v0s,
        grad_out.data_ptr(), native.ptr(grad_v), gy.data_ptr(), native.ptr(gv0),
        native.ptr(mean), s1[i].data_ptr() if sums else None,
        s2[i].data_ptr() if sums else None, *g.args(), tau, thr, vr, hard,
        int(spec.detach_reset), spec.surrogate, spec.alpha, int(lif is not None), u0, u1))
    if not sums:
        return gy, gv0, None, None
    return gy, gv0, s1[:used].sum(0), s2[:used].sum(0)


def _residual_grad(ctx, grad_out: torch.Tensor | None) -> torch.Tensor | None:
    """Gradient of the residual (the last input): that of the output as it is (ADD)."""
    return grad_out if ctx.needs_input_grad[-1] else None


class FusedBatchNormLIF(torch.autograd.Function):
    """Training-mode per-step BatchNorm (batch statistics) then LIF over a chunk.

    ``lif`` None gives BatchNorm alone. Returns (out, final v, mean [K, C], biased var [K, C]);
    mean and var are for the running-statistics update and not differentiable. With a
    ``residual`` (x's shape, LIF only) out is spikes + residual (SEW ADD, fused).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                v0: Membrane | None, steps: int, eps: float, lif: LifSpec | None,
                residual: torch.Tensor | None = None):
        ctx.set_materialize_grads(False)  # no zero-filled gradient for an unused final v
        x, g = geometry(x, steps)
        mean64, var64 = batch_stats(x, g)
        rstd64 = torch.rsqrt(var64 + eps)
        scale64 = rstd64 if weight is None else rstd64 * weight.detach().double()
        shift64 = -mean64 * scale64 if bias is None else bias.detach().double() - mean64 * scale64
        scale, shift = scale64.to(x.dtype), shift64.to(x.dtype)
        mean = mean64.to(x.dtype)
        out, v = forward(x, g, v0, lif, scale, shift, residual)
        v0_tensor = isinstance(v0, torch.Tensor)
        ctx.save_for_backward(x, _layout(v0, g) if v0_tensor else None, scale, shift, mean,
                              rstd64)
        ctx.geo, ctx.lif, ctx.v0 = g, lif, None if v0_tensor else v0
        ctx.affine = (weight is not None, bias is not None)
        var = var64.to(x.dtype)
        ctx.mark_non_differentiable(mean, var)
        if v is None:
            v = x.new_empty(0)
            ctx.mark_non_differentiable(v)
        return out, v, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor, grad_v: torch.Tensor | None, _gm, _gv):
        x, v0, scale, shift, mean, rstd64 = ctx.saved_tensors
        g: Geometry = ctx.geo
        if grad_v is not None and grad_v.numel() == 0:
            grad_v = None
        gy, gv0, sum_gy, dot = backward(x, g, ctx.v0 if v0 is None else v0, ctx.lif, grad_out,
                                        grad_v, scale, shift, mean, ctx.needs_input_grad[3])
        n = g.per_step // g.channels
        scale64 = scale.double()
        a = -scale64 * dot * rstd64.square() / n
        c = -scale64 * sum_gy / n
        d = c - a * mean.double()
        a_t, d_t = a.to(x.dtype).contiguous(), d.to(x.dtype).contiguous()
        native.run("affine3", x.dtype, g.units, x.numel(), lambda i, u0, u1: (
            gy.data_ptr(), x.data_ptr(), scale.data_ptr(), a_t.data_ptr(), d_t.data_ptr(),
            *g.args(), u0, u1))  # dx = scale * gy + a * x + d, in place
        has_w, has_b = ctx.affine
        grad_w = (dot * rstd64).sum(0).to(x.dtype) if has_w else None
        grad_b = sum_gy.sum(0).to(x.dtype) if has_b else None
        # d(spikes + residual) / d residual = 1: the output gradient as it is
        return gy, grad_w, grad_b, gv0, None, None, None, _residual_grad(ctx, grad_out)


class FusedLIF(torch.autograd.Function):
    """LIF over a chunk (no norm). Returns (spikes, final v)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, v0: Membrane, steps: int, lif: LifSpec,
                residual: torch.Tensor | None = None):
        ctx.set_materialize_grads(False)
        x, g = geometry(x, steps)
        out, v = forward(x, g, v0, lif, residual=residual)
        v0_tensor = isinstance(v0, torch.Tensor)
        ctx.save_for_backward(x, _layout(v0, g) if v0_tensor else None)
        ctx.geo, ctx.lif, ctx.v0 = g, lif, None if v0_tensor else v0
        return out, v

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor | None, grad_v: torch.Tensor | None):
        x, v0 = ctx.saved_tensors
        gy, gv0, _, _ = backward(x, ctx.geo, ctx.v0 if v0 is None else v0, ctx.lif, grad_out,
                                 grad_v, None, None, None, ctx.needs_input_grad[1])
        return gy, gv0, None, None, _residual_grad(ctx, grad_out)


def fixed_affine_lif(x: torch.Tensor, steps: int, v0: Membrane | None, lif: LifSpec | None,
                     scale: torch.Tensor | None, shift: torch.Tensor | None,
                     residual: torch.Tensor | None = None, residual_before: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inference: a per-channel affine (BatchNorm folded from running stats; None: none) then
    LIF, no grad; ``residual`` (if given) added to the spikes, or with ``residual_before`` to
    the LIF's input."""
    x, g = geometry(x, steps)
    k = g.steps
    sc = scale.to(x.dtype).expand(k, -1).contiguous() if scale is not None else None
    sh = shift.to(x.dtype).expand(k, -1).contiguous() if shift is not None else None
    return forward(x, g, v0, lif, sc, sh, residual, residual_before)


def conv_lif(x: torch.Tensor, weight: torch.Tensor, steps: int, v0: Membrane | None,
             lif: LifSpec, scale: torch.Tensor, shift: torch.Tensor, channels_last: bool
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference of a stem layer in one pass: conv3x3 (stride 1, padding 1, no bias) of ``x``
    ``[K * B, Cin, H, W]`` (any layout), per-channel ``y * scale + shift`` (BatchNorm folded),
    then LIF from ``v0``. Returns (spikes ``[K * B, C, H, W]``, final v ``[B, C, H, W]``), both
    channels_last or contiguous. No autograd."""
    n, cin, h, w = x.shape
    c, batch = weight.shape[0], n // steps
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    wt = weight.detach().to(x.dtype).permute(1, 2, 3, 0).contiguous()  # [Cin, 3, 3, C]
    sc = scale.detach().to(x.dtype).contiguous()
    sh = shift.detach().to(x.dtype).contiguous()
    out = torch.empty((n, c, h, w), dtype=x.dtype, memory_format=fmt)
    v = torch.empty((batch, c, h, w), dtype=x.dtype, memory_format=fmt)
    v_in, v0s = _v0(v0, fmt)
    tau, thr, vr, hard = lif.args()
    native.run("conv_lif", x.dtype, batch * h, out.numel(), lambda i, u0, u1: (
        x.data_ptr(), *x.stride(), wt.data_ptr(), sc.data_ptr(), sh.data_ptr(),
        native.ptr(v_in), v0s, v.data_ptr(), out.data_ptr(), steps, batch, cin, c, h, w,
        int(channels_last), tau, thr, vr, hard, u0, u1))
    return out, v


def lif_pool(x: torch.Tensor, steps: int, v0: Membrane | None, lif: LifSpec,
             scale: torch.Tensor | None, shift: torch.Tensor | None,
             residual: torch.Tensor | None = None, residual_before: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference: per-channel affine (optional), LIF (+ ``residual``: added to the spikes, or
    with ``residual_before`` to the LIF's input), then MaxPool2d(2) in one pass; the full-size
    output is never written. The kernel works channels_last; results come back in ``x``'s
    layout (channels_last, else contiguous).
    Returns (pooled ``[K * B, C, H // 2, W // 2]``, final v ``[B, C, H, W]``)."""
    cl = torch.channels_last
    fmt = memory_format_of(x)
    x = x.contiguous(memory_format=cl)
    n, c, h, w = x.shape
    batch = n // steps
    res = residual.contiguous(memory_format=cl) if residual is not None else None
    sc = scale.detach().to(x.dtype).contiguous() if scale is not None else None
    sh = shift.detach().to(x.dtype).contiguous() if shift is not None else None
    out = torch.empty((n, c, h // 2, w // 2), dtype=x.dtype, memory_format=cl)
    v = torch.empty((batch, c, h, w), dtype=x.dtype, memory_format=cl)
    v_in, v0s = _v0(v0, cl)
    tau, thr, vr, hard = lif.args()
    native.run("fwd_pool", x.dtype, batch * ((h + 1) // 2), x.numel(), lambda i, u0, u1: (
        x.data_ptr(), native.ptr(sc), native.ptr(sh), native.ptr(v_in), v0s, v.data_ptr(),
        out.data_ptr(), native.ptr(res), steps, batch, c, h, w, tau, thr, vr, hard,
        int(residual_before), u0, u1))
    return out.contiguous(memory_format=fmt), v.contiguous(memory_format=fmt)


# Larger lookup tables (taps * channel groups * 256 * out channels) would spill the L2 cache,
# and oneDNN's dense convolution wins there. Measured (2-core Zen 4, 40 frames, float32):
# 3x3 16 -> 16 at 260 x 346 stride 2: 21 -> 12 ms, at 130 x 173 stride 1: 12 -> 5.8 ms;
# 24 -> 24 at 65 x 86: 7.6 -> 3.4 ms; 32 -> 32 (1.2 MB of tables) at 32 x 43: 2.2 -> 1.7 ms.
# 1x1 convs gain nothing (one table entry per group is no cheaper than the dense product):
# 5.8 -> 8.6 ms for the 16 -> 16 stride-2 shortcut.
SPIKE_CONV_MAX_TABLE_BYTES = 2 << 20
SPIKE_CONV_KERNEL_SIZES = (3,)


def spike_conv_tables(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Lookup tables of :func:`spike_conv`: ``[k * k, G, 256, C]``, entry ``[t, g, m]`` the sum
    of the weight vectors of tap t over the input channels ``8 * g + j`` whose bit j is set in
    m (G = ceil(Cin / 8) groups of 8 channels)."""
    c, cin, kh, kw = weight.shape
    groups = (cin + 7) // 8
    w = weight.detach().to(dtype).permute(2, 3, 1, 0).reshape(kh * kw, cin, c)
    w = torch.nn.functional.pad(w, (0, 0, 0, groups * 8 - cin)).view(kh * kw, groups, 8, c)
    bits = (torch.arange(256)[:, None] >> torch.arange(8) & 1).to(dtype)  # [256, 8]
    return torch.einsum("mj,tgjc->tgmc", bits, w).contiguous()


def spike_conv_table_bytes(weight: torch.Tensor, dtype: torch.dtype) -> int:
    """Size of :func:`spike_conv_tables` of ``weight`` in ``dtype``, without building them."""
    c, cin, kh, kw = weight.shape
    return kh * kw * ((cin + 7) // 8) * 256 * c * torch.finfo(dtype).bits // 8


def spike_conv(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
               tables: torch.Tensor | None = None) -> torch.Tensor | None:
    """Inference convolution (square kernel, no bias, zero padding) of a spike input ``x``
    ``[N, Cin, H, W]`` (values 0 / 1, any layout) by table lookup: per output pixel one table
    entry per tap and group of 8 input channels, at any spike density. Returns the output in
    ``x``'s layout (channels_last, else contiguous), or None if ``x`` holds another value
    (the caller then runs the dense convolution). ``tables``: :func:`spike_conv_tables` of
    ``weight`` if the caller keeps them. No autograd."""
    n, cin, h, w = x.shape
    c, _, k, _ = weight.shape
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    if not 1 <= k <= 7:
        raise ValueError(f"spike_conv supports kernel sizes 1 to 7, got {k}")
    tab = spike_conv_tables(weight, x.dtype) if tables is None else tables
    out = torch.empty((n, c, ho, wo), dtype=x.dtype, memory_format=torch.channels_last)
    bad = ctypes.c_int(0)
    native.run("spike_conv", x.dtype, n * ho, out.numel() * k * k // 4, lambda i, u0, u1: (
        x.data_ptr(), *x.stride(), tab.data_ptr(), out.data_ptr(), cin, c, h, w, k, stride,
        padding, ho, wo, ctypes.byref(bad), u0, u1))
    if bad.value:
        return None
    return out.contiguous(memory_format=memory_format_of(x))


class SpikeConv(torch.autograd.Function):
    """:func:`spike_conv` with autograd: the forward by table lookup, the backward PyTorch's
    convolution backward (input and weight gradients of the same convolution). A non-spike
    input runs the dense convolution and appends False to ``status``. Without autograd (no
    input requires a gradient, or grad mode off) it is the plain forward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, tables: torch.Tensor, stride: int,
                padding: int, status: list[bool]) -> torch.Tensor:
        with torch.no_grad():
            out = spike_conv(x, weight, stride, padding, tables)
            if out is None:
                status.append(False)
                out = torch.nn.functional.conv2d(x, weight, None, stride, padding)
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        s, p = ctx.stride, ctx.padding
        gx, gw, _ = torch.ops.aten.convolution_backward(
            grad, x, weight, None, [s, s], [p, p], [1, 1], False, [0, 0], 1,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False])
        return gx, gw, None, None, None, None


def strided_pointwise_conv(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """A 1x1 convolution of stride ``stride`` (no padding, no bias; the blocks' downsampling
    shortcut) of ``x`` ``[N, Cin, H, W]`` (any layout): reads only the pixels it samples.
    Returns ``[N, C, Ho, Wo]`` in ``x``'s layout (channels_last, else contiguous). No autograd."""
    n, cin, h, w = x.shape
    c = weight.shape[0]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    wt = weight.detach().to(x.dtype).reshape(c, cin).t().contiguous()  # [Cin, C]
    out = torch.empty((n, c, ho, wo), dtype=x.dtype, memory_format=torch.channels_last)
    native.run("pw_fwd", x.dtype, n * ho, out.numel() * cin // 4, lambda i, u0, u1: (
        x.data_ptr(), *x.stride(), wt.data_ptr(), out.data_ptr(), cin, c, stride, ho, wo,
        u0, u1))
    return out.contiguous(memory_format=memory_format_of(x))


def strided_pointwise_conv_grad(grad: torch.Tensor, weight: torch.Tensor, like: torch.Tensor,
                                stride: int) -> torch.Tensor:
    """Input gradient of :func:`strided_pointwise_conv`: ``W^T grad`` at the sampled pixels,
    zero elsewhere, in ``like``'s shape and layout (written in one pass)."""
    n, cin, h, w = like.shape
    c, ho, wo = grad.shape[1:]
    g = grad.contiguous(memory_format=torch.channels_last)
    wt = weight.detach().to(g.dtype).reshape(c, cin).contiguous()  # [C, Cin]
    gx = torch.empty((n, cin, h, w), dtype=g.dtype, memory_format=memory_format_of(like))
    native.run("pw_grad", g.dtype, n * h, gx.numel(), lambda i, u0, u1: (
        g.data_ptr(), wt.data_ptr(), gx.data_ptr(), *gx.stride(), cin, c, h, w, stride, ho, wo,
        u0, u1))
    return gx


def strided_pointwise_conv_wgrad(grad: torch.Tensor, x: torch.Tensor, stride: int
                                 ) -> torch.Tensor:
    """Weight gradient ``[C, Cin, 1, 1]`` of :func:`strided_pointwise_conv` (sums in float64)."""
    n, cin = x.shape[:2]
    c, ho, wo = grad.shape[1:]
    g = grad.contiguous(memory_format=torch.channels_last)
    parts = max(1, torch.get_num_threads())
    gw = torch.zeros(parts, cin, c, dtype=torch.float64)
    used = native.run("pw_wgrad", g.dtype, n * ho, g.numel() * cin // 4, lambda i, u0, u1: (
        x.data_ptr(), *x.stride(), g.data_ptr(), gw.data_ptr(), cin, c, stride, ho, wo,
        u0, u1))
    return gw[:used].sum(0).t().to(g.dtype).reshape(c, cin, 1, 1)


class StridedPointwiseConv(torch.autograd.Function):
    """:func:`strided_pointwise_conv` with autograd; both gradients by the kernels too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
        out = strided_pointwise_conv(x, weight, stride)
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        s = ctx.stride
        gx = (strided_pointwise_conv_grad(grad, weight, x, s) if ctx.needs_input_grad[0]
              else None)
        gw = strided_pointwise_conv_wgrad(grad, x, s) if ctx.needs_input_grad[1] else None
        return gx, gw, None
