"""Issue 12: bad input, faults and signals give one line, the right exit code and lose nothing."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from snnexp.commands.train import train
from snnexp.errors import StorageError, TrainingError
from tests.conftest import TINY


def _one_error(out: subprocess.CompletedProcess, expected: str) -> str:
    lines = [ln for ln in out.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and expected in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


# --------------------------------------------------------------------------- debug flag
@pytest.mark.parametrize("args", [
    ["train", "trainer.tbptt_k=0"],
    ["evaluate", "ckpt=missing.pt"],
    ["summarize", "dirs=[nothing_here]"],
    ["simulate", "output=x.aedat4", "data.sim.width=2"],
])
def test_debug_true_shows_the_traceback_in_every_command(run_cli, args: list[str]) -> None:
    plain = run_cli(*args)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr, plain.stderr
    debug = run_cli(*args, "debug=true")
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "Config group override" not in debug.stderr


def test_debug_default_is_still_the_smoke_run_group(run_cli) -> None:
    out = run_cli("train", "debug=default", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    assert "task_name: debug" in out.stdout


# ----------------------------------------------------------------- mistyped keys, types
def _compose_error(*overrides: str) -> str:
    """The one-line message the CLI prints for ``snnexp train OVERRIDES`` (in-process)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from snnexp.cli import one_line
    from snnexp.config.schema import TrainConfig
    from snnexp.config.store import register_schemas
    from snnexp.config.validate import to_schema

    register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="snnexp.conf", version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides))
        to_schema(cfg, TrainConfig)
    except Exception as exc:  # what the CLI turns into its one line
        from snnexp.errors import SnnexpError

        return str(exc) if isinstance(exc, SnnexpError) else one_line(exc, "train")
    finally:
        GlobalHydra.instance().clear()
    raise AssertionError(f"{overrides} composed without an error")


@pytest.mark.parametrize(("arg", "expected"), [
    ("trainer.max_epoch=3", "did you mean trainer.max_epochs?"),
    ("+trainer.max_epoch=3", "did you mean trainer.max_epochs?"),
    ("model.hiden=8", "did you mean model.hidden?"),
    ("trainer.lr=0.1", "did you mean optimizer.lr?"),
    ("+model.stages.0.chanels=8", "'model.stages.0.chanels' does not exist"),
    ("data.window_us=0.5", "'data.window_us' = 0.5 has the wrong type: expected an integer"),
    ("trainer.max_epochs=abc", "expected an integer"),
    ("trainer.grad_clip=x", "expected a number (e.g. 0.5) or null"),
    ("evaluate_test=maybe", "expected true or false"),
    ("data.paths=5", "expected a list of strings"),
])
def test_mistyped_key_or_value_names_the_fix(arg: str, expected: str) -> None:
    line = _compose_error(arg)
    assert expected in line and "\n" not in line
    assert "+trainer" not in line  # never suggests storing the junk key


def test_mistyped_key_on_the_command_line_exits_2_with_one_line(run_cli, tmp_path) -> None:
    out = run_cli("train", "trainer.max_epoch=3", "hydra.run.dir=outputs/bad")
    _one_error(out, "did you mean trainer.max_epochs?")
    assert out.returncode == 2 and not (tmp_path / "outputs" / "bad").exists()


def test_failed_command_leaves_no_run_directory(run_cli, tmp_path) -> None:
    out = run_cli("train", "trainer.tbptt_k=0", "hydra.run.dir=outputs/failed")
    _one_error(out, "trainer.tbptt_k")
    assert not (tmp_path / "outputs" / "failed").exists()
    out = run_cli("evaluate", "ckpt=missing.pt", "hydra.run.dir=outputs/failed_eval")
    _one_error(out, "missing.pt")
    assert not (tmp_path / "outputs" / "failed_eval").exists()


def test_split_without_test_part_is_refused_before_training(run_cli, tmp_path) -> None:
    out = run_cli("train", *TINY, "data.split=[0.5,0.5,0.0]", "data.test_paths=[]",
                  "hydra.run.dir=outputs/s")
    _one_error(out, "evaluate_test=false")
    assert out.returncode == 2 and not (tmp_path / "outputs" / "s").exists()
    out = run_cli("train", *TINY, "data.split=[0.9,0.0,0.1]", "data.val_paths=[]")
    _one_error(out, "validation part")


