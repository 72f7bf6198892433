"""Build, cache and call the native kernels of ``kernels.cpp`` (ctypes, no torch headers).

The source is compiled once per machine with the system C++ compiler (about 8 s on 2 cores) into
``$SNNEXP_KERNEL_CACHE`` (default ``~/.cache/snnexp/kernels``), keyed by a hash of the source,
flags and compiler, and loaded with ctypes (calls release the GIL). A chunk's work is split over
``torch.get_num_threads()`` OpenMP threads: the library links ``libgomp.so.1`` by soname, so it
shares the OpenMP runtime PyTorch has loaded and runs on the same worker threads as PyTorch's
own ops (separate threads would compete with the workers oneDNN leaves spinning after each
convolution: measured 7 % slower training chunks). If there is no compiler or the build fails,
:func:`lib` returns None and the engine falls back to pure PyTorch.
Whether a network uses them is chosen by :func:`snnexp.engine.prepare` (``trainer.engine``).

The instruction set is chosen at build time: ``-march=native`` by default (AVX-512, AVX2 + FMA
or portable C++, whatever the machine has, see :func:`isa`); :func:`load` selects another
``-march`` (``x86-64-v3``: the AVX2 path, ``x86-64-v2``: the portable path) before the first
kernel call (``trainer.kernel_march``), e.g. to measure the paths side by side on one machine.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels.cpp")
# -fno-trapping-math: the LIF's compare-and-select may be if-converted into vector blends (no FP
# exception flags are read); without it GCC vectorises those loops only with AVX-512's masks
# and leaves them scalar on AVX2 and SSE (measured: BN+LIF forward 3.7x, stem 7.5x slower than
# AVX-512). Values are unchanged: no reassociation, no contraction, IEEE division.
FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math",
         "-std=c++17", "-shared", "-fPIC"]
# for a compiler without OpenMP (e.g. Apple clang): the same kernels, one thread per call
FLAGS_NO_OPENMP = [("-fopenmp-simd" if f == "-fopenmp" else f) for f in FLAGS]
# -march values of the kernel paths, widest first: the machine's own instruction set, the
# x86-64 levels of AVX2 + FMA (v3, the AVX2 path) and SSE4.2 (v2, the portable path)
MARCHES = ("native", "x86-64-v3", "x86-64-v2")
ISAS = {0: "portable", 1: "avx2", 2: "avx512"}  # snn_isa() codes
DTYPES = {torch.float32: "f32", torch.float64: "f64"}
_SMALL = 1 << 16  # below this many elements per call, one thread is faster

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_march = "native"


def cache_dir() -> Path:
    """Where built libraries are kept."""
    root = os.environ.get("SNNEXP_KERNEL_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "snnexp" / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def march_flags(march: str = "native") -> list[str]:
    """Compiler flags selecting the instruction set ``march`` (``-march=<march>``)."""
    if not march or any(c.isspace() for c in march) or march.startswith("-"):
        raise ValueError(f"invalid -march value {march!r}; use one of {', '.join(MARCHES)} or "
                         "a CPU name the compiler knows")
    return [f"-march={march}"]


def _build(cxx: str, flags: list[str]) -> Path:
    """Compile the kernels (if not cached) and return the library path.

    The cache key hashes the source, the compiler's path and every flag (``-march`` included),
    so each instruction-set build has its own file."""
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([cxx, *flags]).encode()).hexdigest()[:16]
    target = cache_dir() / f"snnexp_kernels_{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        subprocess.run([cxx, *flags, str(SOURCE), "-o", str(out)], check=True,
                       capture_output=True, text=True, timeout=300)
        os.replace(out, target)  # atomic: concurrent builders agree on one file
    return target


def build(march: str = "native", openmp: bool = True) -> Path:
    """Build (or find in the cache) the kernel library for ``-march=<march>``; its path.

    Raises OSError without a C++ compiler and subprocess.CalledProcessError if the compiler
    rejects the flags (e.g. an x86 level on ARM). ``openmp=False``: the serial build a
    compiler without OpenMP gets."""
    cxx = _compiler()
    if cxx is None:
        raise OSError("no C++ compiler found (set CXX or install g++ / clang++)")
    base = FLAGS if openmp else FLAGS_NO_OPENMP
    flags = [*march_flags(march), *base]
    if not openmp:
        return _build(cxx, flags)
    try:
        return _build(cxx, flags)
    except subprocess.CalledProcessError:
        return _build(cxx, [*march_flags(march), *FLAGS_NO_OPENMP])  # no OpenMP: serial


def open_library(path: Path) -> ctypes.CDLL:
    """Load a built kernel library and declare its entry points."""
    handle = ctypes.CDLL(str(path))
    _declare(handle)
    return handle


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, f64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    geo = [i64, i64, i64, i64]
    for suf in DTYPES.values():
        getattr(lib, f"snn_stats_{suf}").argtypes = [p, p, p, p, *geo, i64, i64]
        getattr(lib, f"snn_fwd_{suf}").argtypes = [p, p, p, p, f64, p, p, p, *geo, f64, f64, f64,
                                                   c_int, c_int, c_int, i64, i64]
        getattr(lib, f"snn_bwd_{suf}").argtypes = [p, p, p, p, f64, p, p, p, p, p, p, p, *geo,
                                                   f64, f64, f64, c_int, c_int, c_int, f64,
                                                   c_int, i64, i64]
        getattr(lib, f"snn_affine3_{suf}").argtypes = [p, p, p, p, p, *geo, i64, i64]
        for name in ("stats", "fwd", "bwd", "affine3"):
            base = getattr(lib, f"snn_{name}_{suf}")
            base.restype = None
            par = getattr(lib, f"snn_{name}_par_{suf}")  # (..., units, parts) for (..., u0, u1)
            par.argtypes = [*base.argtypes[:-2], i64, c_int]
            par.restype = None
        conv = getattr(lib, f"snn_conv_lif_par_{suf}")
        conv.argtypes = [p, i64, i64, i64, i64, p, p, p, p, f64, p, p, i64, i64, i64, i64, i64,
                         i64, c_int, f64, f64, f64, c_int, i64, c_int]
        conv.restype = None
        pool = getattr(lib, f"snn_fwd_pool_par_{suf}")
        pool.argtypes = [p, p, p, p, f64, p, p, p, i64, i64, i64, i64, i64, f64, f64, f64, c_int,
                         c_int, i64, c_int]
        pool.restype = None
        spike = getattr(lib, f"snn_spike_conv_par_{suf}")
        spike.argtypes = [p, i64, i64, i64, i64, p, p, *([i64] * 9), p, i64, c_int]
        spike.restype = None
        pw_fwd = getattr(lib, f"snn_pw_fwd_par_{suf}")
        pw_fwd.argtypes = [p, i64, i64, i64, i64, p, p, *([i64] * 5), i64, c_int]
        pw_fwd.restype = None
        pw_grad = getattr(lib, f"snn_pw_grad_par_{suf}")
        pw_grad.argtypes = [p, p, p, *([i64] * 4), *([i64] * 7), i64, c_int]
        pw_grad.restype = None
        pw_wgrad = getattr(lib, f"snn_pw_wgrad_par_{suf}")
        pw_wgrad.argtypes = [p, i64, i64, i64, i64, p, p, *([i64] * 5), i64, c_int]
        pw_wgrad.restype = None
    lib.snn_isa.argtypes = []
    lib.snn_isa.restype = c_int


def lib() -> ctypes.CDLL | None:
    """The loaded kernel library, building it on first use; None if unavailable."""
    global _lib, _tried
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            _tried = True
            if _compiler() is None:
                return None
            try:
                _lib = open_library(build(_march))
            except (OSError, subprocess.SubprocessError) as err:
                detail = getattr(err, "stderr", "") or ""
                warnings.warn(f"snnexp: native SNN kernels unavailable, using PyTorch ({err}) "
                              f"{detail[-500:]}", RuntimeWarning, stacklevel=2)
    return _lib


def load(march: str = "native") -> ctypes.CDLL | None:
    """Select the kernels built for ``-march=<march>`` (process-wide) and load them.

    ``"native"`` (the default) is this machine's widest path; ``"x86-64-v3"`` the AVX2 + FMA
    path, ``"x86-64-v2"`` the portable one. Call it before a run; kernels already running
    finish with the previous library. Returns the library, or None if it cannot be built
    (the engine then uses PyTorch)."""
    global _lib, _tried, _march
    march_flags(march)  # validate before dropping the current library
    with _lock:
        _march, _lib, _tried = march, None, False
    return lib()


def march() -> str:
    """The ``-march`` value the kernels are (or will be) built with."""
    return _march


def isa(handle: ctypes.CDLL | None = None) -> str:
    """The kernel path compiled into the library: ``"avx512"``, ``"avx2"`` (AVX2 + FMA,
    8 floats per instruction) or ``"portable"`` (plain C++ the compiler vectorises; ARM,
    x86 without AVX2); ``"unavailable"`` without kernels."""
    handle = handle if handle is not None else lib()
    return "unavailable" if handle is None else ISAS[handle.snn_isa()]


def describe() -> str:
    """One line for logs: the kernel path and its -march, e.g. ``avx512 (-march=native)``."""
    return f"{isa()} (-march={_march})"


def available() -> bool:
    """True if the native kernels can be used."""
    return lib() is not None


def supports(x: torch.Tensor) -> bool:
    """Whether a tensor can go through the kernels (CPU, float32/64, built)."""
    return x.device.type == "cpu" and x.dtype in DTYPES and available()


def run(name: str, dtype: torch.dtype, units: int, work: int,
        args: Callable[[int, int, int], Sequence[object]]) -> int:
    """Call ``snn_<name>_<dtype>`` over ``units`` units split across OpenMP threads.

    ``args(part, u0, u1)`` returns the argument list for part ``part`` covering units
    ``[u0, u1)``; part p's partial sums (if any) are at index p of the arrays that part 0's
    arguments point to. Returns the number of parts used (for per-part partial sums).
    """
    parts = max(1, min(torch.get_num_threads(), units, work // _SMALL or 1))
    fn = getattr(lib(), f"snn_{name}_par_{DTYPES[dtype]}")
    fn(*list(args(0, 0, units))[:-2], units, parts)
    return parts


def ptr(t: torch.Tensor | None) -> int | None:
    """Data pointer for ctypes (None for a missing optional tensor)."""
    return None if t is None else t.data_ptr()
