"""Static images as spike trains (the field's MNIST tutorials), and MNIST from its IDX files.

Encoders turn images ``[N, H, W]`` with values in [0, 1] into ``[num_steps, N, 1, H, W]``:

- ``poisson`` (rate): each pixel spikes at each step with probability ``gain * x`` (clipped to
  1), drawn from a seeded generator: the spike count over time estimates the intensity;
- ``latency``: one spike per pixel, earlier for brighter pixels, at step
  ``round((1 - x) * (num_steps - 1))``; pixels at or below ``threshold`` never spike;
- ``constant_current``: a LIF neuron per pixel driven by the constant current ``gain * x``
  (``v <- v + (I - v) / tau``, spike and subtract ``v_threshold`` when it is reached):
  deterministic, brighter pixels fire sooner and more often.

:func:`load_mnist` reads ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (or the
``t10k-`` test files), plain or ``.gz``, from a folder (LeCun's format: a big-endian magic with
the element type and rank, the sizes, then the bytes).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from snnexp.errors import ConfigError, DataError

ENCODERS = ("poisson", "latency", "constant_current")
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def encode(images: torch.Tensor, kind: str, num_steps: int, *, gain: float = 1.0,
           tau: float = 5.0, v_threshold: float = 1.0, threshold: float = 0.01,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Spike trains ``[num_steps, N, 1, H, W]`` (float 0 / 1) of ``images`` ``[N, H, W]`` in
    [0, 1] (module docstring)."""
    if kind not in ENCODERS:
        raise ConfigError(f"config key 'data.encoder' = {kind!r} is invalid: allowed values are "
                          f"{', '.join(ENCODERS)}")
    if num_steps < 1:
        raise ConfigError(f"config key 'data.num_steps' = {num_steps} is invalid: must be >= 1")
    x = images.float().clamp(0, 1).unsqueeze(1)  # [N, 1, H, W]
    if kind == "poisson":
        p = (gain * x).clamp(0, 1).expand(num_steps, *x.shape)
        return (torch.rand(p.shape, generator=generator) < p).float()
    if kind == "latency":
        t = torch.round((1 - x) * (num_steps - 1)).long()
        steps = torch.arange(num_steps).view(-1, 1, 1, 1, 1)
        return ((steps == t) & (x > threshold)).float()
    out = torch.empty(num_steps, *x.shape)
    v = torch.zeros_like(x)
    current = gain * x
    for i in range(num_steps):
        v = v + (current - v) / tau
        spike = (v >= v_threshold).float()
        v = v - spike * v_threshold
        out[i] = spike
    return out


# ----------------------------------------------------------------------------- MNIST
def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array of an IDX file (plain or gzip)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path} ({exc}): fetch the file again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number): use the MNIST files as "
                        "published (train-images-idx3-ubyte, ...)")
    dtype, rank = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(rank))
    start = 4 + 4 * rank
    need = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - start < need:
        raise DataError(f"{path} is truncated ({len(raw) - start} of {need} data bytes): "
                        "fetch the file again")
    return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=start
                         ).reshape(shape)


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz", root / "raw" / name,
                      root / "raw" / f"{name}.gz", root / "MNIST" / "raw" / name,
                      root / "MNIST" / "raw" / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"MNIST file {name}(.gz) not found in {root} (nor its raw/ or MNIST/raw/): "
                    "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                    "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz into data.root")


def load_mnist(root: str | os.PathLike[str], train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels int64 [N]) of the training or the test set."""
    root = Path(root).expanduser()
    prefix = "train" if train else "t10k"
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"MNIST files in {root} do not match: {images.shape} images, "
                        f"{labels.shape} labels; fetch them again")
    return images, labels.astype(np.int64)
