"""Issue 6: exact resume after SIGKILL, no run overwritten, NaN stops, W&B never blocks,
secrets never saved, same seed -> same metrics, provenance recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from snnexp.commands.train import train
from snnexp.errors import ConfigError, TrainingError
from tests.conftest import TINY

# values that differ between two identical runs (wall-clock)
_TIMING = ("time_s",)


def _strip_timing(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if k not in _TIMING}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(run_cli, sim_dir, tmp_path) -> None:
    args = [*TINY, f"paths.data_dir={sim_dir}", "trainer.max_epochs=3", "data.sim.duration_s=8",
            "evaluate_test=false"]
    ref = run_cli("train", *args, "hydra.run.dir=outputs/ref")
    assert ref.returncode == 0, ref.stderr[-2000:]

    run = tmp_path / "outputs" / "killed"
    env = dict(os.environ, SNNEXP_ROOT=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "snnexp", "train", *args,
                             "hydra.run.dir=outputs/killed"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = run / "history.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history.is_file() and len(json.loads(history.read_text() or "[]")) >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # now inside epoch 2
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "final_metrics.json").exists()
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] < 3

    again = run_cli("train", *args, "hydra.run.dir=outputs/killed", "resume=true")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming" in again.stdout
    ref_dir = tmp_path / "outputs" / "ref"
    for name in ("last.pt", "best_weights.pt"):
        a, b = _weights(ref_dir / "checkpoints" / name), _weights(run / "checkpoints" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    ref_m = json.loads((ref_dir / "final_metrics.json").read_text())
    res_m = json.loads((run / "final_metrics.json").read_text())
    assert ref_m == res_m
    assert _strip_timing(json.loads((ref_dir / "history.json").read_text())) == \
        _strip_timing(json.loads((run / "history.json").read_text()))


def test_existing_run_is_never_overwritten(compose_train, tmp_path) -> None:
    cfg = compose_train("trainer.max_epochs=1", "evaluate_test=false")
    train(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    with pytest.raises(ConfigError, match="already holds a run: pass resume=true"):
        train(compose_train("trainer.max_epochs=1", "evaluate_test=false"))
    assert last.read_bytes() == before
    # resume=true on a finished run skips it and returns its metrics
    metrics, _ = train(compose_train("trainer.max_epochs=1", "evaluate_test=false",
                                     "resume=true"))
    assert metrics["epochs"] == 1 and last.read_bytes() == before


def test_resume_without_checkpoint_is_a_clear_error(compose_train) -> None:
    with pytest.raises(ConfigError, match="resume=true but .*last.pt' does not exist"):
        train(compose_train("resume=true"))


def test_nan_loss_stops_at_once_and_keeps_last_good_checkpoint(compose_train, tmp_path,
                                                               monkeypatch) -> None:
    import snnexp.training.tbptt as tbptt

    real = tbptt.F.mse_loss
    calls = {"n": 0, "poison_after": 10**9}

    class PoisonedF:  # torch.nn.functional whose loss turns NaN after N calls
        @staticmethod
        def mse_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            loss = real(a, b)
            return loss * float("nan") if calls["n"] > calls["poison_after"] else loss

    monkeypatch.setattr(tbptt, "F", PoisonedF)
    train(compose_train("trainer.max_epochs=1", "evaluate_test=false",
                        f"paths.output_dir={tmp_path / 'count'}"))
    per_epoch = calls["n"]  # loss evaluations of one epoch (training + validation chunks)
    calls["n"], calls["poison_after"] = 0, per_epoch + 2  # the 3rd chunk of epoch 2
    with pytest.raises(TrainingError, match=r"the loss became nan at optimizer step \d+"):
        train(compose_train("trainer.max_epochs=2", "evaluate_test=false"))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1  # the good epoch's checkpoint is intact
    assert not (tmp_path / "run" / "final_metrics.json").exists()


def test_same_seed_same_metrics_other_seed_other_metrics(compose_train, tmp_path) -> None:
    def run(name: str, seed: int) -> dict:
        cfg = compose_train("trainer.max_epochs=1", f"seed={seed}",
                            f"paths.output_dir={tmp_path / name}")
        return train(cfg)[0]

    a, b, c = run("a", 3), run("b", 3), run("c", 4)
    assert a == b
    assert a["val/mse_best"] != c["val/mse_best"]


def test_provenance_records_versions_and_git(compose_train, tmp_path) -> None:
    train(compose_train("trainer.max_epochs=1", "evaluate_test=false"))
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["packages"]["torch"] == torch.__version__.split("+")[0] or \
        prov["packages"]["torch"].startswith(torch.__version__.split("+")[0])
    assert prov["packages"]["snnexp"] and prov["python"]
    assert "git" in prov  # a commit hash inside a checkout, None elsewhere
    if prov["git"] is not None:
        assert len(prov["git"]["commit"]) == 40


@pytest.mark.slow
def test_wandb_online_without_network_falls_back_offline_and_hides_key(run_cli, sim_dir,
                                                                      tmp_path) -> None:
    secret = "0123456789abcdef0123456789abcdef01234567"
    env = {"WANDB_MODE": "", "WANDB_API_KEY": secret,
           "WANDB_BASE_URL": "http://127.0.0.1:9"}  # nothing listens there: no network
    start = time.time()
    out = run_cli("train", *TINY, f"paths.data_dir={sim_dir}", "trainer.max_epochs=1",
                  "logger=wandb", "logger.wandb.mode=online", "logger.wandb.init_timeout=20",
                  "evaluate_test=false", "hydra.run.dir=outputs/wb", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert time.time() - start < 240
    assert "logging offline" in out.stderr
    run = tmp_path / "outputs" / "wb"
    assert list(run.rglob("offline-run-*")), "no offline W&B run directory"
    for path in run.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert secret.encode() not in path.read_bytes(), path


def test_evaluate_with_mismatched_architecture_is_refused(compose_train, tmp_path) -> None:
    from snnexp.commands.evaluate import evaluate
    from snnexp.config.schema import EvalRunConfig, EvaluateConfig, PathsConfig
    from snnexp.errors import CheckpointError

    train(compose_train("trainer.max_epochs=1", "evaluate_test=false"))
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    state = torch.load(best, weights_only=True)
    state["config"]["model"]["block_type"] = "plain"  # weights of a sew net, config of plain
    other = tmp_path / "other.pt"
    torch.save(state, other)
    out = tmp_path / "eval"
    cfg = EvaluateConfig(ckpt=str(other), paths=PathsConfig(output_dir=str(out)),
                         trainer=EvalRunConfig(device="cpu"), plots=False)
    with pytest.raises(CheckpointError, match="does not match the network its config describes"):
        evaluate(cfg)
    assert not (out / "metrics.json").exists()
