"""Spike encoders of static images and MNIST's IDX files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from snnexp.data.encoders import encode, load_mnist, read_idx
from snnexp.errors import ConfigError, DataError


def _images() -> torch.Tensor:
    return torch.tensor([[[0.0, 0.25], [0.5, 1.0]]])  # one 2 x 2 image


def test_poisson_rate_follows_the_intensity_and_is_seeded() -> None:
    x = _images()
    spikes = encode(x, "poisson", 4000, generator=torch.Generator().manual_seed(1))
    assert spikes.shape == (4000, 1, 1, 2, 2)
    rate = spikes.mean(0)[0, 0]
    assert torch.allclose(rate, x[0], atol=0.03)
    assert rate[0, 0] == 0 and rate[1, 1] == 1
    again = encode(x, "poisson", 4000, generator=torch.Generator().manual_seed(1))
    other = encode(x, "poisson", 4000, generator=torch.Generator().manual_seed(2))
    assert torch.equal(spikes, again) and not torch.equal(spikes, other)
    half = encode(x, "poisson", 4000, gain=0.5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(half.mean(0)[0, 0], 0.5 * x[0], atol=0.03)


def test_latency_one_spike_earlier_for_brighter_pixels() -> None:
    spikes = encode(_images(), "latency", 9)[:, 0, 0]
    counts = spikes.sum(0)
    assert counts.tolist() == [[0.0, 1.0], [1.0, 1.0]]  # the black pixel never spikes
    first = spikes.argmax(0)
    assert first[1, 1] == 0 and first[1, 0] == 4 and first[0, 1] == 6  # round((1 - x) * 8)


def test_constant_current_is_deterministic_and_fires_more_for_brighter_pixels() -> None:
    x = torch.tensor([[[0.0, 0.5], [0.75, 1.0]]])  # currents 0, 1.5, 2.25, 3 at gain 3
    a = encode(x, "constant_current", 50, gain=3.0, tau=2.0)
    assert torch.equal(a, encode(x, "constant_current", 50, gain=3.0, tau=2.0))
    counts = a.sum(0)[0, 0]
    assert counts[0, 0] == 0  # no current: no spike
    assert counts[0, 1] < counts[1, 0] <= counts[1, 1]  # (2.25 and 3 fire at every step)
    # v -> I - (I - 0)(1 - 1/tau)^t: a current of 1.5 with tau 2 reaches 1 at step 2 (v = 1.125)
    assert a[:, 0, 0, 0, 1].argmax() == 1


def test_encoder_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="data.encoder"):
        encode(_images(), "rate", 4)
    with pytest.raises(ConfigError, match="data.num_steps"):
        encode(_images(), "poisson", 0)


def _write_idx(path: Path, arr: np.ndarray, code: int, compress: bool) -> None:
    head = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big")
                                                    for s in arr.shape)
    data = head + arr.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def test_mnist_idx_files_are_read_plain_or_gzip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, 0x08, True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels, 0x08, False)
    x, y = load_mnist(tmp_path, train=True)
    assert np.array_equal(x, images) and y.tolist() == [3, 1, 4, 1, 5]
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\(.gz\) not found"):
        load_mnist(tmp_path, train=False)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    _write_idx(short, images, 0x08, False)
    short.write_bytes(short.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        read_idx(short)


def _mnist_folder(root: Path, n: int = 60) -> Path:
    """Tiny MNIST-format files: class c is a bright bar in column band c (10 classes)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 10
    images = (rng.random((n, 28, 28)) * 30).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 4:24, 2 + 2 * c:4 + 2 * c] = 255
    for prefix in ("train", "t10k"):
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images, 0x08, True)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8), 0x08, True)
    return root


def test_mnist_bundle_splits_encodes_and_repeats(tmp_path: Path) -> None:
    from snnexp.config.schema import DataConfig
    from snnexp.data.images import build_mnist

    cfg = DataConfig(paths=["x"], dataset="mnist", root=str(_mnist_folder(tmp_path)),
                     encoder="poisson", num_steps=6, batch_size=16, split=[0.8, 0.2, 0.0])
    data = build_mnist(cfg, seed=0)
    assert data.num_classes == 10 and data.input_shape == (1, 28, 28)
    # per class 6 images: 1 validation, 5 training (stratified); the official test set whole
    assert len(data.labels["train"]) == 50 and sorted(data.labels["val"].tolist()) == list(
        range(10))
    assert len(data.labels["test"]) == 60
    frames, lengths, labels = next(data.val_batches())
    assert frames.shape == (6, 10, 1, 28, 28) and set(frames.unique().tolist()) <= {0.0, 1.0}
    assert lengths.tolist() == [6] * 10
    again = next(data.val_batches())[0]
    assert torch.equal(frames, again)  # validation is encoded the same every time
    e1, e2 = next(data.train_batches(1))[0], next(data.train_batches(2))[0]
    assert e1.shape == e2.shape and not torch.equal(e1, e2)
    with pytest.raises(DataError, match="task.num_classes=5 but MNIST has 10 classes"):
        build_mnist(cfg, num_classes=5)


def test_mnist_trains_through_the_classification_recipe(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_module

    from snnexp.commands.train import train
    from snnexp.config.store import register_schemas

    register_schemas()
    root = _mnist_folder(tmp_path / "mnist", n=80)
    with initialize_config_module("conf", version_base=None):
        cfg = compose("train", overrides=[
            "task=classification", "data=mnist", f"data.root={root}", "logger=none",
            "data.num_steps=4", "data.encoder=latency", "data.batch_size=16",
            "model.hidden=32", "trainer.max_epochs=2", "trainer.progress=false",
            "trainer.device=cpu", f"paths.output_dir={tmp_path / 'run'}",
            f"paths.cache_dir={tmp_path / 'cache'}"])
    metrics, _ = train(cfg)
    assert metrics["test/samples"] == 80 and "val/acc_best" in metrics
    assert (tmp_path / "run" / "test" / "confusion.png").is_file()
