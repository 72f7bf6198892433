"""Tiny tonic datasets written in each dataset's own on-disk layout (as tonic 1.7 reads it).

Class ``c`` of ``n`` fires its events in the ``c``-th vertical band of the sensor, so a tiny
network can tell the classes apart. Layouts (from tonic/datasets/*.py):

- NMNIST: ``NMNIST/{Train,Test}/<digit>/<n>.bin``, 5 bytes per event (x, y, p << 7 | t[22:16],
  t[15:8], t[7:0]; tonic.io.read_mnist_file), label = the folder's last character;
- POKERDVS: ``POKERDVS/{pips_train,pips_test}/<card>/<n>.npy``, int arrays [N, 4] (t, x, y, p),
  label = the folder's last two characters;
- DVSGesture: ``DVSGesture/{ibmGestureTrain,ibmGestureTest}/userNN_<lighting>/<label>.npy``,
  arrays [N, 4] (x, y, p, t in ms);
- CIFAR10DVS: ``CIFAR10DVS/<class>/<n>.aedat4`` (an AEDAT4 event stream).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DURATION_US = 100_000  # each sample: 100 ms of events


def _events(rng: np.random.Generator, c: int, n_classes: int, width: int, height: int,
            count: int = 300, duration_us: int = DURATION_US) -> tuple[np.ndarray, ...]:
    """(t us sorted, x, y, p) of ``count`` events in class ``c``'s vertical band."""
    band = width / n_classes
    x = np.clip((c + rng.uniform(0, 1, count)) * band, 0, width - 1).astype(np.int64)
    y = rng.integers(0, height, count)
    t = np.sort(rng.integers(0, duration_us, count))
    p = rng.integers(0, 2, count)
    return t, x, y, p


def write_nmnist(root: Path, per_class: tuple[int, int] = (3, 2), seed: int = 0,
                 count: int = 300, duration_us: int = DURATION_US) -> Path:
    rng = np.random.default_rng(seed)
    for folder, n in zip(("Train", "Test"), per_class):
        for c in range(10):
            d = root / "NMNIST" / folder / str(c)
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                t, x, y, p = _events(rng, c, 10, 34, 34, count, duration_us)
                raw = np.zeros((len(t), 5), np.uint8)
                raw[:, 0], raw[:, 1] = x, y
                raw[:, 2] = (p << 7) | ((t >> 16) & 0x7F)
                raw[:, 3], raw[:, 4] = (t >> 8) & 0xFF, t & 0xFF
                (d / f"{i:05d}.bin").write_bytes(raw.tobytes())
    return root


def write_pokerdvs(root: Path, per_class: tuple[int, int] = (6, 2), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for folder, n in zip(("pips_train", "pips_test"), per_class):
        for c, card in enumerate(("cl", "he", "di", "sp")):
            d = root / "POKERDVS" / folder / card
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                np.save(d / f"{card}{i:03d}.npy", np.stack(_events(rng, c, 4, 35, 35), 1))
    return root


def write_dvsgesture(root: Path, users: tuple[int, int] = (2, 1), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    user = 0
    for folder, n in zip(("ibmGestureTrain", "ibmGestureTest"), users):
        for _ in range(n):
            user += 1
            d = root / "DVSGesture" / folder / f"user{user:02d}_fluorescent"
            d.mkdir(parents=True, exist_ok=True)
            for c in range(11):
                t, x, y, p = _events(rng, c, 11, 128, 128)
                np.save(d / f"{c}.npy", np.stack([x, y, p, t // 1000], 1))
    return root


def write_cifar10dvs(root: Path, per_class: int = 3, seed: int = 0) -> Path:
    from snnexp.data.recording import Events, write_recording

    rng = np.random.default_rng(seed)
    names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck")
    for c, name in enumerate(names):
        for i in range(per_class):
            t, x, y, p = _events(rng, c, 10, 128, 128)
            write_recording(root / "CIFAR10DVS" / name / f"cifar10_{name}_{i}.aedat4",
                            events=Events(t + 1_000_000, x.astype(np.uint16),
                                          y.astype(np.uint16), p.astype(np.uint8)),
                            width=128, height=128)
    return root


WRITERS = {"NMNIST": write_nmnist, "POKERDVS": write_pokerdvs, "DVSGesture": write_dvsgesture,
           "CIFAR10DVS": write_cifar10dvs}
