"""Shared fixtures: Hydra-composed configs forced to tiny sizes, CPU, and tmp_path outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]

# A tiny but real setting: 6 s simulated recordings at 96 x 72 (one to train, one held out for
# test), 2x downsampled, small model.
TINY = [
    "logger=none",
    "data.paths=[builtin:3]",
    "data.test_paths=[builtin:4]",
    "data.sim.duration_s=6.0",
    "data.sim.width=96",
    "data.sim.height=72",
    "data.downsample=2",
    "data.seq_length=40",
    "data.batch_size=2",
    "model.hidden=16",
    "trainer.max_epochs=2",
    "trainer.tbptt_k=10",
    "trainer.progress=false",
    "trainer.device=cpu",
    "trainer.num_threads=1",  # tiny tensors: no gain from threads, and robust on busy hosts
    "optimizer.lr=1e-3",
]


@pytest.fixture
def kernel_calls(monkeypatch) -> list[str]:
    """Names of the native kernels called while the test runs (a spy on ``native.run``)."""
    from snnexp.engine import native

    calls: list[str] = []
    original = native.run

    def spy(name, *args, **kw):
        calls.append(name)
        return original(name, *args, **kw)

    monkeypatch.setattr(native, "run", spy)
    return calls


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one intra-op thread is as fast and immune to busy-CPU stalls."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder per test session, so the tiny recording is simulated once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def compose_train(sim_dir: Path, tmp_path: Path) -> Callable[..., object]:
    """Compose conf/train.yaml with TINY + overrides, outputs in tmp_path (no Hydra run)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from snnexp.config.store import register_schemas

    def _compose(*overrides: str, tiny: bool = True):
        register_schemas()
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="snnexp.conf", version_base="1.3"):
            base = [f"paths.data_dir={sim_dir}", f"paths.output_dir={tmp_path / 'run'}",
                    f"paths.log_dir={tmp_path / 'outputs'}"]
            cfg = compose(config_name="train", overrides=[*base, *(TINY if tiny else []),
                                                         *overrides])
        GlobalHydra.instance().clear()
        return cfg

    return _compose


@pytest.fixture
def run_cli(sim_dir: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python -m snnexp ARGS`` in a subprocess from tmp_path."""

    def _run(*args: str, env: dict | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, **(env or {}))
        full_env.setdefault("SNNEXP_ROOT", str(tmp_path))
        return subprocess.run([sys.executable, "-m", "snnexp", *args], cwd=tmp_path,
                              env=full_env, capture_output=True, text=True, timeout=timeout)

    return _run
