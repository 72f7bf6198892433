"""data=tonic: tiny fixtures in each dataset's own layout, read through tonic's classes.

No download: tests/tonic_fixtures.py writes a few samples per class in the layout tonic 1.7
reads (NMNIST .bin files, POKERDVS / DVSGesture .npy files, CIFAR10DVS AEDAT4 files).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from snnexp.config.schema import TONIC_DATASETS, DataConfig
from snnexp.errors import DataError
from tests.tonic_fixtures import WRITERS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# test-set samples of each fixture (tonic_fixtures' defaults); None: no official test set
FIXTURE_TEST = {"NMNIST": 20, "POKERDVS": 8, "DVSGesture": 11, "CIFAR10DVS": None}


@pytest.fixture(scope="module")
def tonic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tonic")
    for write in WRITERS.values():
        write(root)
    return root


def _cfg(root: Path, cache: Path, **kw) -> DataConfig:
    base = dict(root=str(root), cache_dir=str(cache), cache=True, download=False,
                denoise_us=None, downsample=1, window_us=10000, n_time_bins=None,
                split=[0.5, 0.25, 0.25], batch_size=4, limit_samples=None)
    return DataConfig(**{**base, **kw})


def _tonic_frames(name: str, root: Path, cfg: DataConfig, relpath: str) -> np.ndarray:
    """tonic's own frames of one sample file: its dataset class + its transforms."""
    import tonic

    from snnexp.data.tonic_data import TONIC_SETS, open_set, transform

    spec = TONIC_SETS[name]
    ds = open_set(spec, root, train=False, download=False)
    base = root / name / spec.folders[-1]
    i = [str(Path(p).relative_to(base)) for p in ds.data].index(relpath)
    tf, _ = transform(cfg, tuple(getattr(tonic.datasets, name).sensor_size))
    return tf(ds[i][0])


def test_the_tonic_registry_is_the_schema_list() -> None:
    from snnexp.data.tonic_data import TONIC_SETS, class_names

    assert tuple(TONIC_SETS) == TONIC_DATASETS
    assert [len(class_names(n)) for n in TONIC_SETS] == [10, 4, 11, 10]


@pytest.mark.parametrize("name", TONIC_DATASETS)
def test_each_dataset_is_read_through_tonic_in_its_roles(name, tonic_root, tmp_path) -> None:
    from snnexp.data.tonic_data import build_tonic, class_names

    down = 4 if name in ("DVSGesture", "CIFAR10DVS") else 1  # 128 x 128 -> 32 x 32
    cfg = _cfg(tonic_root, tmp_path, dataset=name, downsample=down)
    data = build_tonic(cfg, seed=0)
    assert data.classes == class_names(name)
    n_test = FIXTURE_TEST[name]
    if n_test is not None:  # the official test set is the test, the training set is split
        assert data.num_test_sequences == n_test
    else:
        assert data.num_test_sequences > 0
    roles = [set(data.roles[r]) for r in ("train", "val", "test")]
    assert all(roles) and not (roles[0] & roles[1] or roles[0] & roles[2] or roles[1] & roles[2])
    assert data.input_shape == {"NMNIST": (2, 34, 34), "POKERDVS": (2, 35, 35)}.get(
        name, (2, 32, 32))  # tonic's sensor size (W, H, P) as frames (P, H, W), downsampled
    frames, lengths, labels = next(iter(data.test_batches()))
    assert frames.shape[1] == len(labels) == len(lengths)
    # each class lights its own band of columns: the batch's labels match where its events are
    cols = frames.sum((0, 2, 3)).numpy()  # [B, W]
    band = np.argmax(cols, 1) * data.num_classes // frames.shape[-1]
    assert (np.abs(band - labels.numpy()) <= 1).all()


def test_frames_equal_tonics_own_toframe_and_padding_keeps_them(tonic_root, tmp_path) -> None:
    from snnexp.data.tonic_data import build_tonic

    cfg = _cfg(tonic_root, tmp_path, dataset="DVSGesture", downsample=4, denoise_us=20000,
               window_us=7000)
    data = build_tonic(cfg, seed=0)
    names = data.test_names()
    frames, lengths, _ = next(iter(data.test_batches()))
    for b in range(2):
        ref = _tonic_frames("DVSGesture", tonic_root, cfg, names[b])
        n = int(lengths[b])
        assert n == len(ref)
        np.testing.assert_array_equal(frames[:n, b].numpy(), ref)
        assert frames[n:, b].sum() == 0  # padded steps are empty
    # n_time_bins instead of a window: that many frames per sample
    data = build_tonic(dataclasses.replace(cfg, n_time_bins=5), seed=0)
    assert set(data.samples.lengths.tolist()) == {5} and data.window_us == 0


