"""task=classification: decoders, padding masks, truncation, class data, metrics, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snnexp.config.schema import ClassSimConfig, DataConfig, ModelConfig, NormConfig, StageConfig
from snnexp.errors import CheckpointError, DataError
from snnexp.training.classification import (
    RunningDecoder,
    accuracy_metrics,
    decode,
    plot_confusion,
    run_classification,
    valid_mask,
)
from snnexp.training.tasks import check_task

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread is enough


# ----------------------------------------------------------------------------- decoders
def test_decoders_on_hand_made_membranes_ignore_padded_steps() -> None:
    # two samples, two classes, four steps; sample 1 is two steps long (steps 2, 3 padded)
    out = torch.tensor([[[0.1, 0.5], [0.3, 0.0]],
                        [[0.9, 0.2], [0.2, 0.4]],
                        [[0.4, 0.7], [5.0, 5.0]],
                        [[0.2, 0.6], [-5.0, 9.0]]])
    mask = valid_mask(torch.tensor([4, 2]), 4)
    assert mask[:, 1].tolist() == [True, True, False, False]
    for kind, want in (("max", [[0.9, 0.7], [0.3, 0.4]]), ("mean", [[0.4, 0.5], [0.25, 0.2]]),
                       ("last", [[0.2, 0.6], [0.2, 0.4]])):
        assert torch.allclose(decode(out, mask, kind), torch.tensor(want)), kind


def test_transient_steps_are_left_out_but_never_a_samples_last_step() -> None:
    mask = valid_mask(torch.tensor([5, 2]), 5, transient=3)
    assert mask[:, 0].tolist() == [False, False, False, True, True]
    assert mask[:, 1].tolist() == [False, True, False, False, False]


@pytest.mark.parametrize("kind", ["max", "mean", "last"])
def test_running_decoder_over_chunks_equals_the_whole_sequence(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    out = torch.randn(23, 5, 4, generator=g)
    mask = valid_mask(torch.tensor([23, 1, 7, 10, 11]), 23)
    running = RunningDecoder(kind)
    for t0 in range(0, 23, 5):
        scores = running.update(out[t0:t0 + 5], mask[t0:t0 + 5])
    assert torch.allclose(scores, decode(out, mask, kind), atol=1e-6)


def test_an_unknown_decoder_names_the_key() -> None:
    from snnexp.errors import ConfigError

    with pytest.raises(ConfigError, match="task.decoder"):
        RunningDecoder("median")


# ----------------------------------------------------------------------------- TBPTT
def _tiny_net(outputs: int, shape=(2, 12, 16)) -> torch.nn.Module:
    from snnexp.models import build_network

    model = ModelConfig(stages=[StageConfig(8, 3, 8, 1, None, 2, 1, 1)], hidden=16)
    torch.manual_seed(0)
    return build_network(model, NormConfig(kind="rms"), shape, outputs=outputs).double()


def _batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    frames = (torch.rand(t, len(lengths), 2, 12, 16, generator=g) < 0.3).double() * 2
    for b, n in enumerate(lengths):
        frames[n:, b] = 0  # padding: empty frames
    return frames, torch.tensor(lengths)


def test_a_padded_sample_scores_the_same_as_alone() -> None:
    net = _tiny_net(3)
    frames, lengths = _batch([13, 6, 9])
    labels = torch.tensor([0, 1, 2])
    batch = run_classification(net, frames, lengths, labels, k=4, decoder="max")
    for b, n in enumerate(lengths.tolist()):
        alone = run_classification(net, frames[:n, b:b + 1], lengths[b:b + 1], labels[b:b + 1],
                                   k=4, decoder="max")
        assert np.allclose(batch.scores[b], alone.scores[0], atol=1e-9)


@pytest.mark.parametrize("kind", ["max", "mean", "last"])
def test_truncation_changes_gradients_not_the_decoded_scores(kind: str) -> None:
    net = _tiny_net(3)
    frames, lengths = _batch([13, 6, 9], seed=1)
    labels = torch.tensor([2, 0, 1])
    whole = run_classification(net, frames, lengths, labels, k=13, decoder=kind)
    chunked = run_classification(net, frames, lengths, labels, k=3, decoder=kind)
    assert np.allclose(whole.scores, chunked.scores, atol=1e-9)
    assert whole.loss == pytest.approx(float(F.cross_entropy(torch.from_numpy(whole.scores),
                                                             labels)))


def test_loss_at_chunk_steps_every_chunk_and_loss_at_end_once_per_ending_chunk() -> None:
    frames, lengths = _batch([13, 6, 9], seed=2)
    labels = torch.tensor([0, 1, 2])
    steps = {}
    for loss_at in ("chunk", "end"):
        net = _tiny_net(3)
        opt = torch.optim.SGD(net.parameters(), lr=0.0)  # steps counted, weights unchanged
        out = run_classification(net, frames, lengths, labels, k=4, decoder="mean",
                                 loss_at=loss_at, optimizer=opt)
        steps[loss_at] = out.optimizer_steps
    # chunks [0,4) [4,8) [8,12) [12,13): every one holds a real step; sample ends fall in
    # chunks 1 (length 6), 2 (length 9) and 3 (length 13)
    assert steps == {"chunk": 4, "end": 3}
    # K >= T: one chunk, whose loss is the cross-entropy of the whole decoded sequence
    net = _tiny_net(3)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    out = run_classification(net, frames, lengths, labels, k=20, decoder="mean", optimizer=opt)
    assert out.chunk_losses == [pytest.approx(out.loss)]


def test_training_on_a_separable_toy_problem_learns_it() -> None:
    """Class 0: events in the left half; class 1: right half. A few steps must separate them."""
    net = _tiny_net(2).float()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(3)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 2, (n,), generator=g)
        frames = torch.zeros(8, n, 2, 12, 16)
        for b, y in enumerate(labels.tolist()):
            half = slice(0, 8) if y == 0 else slice(8, 16)
            frames[:, b, :, :, half] = (torch.rand(8, 2, 12, 8, generator=g) < 0.4).float() * 3
        return frames, torch.full((n,), 8), labels

    for _ in range(30):
        run_classification(net, *batch(8), k=4, optimizer=opt)
    frames, lengths, labels = batch(64)
    out = run_classification(net.eval(), frames, lengths, labels, k=4)
    assert (out.scores.argmax(1) == labels.numpy()).mean() >= 0.9


# ----------------------------------------------------------------------------- metrics
def test_accuracy_metrics_top5_per_class_and_confusion(tmp_path: Path) -> None:
    classes = [f"c{i}" for i in range(7)]
    scores = np.eye(7)[[0, 1, 2, 3, 4, 5, 6, 1]] * 5.0
    scores[7, 0] = 1.0  # sample 7 (class 0) predicted as 1, class 0 second
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 0])
    m = accuracy_metrics(scores, labels, classes)
    assert m["acc"] == pytest.approx(7 / 8)
    assert m["acc_top5"] == 1.0
    assert m["per_class"]["c0"] == 0.5 and m["per_class"]["c1"] == 1.0
    assert m["confusion"][0][1] == 1 and np.trace(np.array(m["confusion"])) == 7
    assert "acc_top5" not in accuracy_metrics(scores[:, :5][:5], labels[:5], classes[:5])
    png = plot_confusion(np.array(m["confusion"]), classes, tmp_path / "confusion.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_checkpoint_of_the_other_task_is_refused() -> None:
    with pytest.raises(CheckpointError, match="is a regression model, not a classification"):
        check_task({"config": {}}, "classification", "old.pt")
    with pytest.raises(CheckpointError, match="task=classification"):
        check_task({"config": {"task": {"name": "classification"}}}, "regression", "c.pt")
    check_task({"config": {"task": {"name": "regression"}}}, "regression", "r.pt")


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def class_cfg(tmp_path_factory: pytest.TempPathFactory) -> DataConfig:
    root = tmp_path_factory.mktemp("classes")
    return DataConfig(paths=["builtin:classes"], builtin_dir=str(root / "data"),
                      cache_dir=str(root / "cache"), window_us=20_000, downsample=2,
                      batch_size=4, split=[0.5, 0.25, 0.25],
                      classes=ClassSimConfig(samples_per_class=4, scenes=2, width=32, height=24,
                                             duration_s=[0.1, 0.3]))


def test_builtin_clips_are_aedat4_files_in_a_folder_per_class(class_cfg: DataConfig) -> None:
    from snnexp.data.class_sim import builtin_root
    from snnexp.data.classification import build_class_data
    from snnexp.data.recording import read_recording

    data = build_class_data(class_cfg, seed=0)
    root = builtin_root(class_cfg.classes, class_cfg.builtin_dir)
    assert sorted(p.name for p in root.iterdir()) == sorted(class_cfg.classes.motions)
    assert data.classes == sorted(class_cfg.classes.motions)
    files = sorted(root.glob("*/*.aedat4"))
    assert len(files) == 6 * 4
    # every class is in every role (stratified split), no sample in two roles
    roles = data.roles
    assert sorted(roles["train"] + roles["val"] + roles["test"]) == list(range(24))
    for r in ("train", "val", "test"):
        assert set(data.samples.labels[roles[r]].tolist()) == set(range(6))
    # the frames of a sample count exactly the events of its file (read through dv-processing)
    lengths = data.samples.lengths
    assert lengths.min() < lengths.max()  # lengths differ: batches are padded
    i = int(np.argmin(lengths))
    name = data.samples.names[i]
    path = next(f for f in files if f.name == name)
    rec = read_recording(path, require=False)
    assert rec.width == 32 and rec.height == 24
    frames, lens, labels = next(data._batches([i, int(np.argmax(lengths))]))
    assert int(frames[:, 0].sum()) == len(rec.events)
    assert int(lens[0]) == lengths[i] and frames[int(lens[0]):, 0].sum() == 0
    assert data.classes[int(labels[0])] == path.parent.name
    # a second build reads the cache and gives the same samples
    again = build_class_data(class_cfg, seed=0)
    assert np.array_equal(again.samples.cells, data.samples.cells)
    entry = next(Path(class_cfg.cache_dir).glob("classes-*.npz"))
    # a damaged cache entry is rebuilt (with a warning), never used
    entry.write_bytes(entry.read_bytes()[:100])
    rebuilt = build_class_data(class_cfg, seed=0)
    assert np.array_equal(rebuilt.samples.cells, data.samples.cells)


def test_num_classes_that_disagrees_with_the_data_is_one_clear_error(class_cfg) -> None:
    from snnexp.data.classification import build_class_data

    with pytest.raises(DataError, match=r"task.num_classes=10 but the data has 6 classes"):
        build_class_data(class_cfg, num_classes=10)


def test_bad_class_folders_are_named(class_cfg: DataConfig, tmp_path: Path) -> None:
    import dataclasses

    from snnexp.data.classification import build_class_data

    with pytest.raises(DataError, match="is not a folder"):
        build_class_data(dataclasses.replace(class_cfg, paths=[str(tmp_path / "nope")]))
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folder with AEDAT4 files"):
        build_class_data(dataclasses.replace(class_cfg, paths=[str(tmp_path / "empty")]))
    with pytest.raises(DataError, match="regression recording"):
        build_class_data(dataclasses.replace(class_cfg, paths=["builtin:3"]))


# ----------------------------------------------------------------------------- end to end
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled")
    return subprocess.run([sys.executable, "-m", "snnexp", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


TINY_CLS = ["task=classification", "logger=none", "trainer.progress=false",
            "trainer.device=cpu", "trainer.num_threads=1", "model.hidden=32",
            "data.classes.width=32", "data.classes.height=24", "data.classes.scenes=3",
            "data.downsample=1",
            "data.classes.samples_per_class=14", "data.classes.duration_s=[0.2,0.4]",
            "data.classes.motions=[pan_left,pan_right,tilt_up,tilt_down]",
            "data.split=[0.5,0.25,0.25]", "data.batch_size=8", "trainer.max_epochs=6"]


@pytest.mark.slow
def test_tiny_classification_run_beats_chance_and_refuses_the_other_task(tmp_path) -> None:
    run = tmp_path / "cls"
    r = _cli("train", *TINY_CLS, f"hydra.run.dir={run}", "paths.data_dir=data", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["test/acc"] >= 0.6, final  # chance: 0.25
    assert "val/acc_best" in final and "test/per_class" in final
    assert (run / "test" / "confusion.png").is_file()
    assert "test: accuracy" in r.stdout
    best = run / "checkpoints" / "best.pt"
    # a classification checkpoint evaluated as regression: one line, non-zero exit
    r = _cli("evaluate", f"ckpt={best}", "expect_task=regression",
             f"hydra.run.dir={tmp_path / 'e1'}",
             cwd=tmp_path)
    assert r.returncode != 0
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "is a classification model, not a regression" in errors[0]
    assert "Traceback" not in r.stderr and not (tmp_path / "e1" / "metrics.json").exists()
    # ... and evaluated as what it is, it reproduces the test accuracy
    r = _cli("evaluate", f"ckpt={best}", f"hydra.run.dir={tmp_path / 'e2'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    assert metrics["acc"] == pytest.approx(final["test/acc"])
    # resuming a classification run as regression is refused before anything is written
    r = _cli("train", "logger=none", f"ckpt_path={best}", f"hydra.run.dir={tmp_path / 'r'}",
             "paths.data_dir=data", cwd=tmp_path)
    assert r.returncode != 0 and "is a classification model" in r.stderr
    assert not (tmp_path / "r" / "checkpoints" / "last.pt").exists()


def test_summarize_shows_accuracy_for_a_classification_sweep_best_first(tmp_path) -> None:
    from snnexp.commands.summarize import collect, format_table

    sweep = tmp_path / "sweep"
    for i, (model, acc) in enumerate((("sew", 0.8), ("plain", 0.95), ("spiking", 0.5))):
        run = sweep / f"{i}_model={model}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- task=classification\n- model={model}\n")
        (run / "final_metrics.json").write_text(json.dumps(
            {"val/acc_best": acc, "test/acc": acc - 0.05, "epochs": 3, "best_epoch": 2}))
    keys, rows, problems = collect([str(sweep)])
    assert problems == []
    assert keys == ["model"]
    assert [r["model"] for r in rows] == ["plain", "sew", "spiking"]  # highest accuracy first
    table = format_table(keys, rows)
    assert "val/acc_best" in table and "test/acc" in table and "val/mse_best" not in table


@pytest.mark.slow
def test_ddp_classification_follows_the_single_process_trajectory(tmp_path) -> None:
    # clips of 10-25 windows and K = 10: the two ranks' batches have different lengths and
    # numbers of chunks; every rank pads to the longest and steps at every chunk, with the loss
    # scaled so that DDP's averaged gradient equals one process's over the 4 samples
    common = ["task=classification", "logger=none", "trainer.progress=false",
              "trainer.device=cpu", "trainer.num_threads=1", "model.hidden=16", "norm=rms",
              "data.classes.width=32", "data.classes.height=24", "data.classes.scenes=2",
              "data.classes.samples_per_class=6", "data.classes.duration_s=[0.2,0.5]",
              "data.classes.motions=[pan_left,pan_right,tilt_up,tilt_down]",
              "data.downsample=1", "data.split=[0.5,0.25,0.25]", "trainer.max_epochs=2",
              "evaluate_test=false", "paths.data_dir=data", "optimizer.lr=2e-2"]
    single = _cli("train", *common, "data.batch_size=4", "hydra.run.dir=single", cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "-m", "snnexp", "train", *common,
                          "data.batch_size=2", "trainer.strategy=ddp", "hydra.run.dir=ddp"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    h1 = json.loads((tmp_path / "single" / "history.json").read_text())
    h2 = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert len(h1) == len(h2) == 2
    assert h1[-1]["train/loss"] < h1[0]["train/loss"] - 0.05  # it learns: the test can tell
    for a, b in zip(h1, h2):
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=0.02)
        assert b["val/loss"] == pytest.approx(a["val/loss"], rel=0.05)


@pytest.mark.parametrize("data", ["data=classes", "data=mnist", "data=tonic"])
def test_classification_data_without_task_classification_says_to_add_it(compose_train,
                                                                        data) -> None:
    from snnexp.config.schema import TrainConfig
    from snnexp.config.validate import to_schema, validate_train
    from snnexp.errors import ConfigError

    cfg = to_schema(compose_train(data, tiny=False), TrainConfig)
    with pytest.raises(ConfigError, match="add task=classification"):
        validate_train(cfg)
    fixed = to_schema(compose_train(data, "task=classification", tiny=False), TrainConfig)
    validate_train(fixed)  # the same data as a classification run passes
