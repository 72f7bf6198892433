"""Static-image classification data (``data=mnist``): images encoded as spike trains per batch.

The official training set is split (seeded, stratified) into train / val by ``data.split``
(its test fraction is ignored: the official test set is the test); every batch is encoded with
``data.encoder`` over ``data.num_steps`` steps (:mod:`snnexp.data.encoders`), training batches
from a generator seeded by (seed, epoch, batch), validation and test ones from fixed seeds, so
runs repeat exactly. Batches have the class data's form: (frames [T, B, 1, H, W], lengths [B]
(all ``num_steps``), labels [B]).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from snnexp.data.classification import _split
from snnexp.data.datasets import epoch_order
from snnexp.data.encoders import encode, load_mnist


class ImageBundle:
    """Images in their roles, encoded batch by batch (module docstring)."""

    def __init__(self, images: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                 classes: list[str], encoder: str, num_steps: int, gain: float,
                 batch_size: int, seed: int, root: str) -> None:
        self.images, self.labels = images, labels
        self.classes = classes
        self.encoder, self.num_steps, self.gain = encoder, int(num_steps), float(gain)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.root = root
        self.window_us = 0
        self.pin_memory = False
        self.roles = {r: list(range(len(v))) for r, v in labels.items()}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        h, w = self.images["train"].shape[1:]
        return 1, int(h), int(w)

    @property
    def num_train_sequences(self) -> int:
        return len(self.labels["train"])

    def _batches(self, role: str, order: np.ndarray, seed: int) -> Iterator[tuple[Any, ...]]:
        for n, lo in enumerate(range(0, len(order), self.batch_size)):
            idx = order[lo:lo + self.batch_size]
            x = torch.from_numpy(self.images[role][idx].astype(np.float32) / 255.0)
            g = torch.Generator().manual_seed((seed * 1_000_003 + n) & 0x7FFFFFFF)
            frames = encode(x, self.encoder, self.num_steps, gain=self.gain, generator=g)
            yield (frames, torch.full((len(idx),), self.num_steps, dtype=torch.int64),
                   torch.from_numpy(self.labels[role][idx]))

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1
                      ) -> Iterator[tuple[Any, ...]]:
        from snnexp.data.datasets import shard

        order = shard(epoch_order(len(self.labels["train"]), self.seed, epoch), rank, world_size)
        return self._batches("train", np.asarray(order), self.seed * 7919 + epoch)

    def val_batches(self) -> Iterator[tuple[Any, ...]]:
        return self._batches("val", np.arange(len(self.labels["val"])), 0x7A1)

    def test_batches(self) -> Iterator[tuple[Any, ...]]:
        return self._batches("test", np.arange(len(self.labels["test"])), 0x7E57)

    def test_names(self) -> list[str]:
        """``test[i]``: the i-th image of the official test set."""
        return [f"test[{i}]" for i in range(len(self.labels["test"]))]

    def meta(self) -> dict[str, Any]:
        return {"task": "classification", "input_shape": list(self.input_shape),
                "classes": list(self.classes), "dataset": "mnist", "root": self.root,
                "encoder": self.encoder, "num_steps": self.num_steps,
                "samples": {r: len(v) for r, v in self.labels.items()}}


def build_mnist(cfg: Any, seed: int = 0, num_classes: int | None = None) -> ImageBundle:
    """MNIST from ``data.root`` (IDX files), split and encoded as configured."""
    from snnexp.errors import DataError

    x, y = load_mnist(cfg.root, train=True)
    xt, yt = load_mnist(cfg.root, train=False)
    limit = getattr(cfg, "limit_samples", None)
    if limit:
        x, y, xt, yt = x[:limit], y[:limit], xt[:limit], yt[:limit]
    classes = [str(c) for c in range(10)]
    if num_classes is not None and int(num_classes) != len(classes):
        raise DataError(f"task.num_classes={num_classes} but MNIST has 10 classes: set "
                        "task.num_classes=10 (or null)")
    roles = _split(y, list(cfg.split), seed, (True, False))
    images = {"train": x[roles["train"]], "val": x[roles["val"]], "test": xt}
    labels = {"train": y[roles["train"]], "val": y[roles["val"]], "test": yt}
    return ImageBundle(images, labels, classes, cfg.encoder, cfg.num_steps, cfg.encoder_gain,
                       cfg.batch_size, seed, str(cfg.root))