def test_evaluate_refuses_settings_it_cannot_honour(run_cli) -> None:
    out = run_cli("evaluate", "ckpt=x.pt", "logger=wandb")
    _one_error(out, "'logger' is not a setting of snnexp evaluate")
    out = run_cli("evaluate", "ckpt=x.pt", "trainer.max_epochs=3")
    _one_error(out, "come from the checkpoint; evaluate takes trainer.device")
    out = run_cli("evaluate", "ckpt=x.pt", "data.pathz=[a.aedat4]")
    _one_error(out, "did you mean data.path or data.paths?")


def test_help_is_snnexp_not_hydra(run_cli) -> None:
    out = run_cli("train", "--help")
    assert out.returncode == 0
    assert "powered by Hydra" not in out.stdout
    assert out.stdout.startswith("snnexp train:")


# ------------------------------------------------------------------ files and storage
def test_written_files_follow_the_umask(tmp_path) -> None:
    from snnexp.training.checkpoint import atomic_save, atomic_write_text

    old = os.umask(0o027)
    try:
        ckpt = atomic_save({"a": torch.zeros(2)}, tmp_path / "c.pt")
        text = atomic_write_text(tmp_path / "m.json", "{}")
    finally:
        os.umask(old)
    assert ckpt.stat().st_mode & 0o777 == 0o640
    assert text.stat().st_mode & 0o777 == 0o640


