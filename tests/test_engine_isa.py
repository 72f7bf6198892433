"""The portable kernels on another architecture: tests/kernels_selfcheck.cpp cross-compiled for
aarch64 (Apple Silicon / Graviton class) and run under qemu-user, where both are installed
(Debian: g++-aarch64-linux-gnu, qemu-user-static); skipped otherwise. The x86 paths (AVX-512,
AVX2, portable) are tested through Python in test_engine_kernels.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from snnexp.engine import native

SELFCHECK = Path(__file__).with_name("kernels_selfcheck.cpp")
CROSS, QEMU = "aarch64-linux-gnu-g++", "qemu-aarch64-static"


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which(CROSS) and shutil.which(QEMU)),
                    reason=f"needs {CROSS} and {QEMU}")
def test_portable_kernels_are_exact_on_aarch64(tmp_path: Path) -> None:
    """Built with the kernels' own flags for armv8-a (the portable path, NEON by
    auto-vectorisation), the BN+LIF forward, batch statistics, spike convolutions and stem
    equal naive loops bit for bit (dyadic inputs: every sum is exact)."""
    exe = tmp_path / "selfcheck"
    flags = [f for f in native.FLAGS if f not in ("-shared", "-fPIC")]
    subprocess.run([CROSS, "-march=armv8-a", *flags, "-static", str(SELFCHECK), "-o", str(exe)],
                   check=True, capture_output=True, text=True, timeout=600)
    run = subprocess.run([QEMU, str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[0] == "kernel path: portable"
    assert run.stdout.count(" ok ") == 21 and run.stdout.rstrip().endswith("all ok")
