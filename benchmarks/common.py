"""Shared helpers of the benchmarks: allocator re-exec, machine description, statistics."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent
_MARK = "SNNEXP_ALLOCATOR_SET"


def ensure_allocator(module: str) -> None:
    """Re-exec ``python -m module`` once with the allocator variables the ``snnexp`` command
    sets (glibc keeps freed memory; see snnexp.cli.ALLOCATOR_ENV), unless already set."""
    from snnexp.cli import ALLOCATOR_ENV

    if os.environ.get(_MARK) or sys.platform != "linux":
        return
    if any(k in os.environ for k in ALLOCATOR_ENV):
        return
    env = dict(os.environ, **ALLOCATOR_ENV, **{_MARK: "1"})
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)


def machine() -> dict[str, Any]:
    """CPU model, core count, torch / Python versions, allocator settings in force."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        line = text.split("flags", 1)[1].split("\n", 1)[0] if "flags" in text else ""
        have = set(line.split())
        flags = " ".join(f for f in ("avx2", "avx512f", "fma", "avx512_bf16", "amx_bf16")
                         if f in have)
    except OSError:
        pass
    return {
        "cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "allocator_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
        "load_avg_1min": round(os.getloadavg()[0], 2),  # other work on the CPU at the start
    }


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max of a list of measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def write_json(name: str, data: dict[str, Any]) -> Path:
    path = RESULTS_DIR / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path
