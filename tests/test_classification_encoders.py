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