def test_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    from snnexp.training import checkpoint

    target = checkpoint.atomic_save({"epoch": 1}, tmp_path / "last.pt")
    before = target.read_bytes()

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    with pytest.raises(StorageError, match=r"No space left on device; .* MB free there\); "
                                           r"the previous last.pt was kept"):
        checkpoint.atomic_save({"epoch": 2}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left


def test_nan_in_the_first_epoch_claims_no_checkpoint(compose_train, tmp_path,
                                                     monkeypatch) -> None:
    import snnexp.training.tbptt as tbptt

    real = tbptt.F.mse_loss

    class PoisonedF:
        @staticmethod
        def mse_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return real(a, b) * float("nan")

    monkeypatch.setattr(tbptt, "F", PoisonedF)
    with pytest.raises(TrainingError) as info:
        train(compose_train("trainer.max_epochs=1", "evaluate_test=false"))
    assert "no checkpoint was written" in str(info.value)
    assert "was kept" not in str(info.value) and "in epoch 1" in str(info.value)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


# ------------------------------------------------------------------------ IMU checks
def _imu(n: int = 2000, rate_us: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(n, dtype=np.int64) * rate_us
    roll = np.linspace(0, 1.0, n)
    acc = np.stack([np.zeros(n), np.sin(roll), np.cos(roll)], 1) + rng.normal(0, 0.01, (n, 3))
    gyro = rng.normal(0, 0.2, (n, 3))
    return t, acc, gyro


def test_clean_imu_passes_without_warnings() -> None:
    from snnexp.data.imu_checks import check_imu

    assert check_imu(*_imu(), "rec") == []
    t, acc, gyro = _imu()
    acc[:] = [0.0, 0.0, 1.0]  # at rest and noise-free: repeats itself, but is not stuck
    assert check_imu(t, acc, gyro, "rec") == []


@pytest.mark.parametrize(("damage", "expected"), [
    ("backwards", r"run backwards 1 times \(by 500.0 ms in total"),
    ("zero", r"median magnitude is 0.000 g"),
    ("ms2", r"median magnitude is 9.8\d\d g"),
    ("stuck", r"repeats its previous reading in 9\d% of the IMU samples while the gyroscope "
              r"turns by up to 40 deg"),
    ("nan", r"3 of 2000 IMU samples hold NaN"),
])
def test_bad_imu_is_refused_with_numbers(damage: str, expected: str) -> None:
    from snnexp.data.imu_checks import check_imu
    from snnexp.errors import DataError

    t, acc, gyro = _imu()
    if damage == "backwards":
        t[1000:] -= 501_000  # the clock jumps back 0.5 s (plus one sample period)
    elif damage == "zero":
        acc[:] = 0.0
    elif damage == "ms2":
        acc *= 9.81
    elif damage == "stuck":
        acc[100:] = acc[100]
        gyro[:, 0] += 20.0  # turning at 20 deg/s for 2 s
    elif damage == "nan":
        gyro[[5, 6, 7], 0] = np.nan
    with pytest.raises(DataError, match=expected):
        check_imu(t, acc, gyro, "rec.aedat4")


def test_imu_gap_and_jitter_warn_with_numbers() -> None:
    from snnexp.data.imu_checks import check_imu

    t, acc, gyro = _imu()
    t[1000:] += 2_500_000  # 2.5 s without IMU samples
    t[500] = t[499] - 200  # 0.2 ms jitter backwards
    warnings = check_imu(t, acc, gyro, "rec")
    assert any("1 gaps longer than 100 ms (longest 2.501 s" in w for w in warnings)
    assert any("backwards 1 times by" in w for w in warnings)


def test_train_refuses_a_recording_with_a_stuck_accelerometer(run_cli, sim_dir, tmp_path) -> None:
    from snnexp.config.schema import SimConfig
    from snnexp.data.recording import ImuSamples, read_recording, write_recording
    from snnexp.data.simulate import simulate_arrays

    rec = simulate_arrays(SimConfig(duration_s=2.0, width=64, height=48, seed=1))
    imu = ImuSamples(rec.imu.t, np.zeros_like(rec.imu.acc), rec.imu.gyro)
    bad = write_recording(tmp_path / "stuck.aedat4", rec, imu=imu)
    assert len(read_recording(bad).imu) == len(rec.imu)
    out = run_cli("train", *TINY, f"data.paths=[{bad}]", "data.seq_length=20",
                  "hydra.run.dir=outputs/stuck")
    _one_error(out, "the accelerometer's median magnitude is 0.000 g")
    assert out.returncode == 2 and not (tmp_path / "outputs" / "stuck").exists()


# ------------------------------------------------------------------------- summarize
def _job(root: Path, name: str, overrides: list[str], metrics: dict | str | None) -> None:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / "checkpoints").mkdir()
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        text = metrics if isinstance(metrics, str) else json.dumps(metrics)
        (job / "final_metrics.json").write_text(text)


def test_summarize_seed_sweep_reports_mean_std_per_setting_and_names_bad_jobs(
        run_cli, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    num = 0
    for norm, base in (("bn", 0.02), ("rms", 0.01)):
        for seed in (1, 2, 3):
            _job(sweep, f"{num}_norm={norm},seed={seed}", [f"norm={norm}", f"seed={seed}"],
                 {"val/mse_best": base + 0.001 * seed, "test/mae_deg": 10 * base + seed,
                  "epochs": 2})
            num += 1
    _job(sweep, "6_norm=mul,seed=1", ["norm=mul", "seed=1"], '{"val/mse_best": 0.0')  # cut off
    _job(sweep, "7_norm=mul,seed=2", ["norm=mul", "seed=2"], None)  # still running / killed
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = subprocess.run([sys.executable, "-m", "snnexp", "summarize", str(sweep)], cwd=work,
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, SNNEXP_ROOT=str(work)))
    assert out.returncode == 0, out.stderr
    rows = {ln.split()[0]: ln for ln in out.stdout.split("per setting:")[1].splitlines()[1:]
            if ln.strip()}
    assert re.search(r"0\.012 \+- 0\.001\s+2\.1 \+- 1\s+nan\s+2 \+- 0\s+3$", rows["rms"])
    assert re.search(r"0\.022 \+- 0\.001\s+2\.2 \+- 1\s+nan\s+2 \+- 0\s+3$", rows["bn"])
    assert "6_norm=mul,seed=1/final_metrics.json is not valid JSON" in out.stderr
    assert "7_norm=mul,seed=2: not finished" in out.stderr
    md = (sweep / "summary.md").read_text()
    assert "| norm | val/mse_best |" in md and "| rms | 0.012 +- 0.001 |" in md
    assert (sweep / "summary_by_setting.csv").is_file()
    assert not (work / "outputs").exists()  # nothing written where it was started


# ------------------------------------------------- signals, resume, fine-tune, log file
def _digest(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.mark.slow
def test_sigterm_keeps_last_checkpoint_prints_resume_command_and_resume_checks_config(
        run_cli, sim_dir, tmp_path) -> None:
    args = [*TINY, f"paths.data_dir={sim_dir}", "trainer.max_epochs=50"]
    run = tmp_path / "outputs" / "run"
    env = dict(os.environ, SNNEXP_ROOT=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "snnexp", "train", *args,
                             "hydra.run.dir=outputs/run"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and \
            not (run / "checkpoints" / "last.pt").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # SLURM pre-emption
    # An impatient second signal once the first is being handled. (Sent blindly after a fixed
    # delay it can arrive while the main thread is still inside one long torch op on a loaded
    # machine: Python then runs both pending handlers in signal-number order, SIGINT first.)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and \
            not any("stopped by" in line for line in lines):
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=60)
    stderr = "".join(lines)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr and "stopped by SIGTERM" in stderr
    assert f"kept {run / 'checkpoints' / 'last.pt'} (epoch" in stderr
    assert not list(run.rglob("*.tmp"))  # the write in progress was finished or removed
    command = stderr.split("continue with: ")[1].splitlines()[0]
    assert command.endswith(f"hydra.run.dir={run} resume=true")
    assert "epoch 1:" in (run / "train.log").read_text()  # written before the checkpoint

    record = [*(run / ".hydra").iterdir(), run / "config.yaml", run / "provenance.json"]
    before = _digest(record)
    changed = run_cli("train", *args, "hydra.run.dir=outputs/run", "resume=true",
                      "data.target=pitch", "model.neuron.tau=3.0", "optimizer=sgd")
    line = _one_error(changed, "these settings differ")
    for key in ("data.target ('roll' -> 'pitch')", "model.neuron.tau (2.0 -> 3.0)",
                "optimizer.name ('adam' -> 'sgd')", "finetune=true"):
        assert key in line
    assert changed.returncode == 2 and _digest(record) == before  # nothing rewritten
    assert not (run / ".hydra.new").exists()

    tune = run_cli("train", *args, f"ckpt_path={run / 'checkpoints' / 'last.pt'}",
                   "finetune=true", "optimizer=sgd", "trainer.max_epochs=1",
                   "evaluate_test=false", "hydra.run.dir=outputs/tune")
    assert tune.returncode == 0, tune.stderr[-2000:]
    history = json.loads((tmp_path / "outputs" / "tune" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]  # a new training from the weights

    kept = len(json.loads((run / "history.json").read_text()))
    resume = shlex.split(command)[2:]
    resume = [a for a in resume if not a.startswith("trainer.max_epochs=")]
    again = run_cli("train", *resume, f"trainer.max_epochs={kept + 1}", "evaluate_test=false")
    assert again.returncode == 0, again.stderr[-2000:]
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, kept + 2))
    log = (run / "train.log").read_text()
    assert "resuming" in log and f"epoch {kept + 1}:" in log and "best val mse" in log
    assert _digest(list((run / ".hydra").iterdir())) == \
        {k: v for k, v in before.items() if "/.hydra/" in k}  # the run's record is its start's


def test_sighup_during_a_simulation_leaves_no_partial_file_and_no_run_dir(tmp_path) -> None:
    env = dict(os.environ, SNNEXP_ROOT=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "snnexp", "simulate", "output=sim/long.aedat4",
                             "data.sim.duration_s=600", "hydra.run.dir=outputs/sim"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "outputs" / "sim").exists():
        time.sleep(0.05)
    time.sleep(1.0)  # inside the simulation
    proc.send_signal(signal.SIGHUP)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGHUP, stderr
    assert "stopped by SIGHUP" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "sim").exists() or not list((tmp_path / "sim").iterdir())
    assert not (tmp_path / "outputs" / "sim").exists()


def test_checkpoint_path_that_is_a_directory_names_the_file_to_pass(run_cli, tmp_path) -> None:
    out = run_cli("evaluate", f"ckpt={tmp_path}")
    _one_error(out, f"is a directory: pass a checkpoint file, e.g. {tmp_path}/checkpoints/best.pt")
