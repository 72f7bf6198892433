"""The `snnexp` command end to end, in subprocesses as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY


def _run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("final_metrics.json"))


def test_help_lists_commands_quickly(run_cli) -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for cmd in ("train", "evaluate", "simulate", "summarize"):
        assert cmd in out.stdout


def test_train_help_shows_config_groups(run_cli) -> None:
    out = run_cli("train", "--help")
    assert out.returncode == 0, out.stderr
    for group in ("data:", "model:", "norm:", "optimizer:", "scheduler:", "logger:"):
        assert group in out.stdout
    assert "sew, plain, spiking" in out.stdout.replace("\n", " ") or "spiking" in out.stdout


@pytest.mark.slow
def test_train_then_evaluate_reproduces_test_metrics(run_cli, sim_dir, tmp_path) -> None:
    out = run_cli("train", *TINY, f"paths.data_dir={sim_dir}", "hydra.run.dir=outputs/run1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test: mae" in out.stdout and "output directory:" in out.stdout
    run = tmp_path / "outputs" / "run1"
    trained = json.loads((run / "test" / "metrics.json").read_text())
    ev = run_cli("evaluate", f"ckpt={run / 'checkpoints' / 'best.pt'}",
                 "hydra.run.dir=outputs/eval1", "trainer.progress=false")
    assert ev.returncode == 0, ev.stderr[-3000:]
    evaluated = json.loads((tmp_path / "outputs" / "eval1" / "metrics.json").read_text())
    assert evaluated == trained  # exactly the same numbers
    for png in ("prediction.png", "abs_error.png", "spike_activity.png", "norm_stats.png",
                "amplification.png"):
        assert (tmp_path / "outputs" / "eval1" / png).stat().st_size > 1000, png
    assert (tmp_path / "outputs" / "eval1" / "predictions.csv").is_file()
    # the run's test: the training recording's test part and the held-out recording, whole
    parts = {r["group"]: r for r in trained["recordings"]}
    assert parts["within"]["windows"] == "test split" and parts["held_out"]["windows"] == "all"
    assert trained["headline"] == "held_out" and trained["mae_deg"] == parts["held_out"]["mae_deg"]
    assert "test on held-out recordings: mae" in out.stdout
    # another recording (no '+'): every window of it; a training recording: its test split
    for rec, group in (("builtin:4", "held_out"), ("builtin:3", "within")):
        ev = run_cli("evaluate", f"ckpt={run / 'checkpoints' / 'best.pt'}",
                     f"data.paths=[{rec}]", f"hydra.run.dir=outputs/eval_{group}",
                     "monitor=none", "plots=false")
        assert ev.returncode == 0, ev.stderr[-3000:]
        m = json.loads((tmp_path / "outputs" / f"eval_{group}" / "metrics.json").read_text())
        (r,) = m["recordings"]
        assert r["group"] == group and m["steps"] == r["last_window"] - r["first_window"]
        if group == "held_out":
            assert r["first_window"] == 0 and r["last_window"] + 1 == 599  # all 6 s of it
        else:
            assert r["first_window"] == parts["within"]["first_window"]


@pytest.mark.slow
def test_multirun_two_jobs_each_with_own_directory(run_cli, sim_dir, tmp_path) -> None:
    out = run_cli("train", "-m", *TINY, f"paths.data_dir={sim_dir}", "norm=bn,rms",
                  "trainer.max_epochs=1", "evaluate_test=false", "hydra.sweep.dir=outputs/sweep")
    assert out.returncode == 0, out.stderr[-3000:]
    runs = _run_dirs(tmp_path / "outputs" / "sweep")
    assert [p.name for p in runs] == ["0_norm=bn", "1_norm=rms"]
    for run in runs:
        assert (run / "checkpoints" / "best.pt").is_file()
        assert (run / "metrics.jsonl").is_file()
    summary = run_cli("summarize", "dirs=[outputs/sweep]", "hydra.run.dir=outputs/sum")
    assert summary.returncode == 0, summary.stderr[-2000:]
    assert "norm" in summary.stdout and "val/mse_best" in summary.stdout
    csv = (tmp_path / "outputs" / "sweep" / "summary.csv").read_text().splitlines()
    assert len(csv) == 3 and csv[0].startswith("norm,val/mse_best")


@pytest.mark.parametrize(("args", "expected"), [
    (["trainer.tbptt_k=0"], "trainer.tbptt_k"),
    (["norm=layer"], "norm/layer"),
    (["data.split=[0.5,0.5,0.5]"], "data.split"),
    (["trainer.tbptt_k=ten"], "trainer.tbptt_k"),
    (["data=aedat4", "data.paths=[/nonexistent/rec.aedat4]"], "/nonexistent/rec.aedat4"),
    (["data.seq_length=1"], "data.seq_length"),
    (["model.block_type=dense"], "model.block_type"),
    (["optimizer.lr=-1"], "optimizer.lr"),
    (["hydra.run.dir=/proc/snnexp/run"], "cannot create the output directory"),
])
def test_bad_input_one_line_and_nonzero_exit(run_cli, args: list[str], expected: str) -> None:
    out = run_cli("train", *args, "logger=none")
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1 and expected in errors[0], out.stderr
    assert "Traceback" not in out.stderr


def test_evaluate_refuses_junk_and_truncated_checkpoints(run_cli, tmp_path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    out = run_cli("evaluate", f"ckpt={junk}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"checkpoint '{junk}' is corrupted or truncated" in out.stderr
    assert junk.read_text() == "not a checkpoint"  # nothing overwritten


def test_evaluate_requires_ckpt(run_cli) -> None:
    out = run_cli("evaluate")
    assert out.returncode != 0
    assert "ckpt" in out.stderr and "Traceback" not in out.stderr


def test_unknown_command(run_cli) -> None:
    out = run_cli("fly")
    assert out.returncode == 2 and "unknown command 'fly'" in out.stderr