def test_frames_are_cached_and_a_changed_setting_or_file_frames_again(
        tonic_root, tmp_path, monkeypatch) -> None:
    from snnexp.data import tonic_data

    root = tmp_path / "data"
    shutil.copytree(tonic_root / "POKERDVS", root / "POKERDVS")
    cfg = _cfg(root, tmp_path / "cache", dataset="POKERDVS")
    calls = []
    real = tonic_data._frame_sets
    monkeypatch.setattr(tonic_data, "_frame_sets", lambda *a: calls.append(1) or real(*a))
    first = tonic_data.build_tonic(cfg, seed=0)
    again = tonic_data.build_tonic(cfg, seed=1)  # another seed: same frames, other split
    assert len(calls) == 1
    np.testing.assert_array_equal(first.samples.cells, again.samples.cells)
    assert len(list((tmp_path / "cache").glob("tonic-POKERDVS-*.npz"))) == 1
    tonic_data.build_tonic(dataclasses.replace(cfg, window_us=5000), seed=0)
    tonic_data.build_tonic(dataclasses.replace(cfg, denoise_us=5000), seed=0)
    tonic_data.build_tonic(dataclasses.replace(cfg, downsample=5), seed=0)
    assert len(calls) == 4
    sample = next((root / "POKERDVS" / "pips_train" / "cl").glob("*.npy"))
    ev = np.load(sample)
    np.save(sample, ev[: len(ev) // 2])  # a changed file
    changed = tonic_data.build_tonic(cfg, seed=0)
    assert len(calls) == 5 and len(changed.samples.cells) < len(first.samples.cells)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _train_cli(tmp_path: Path, *overrides: str) -> int:
    """``snnexp train`` in this process; Hydra's log handlers (their file is removed with the
    failed run's folder) are taken off again."""
    from snnexp.cli import main

    handlers, level = list(logging.root.handlers), logging.root.level
    try:
        with pytest.raises(SystemExit) as exc:
            main(["train", "task=classification", "data=tonic", "logger=none",
                  f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}",
                  *overrides])
    finally:
        for h in logging.root.handlers:
            if h not in handlers:
                h.close()
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
    return exc.value.code


def test_a_missing_dataset_names_its_folder_and_the_fetch_command(tmp_path, capsys) -> None:
    assert _train_cli(tmp_path, "data.dataset=DVSGesture") == 2
    line = _one_error_line(capsys)
    expected = tmp_path / "data" / "tonic" / "DVSGesture"
    assert f"{expected}/ibmGestureTrain/ does not exist" in line
    assert f"{expected}/ibmGestureTest/" in line and "userNN_<lighting>" in line
    assert "data.dataset=DVSGesture" in line and "data.download=true" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_unknown_dataset_name_lists_the_real_ones(tmp_path, capsys) -> None:
    assert _train_cli(tmp_path, "data.dataset=NMIST") == 2
    line = _one_error_line(capsys)
    assert "data.dataset" in line and "NMIST" in line
    assert all(n in line for n in TONIC_DATASETS)


def test_incomplete_folders_and_wrong_num_classes_are_one_line(tonic_root, tmp_path) -> None:
    from snnexp.data.tonic_data import build_tonic

    root = tmp_path / "data"
    shutil.copytree(tonic_root / "NMNIST", root / "NMNIST")
    cfg = _cfg(root, tmp_path / "cache", dataset="NMNIST")
    with pytest.raises(DataError, match="task.num_classes=4 but NMNIST has 10 classes"):
        build_tonic(cfg, num_classes=4)
    shutil.rmtree(root / "NMNIST" / "Test" / "7")
    with pytest.raises(DataError) as exc:
        build_tonic(cfg)
    msg = str(exc.value)
    assert "\n" not in msg and "Test/ is incomplete: no sample of class 7 - seven" in msg
    assert "data.download=true" in msg
    shutil.rmtree(root / "NMNIST" / "Test")
    with pytest.raises(DataError, match=r"NMNIST/Test/ does not exist"):
        build_tonic(cfg)


@pytest.mark.slow
def test_tiny_training_on_a_tonic_fixture_writes_accuracy(tonic_root, compose_train,
                                                         tmp_path) -> None:
    from snnexp.commands.train import train

    cfg = compose_train("task=classification", "data=tonic", "data.dataset=POKERDVS",
                        f"data.root={tonic_root}", f"data.cache_dir={tmp_path / 'cache'}",
                        "logger=none", "trainer.device=cpu", "trainer.num_threads=1",
                        "trainer.progress=false", "model.hidden=16", "trainer.max_epochs=2",
                        "data.batch_size=8", "data.denoise_us=null", "data.window_us=20000",
                        tiny=False)
    train(cfg)
    run = Path(cfg.paths.output_dir)
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["test/samples"] == FIXTURE_TEST["POKERDVS"]
    assert 0.0 <= final["test/acc"] <= 1.0 and "val/acc_best" in final
    assert set(final["test/per_class"]) == {"cl", "he", "di", "sp"}
    assert (run / "test" / "confusion.png").is_file()
    meta = json.loads((run / "test" / "metrics.json").read_text())
    assert meta["classes"] == ["cl", "he", "di", "sp"]


@pytest.mark.slow
def test_debug_default_with_classification_is_a_fast_smoke_run(compose_train, tmp_path) -> None:
    from snnexp.commands.train import train

    cfg = compose_train("debug=default", "task=classification", "trainer.device=cpu",
                        "trainer.num_threads=1", tiny=False)
    # the regression smoke settings (builtin:SEED recordings) do not reach the class data
    assert list(cfg.data.paths) == ["builtin:classes"] and not cfg.data.test_paths
    assert cfg.trainer.max_epochs == 1 and cfg.logger.name == "none"
    train(cfg)
    final = json.loads((Path(cfg.paths.output_dir) / "final_metrics.json").read_text())
    assert final["test/samples"] > 0 and "test/acc" in final
