"""What produced a run: package versions, git commit, command line, machine (provenance.json)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("snnexp", "torch", "spikingjelly", "numpy", "dv-processing", "ahrs", "numba",
            "hydra-core", "omegaconf", "wandb", "tonic")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(directory: Path) -> dict[str, Any] | None:
    """Commit and dirty flag of the git checkout holding ``directory`` (None outside git)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty, "root": git("rev-parse", "--show-toplevel")}


def provenance() -> dict[str, Any]:
    """Everything needed to tell which code and environment produced a run."""
    import torch

    code_dir = Path(__file__).resolve().parent
    return {
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "git": git_state(code_dir) or git_state(Path.cwd()),
        "argv": list(sys.argv),
        "pid": os.getpid(),
    }


def write_provenance(output_dir: Path) -> Path:
    from snnexp.training.checkpoint import atomic_write_text

    return atomic_write_text(Path(output_dir) / "provenance.json",
                             json.dumps(provenance(), indent=1))
