"""Classification data: a folder per class of AEDAT4 recordings, one recording per sample.

``data.paths`` lists root folders (or ``builtin:classes``, the simulated motion clips of
:mod:`snnexp.data.class_sim`); each sub-folder of a root is a class (its name), each AEDAT4 file
in it one sample. Classes are the sorted union of the sub-folder names. Every file is read
through the camera path (dv-processing) and its events binned into windows of
``data.window_us`` from its first event, as frame cells (``(polarity * H + y) * W + x`` of the
``data.downsample``-d frame). The binned samples of a dataset are cached on disk as one entry
(``data.cache_dir``, keyed by every file's content hash, its class and the settings).

Splits: the samples of ``data.paths`` are split per class (stratified, seeded by ``seed``) by
``data.split``; roots in ``data.val_paths`` / ``data.test_paths`` are used whole instead.

Batches are ``(frames uint16 [T, B, 2, H, W], lengths int64 [B], labels int64 [B])``: ``T`` is
the longest sample of the batch; shorter samples are padded with empty frames at the end, and
``lengths`` tells the trainer which steps are real (the mask:
:func:`snnexp.training.classification.valid_mask`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snnexp.config.schema import DataConfig
from snnexp.data import cache as C
from snnexp.data.class_sim import BUILTIN_CLASSES, builtin_root, write_builtin
from snnexp.data.datasets import epoch_order, shard
from snnexp.data.recording import check_path, open_recording
from snnexp.data.sources import absolute, is_aedat4
from snnexp.errors import DataError

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


@dataclass
class ClassSamples:
    """Binned samples: ``cells`` of every event, ``offsets`` per window (into ``cells``),
    ``starts`` the first window of each sample (``starts[-1]``: one past the last)."""

    cells: np.ndarray  # int32 [events]
    offsets: np.ndarray  # int64 [windows + 1]
    starts: np.ndarray  # int64 [samples + 1]
    labels: np.ndarray  # int64 [samples]
    shape: tuple[int, int, int]  # (2, H, W)
    names: list[str]  # file name of each sample

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)

    def __len__(self) -> int:
        return len(self.labels)


# ----------------------------------------------------------------------------- files
def _roots(entries: list[str], cfg: DataConfig, key: str) -> list[Path]:
    roots = []
    for entry in entries or []:
        if str(entry) == BUILTIN_CLASSES:
            root = builtin_root(cfg.classes, absolute(cfg.builtin_dir))
            write_builtin(cfg.classes, root)
            roots.append(root)
            continue
        if str(entry).startswith("builtin:"):
            raise DataError(f"{key} entry '{entry}' is a regression recording; classification "
                            f"reads class folders: use {BUILTIN_CLASSES} or a root folder with "
                            "a sub-folder per class")
        root = absolute(entry)
        if not root.is_dir():
            raise DataError(f"{key} entry {root} is not a folder: classification reads a root "
                            "folder with one sub-folder per class (<root>/<class>/*.aedat4)")
        roots.append(root)
    return roots


def class_files(root: Path) -> dict[str, list[Path]]:
    """``{class name: its AEDAT4 files}`` of one root folder (sorted)."""
    out = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in sub.iterdir() if f.is_file() and is_aedat4(f))
        if files:
            out[sub.name] = files
    if not out:
        raise DataError(f"{root} holds no class folder with AEDAT4 files: put each class's "
                        "recordings in a sub-folder named after the class (<root>/<class>/)")
    return out


def _bin(path: Path, window_us: int, downsample: int) -> tuple[np.ndarray, np.ndarray,
                                                                tuple[int, int, int]]:
    """(cells int32, offsets int64 [n + 1], frame shape) of one sample file."""
    check_path(path)
    with open_recording(path) as rd:
        if not rd.has_events:
            raise DataError(f"recording {path} has no event stream: record with the event "
                            "camera enabled or remove the file")
        width, height = int(rd.width), int(rd.height)
        packets = [p for p in rd.iter_events() if len(p)]
    f = int(downsample)
    h, w = -(-height // f), -(-width // f)
    if not packets:
        raise DataError(f"recording {path} holds no events: remove it or record a moving scene")
    t = np.concatenate([p.t for p in packets]).astype(np.int64)
    x = np.concatenate([p.x for p in packets]).astype(np.int64) // f
    y = np.concatenate([p.y for p in packets]).astype(np.int64) // f
    pol = np.concatenate([p.p for p in packets]).astype(np.int64)
    order = np.argsort(t, kind="stable")
    k = (t[order] - t[order][0]) // int(window_us)
    cells = ((pol[order] * h + y[order]) * w + x[order]).astype(np.int32)
    n = int(k[-1]) + 1
    offsets = np.concatenate([[0], np.cumsum(np.bincount(k, minlength=n))]).astype(np.int64)
    return cells, offsets, (2, h, w)


def _key(files: list[tuple[Path, int]], cfg: DataConfig) -> str:
    root = absolute(cfg.cache_dir)
    h = hashlib.sha256()
    for path, label in files:
        h.update(f"{C.file_sha256(path, root)}:{label};".encode())
    h.update(f"w{int(cfg.window_us)}d{int(cfg.downsample)}f{CACHE_FORMAT}".encode())
    return h.hexdigest()[:16]


def load_samples(files: list[tuple[Path, int]], cfg: DataConfig) -> ClassSamples:
    """Bin ``(file, label)`` pairs (from the cache when their content and settings match)."""
    entry = absolute(cfg.cache_dir) / f"classes-{_key(files, cfg)}.npz" if cfg.cache else None
    cached = read_entry(entry, [p.name for p, _ in files]) if entry is not None else None
    if cached is not None:
        return cached
    cells, offsets, starts, shapes = [], [np.zeros(1, np.int64)], [0], set()
    events = 0
    for path, _ in files:
        c, o, shape = _bin(path, cfg.window_us, cfg.downsample)
        shapes.add(shape)
        cells.append(c)
        offsets.append(o[1:] + events)
        events += len(c)
        starts.append(starts[-1] + len(o) - 1)
    if len(shapes) > 1:
        raise DataError(f"the class recordings have different sizes ({sorted(shapes)}): one "
                        "run needs one input size; use recordings of one camera model")
    out = ClassSamples(np.concatenate(cells), np.concatenate(offsets),
                       np.asarray(starts, np.int64), np.asarray([lb for _, lb in files], np.int64),
                       shapes.pop(), [p.name for p, _ in files])
    if entry is not None:
        write_entry(entry, out)
    return out


def read_entry(entry: Path, names: list[str]) -> ClassSamples | None:
    """The samples cached in ``entry`` (an .npz), or None when it is absent or unusable."""
    if not entry.is_file():
        return None
    try:
        with np.load(entry) as z:
            return ClassSamples(z["cells"], z["offsets"], z["starts"], z["labels"],
                                tuple(int(s) for s in z["shape"]), names)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("cache entry %s is not usable (%s); building it again", entry, exc)
        return None


def write_entry(entry: Path, samples: ClassSamples) -> None:
    """Cache ``samples`` in ``entry`` atomically (temporary file renamed); a failure warns."""
    tmp = entry.with_name(f".{entry.stem}.{os.getpid()}.tmp.npz")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, cells=samples.cells, offsets=samples.offsets, starts=samples.starts,
                 labels=samples.labels, shape=np.asarray(samples.shape))
        os.replace(tmp, entry)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        log.warning("cannot cache the class samples in %s (%s)", entry, exc)


# ----------------------------------------------------------------------------- bundle
def frame_samples(s: ClassSamples, index: list[int]) -> tuple[Any, Any, Any]:
    """(frames uint16 [T, B, 2, H, W], lengths int64 [B], labels int64 [B]) of samples
    ``index``, padded with empty frames to the longest (module docstring)."""
    import torch

    lengths = s.lengths[index]
    steps = int(lengths.max())
    size = int(np.prod(s.shape))
    counts = np.zeros((steps, len(index), size), np.int64)
    for b, i in enumerate(index):
        w0, w1 = int(s.starts[i]), int(s.starts[i + 1])
        lo, hi = int(s.offsets[w0]), int(s.offsets[w1])
        k = np.repeat(np.arange(w1 - w0), np.diff(s.offsets[w0:w1 + 1]))
        counts[:w1 - w0, b] = np.bincount(k * size + s.cells[lo:hi],
                                          minlength=(w1 - w0) * size).reshape(w1 - w0, size)
    frames = np.minimum(counts, 65535).astype(np.uint16).reshape(steps, len(index), *s.shape)
    return (torch.from_numpy(frames), torch.from_numpy(lengths.astype(np.int64)),
            torch.from_numpy(s.labels[index].astype(np.int64)))


class ClassBundle:
    """The samples of a classification run in their roles, served as padded batches."""

    def __init__(self, samples: ClassSamples, classes: list[str], roles: dict[str, list[int]],
                 window_us: int, batch_size: int, seed: int, sources: list[str]) -> None:
        self.samples = samples
        self.classes = classes
        self.roles = roles
        self.window_us = int(window_us)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.sources = sources
        self.pin_memory = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.samples.shape

    @property
    def num_train_sequences(self) -> int:
        return len(self.roles["train"])

    @property
    def num_val_sequences(self) -> int:
        return len(self.roles["val"])

    @property
    def num_test_sequences(self) -> int:
        return len(self.roles["test"])

    def _batches(self, index: list[int]) -> Iterator[tuple[Any, Any, Any]]:
        for lo in range(0, len(index), self.batch_size):
            yield frame_samples(self.samples, index[lo:lo + self.batch_size])

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1
                      ) -> Iterator[tuple[Any, Any, Any]]:
        """The training samples of ``epoch``, shuffled as a function of (seed, epoch)."""
        train = self.roles["train"]
        order = shard(epoch_order(len(train), self.seed, epoch), rank, world_size)
        return self._batches([train[int(i)] for i in order])

    def val_batches(self) -> Iterator[tuple[Any, Any, Any]]:
        return self._batches(self.roles["val"])

    def test_batches(self) -> Iterator[tuple[Any, Any, Any]]:
        return self._batches(self.roles["test"])

    def test_names(self) -> list[str]:
        """The file name of every test sample, in test order."""
        return [self.samples.names[i] for i in self.roles["test"]]

    def meta(self) -> dict[str, Any]:
        """What a checkpoint stores about its data (JSON-serialisable)."""
        return {"task": "classification", "input_shape": list(self.input_shape),
                "classes": list(self.classes), "window_us": self.window_us,
                "sources": list(self.sources),
                "samples": {r: len(v) for r, v in self.roles.items()}}


def _split(labels: np.ndarray, fractions: list[float], seed: int, need: tuple[bool, bool]
           ) -> dict[str, list[int]]:
    """Stratified seeded split of sample indices into train / val / test (``need``: whether
    val and test are drawn here, else they come from held-out roots)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5B17])
    f_train, f_val, f_test = (float(f) for f in fractions)
    f_val, f_test = (f_val if need[0] else 0.0), (f_test if need[1] else 0.0)
    total = f_train + f_val + f_test
    roles: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx)
        n_val = int(round(n * f_val / total)) if f_val > 0 else 0
        n_test = int(round(n * f_test / total)) if f_test > 0 else 0
        if f_val > 0 and n - n_test > 1:
            n_val = max(1, n_val)
        if f_test > 0 and n - n_val > 1:
            n_test = max(1, n_test)
        roles["test"] += idx[:n_test].tolist()
        roles["val"] += idx[n_test:n_test + n_val].tolist()
        roles["train"] += idx[n_test + n_val:].tolist()
    return {k: sorted(v) for k, v in roles.items()}


def build_class_data(cfg: DataConfig, seed: int = 0, num_classes: int | None = None,
                     classes: list[str] | None = None) -> ClassBundle:
    """Read the class folders of ``cfg`` and assign roles (module docstring).

    ``num_classes`` (task.num_classes) must match the data's classes; ``classes`` (evaluation
    of a checkpoint) fixes the class order to the one the network was trained with.
    """
    groups = {"train": _roots(list(cfg.paths), cfg, "data.paths"),
              "val": _roots(list(cfg.val_paths or []), cfg, "data.val_paths"),
              "test": _roots(list(cfg.test_paths or []), cfg, "data.test_paths")}
    if not groups["train"]:
        raise DataError("data.paths is empty: list a root folder with a sub-folder per class, "
                        "e.g. data.paths=[/data/gestures/] (or builtin:classes)")
    found = {role: [class_files(r) for r in roots] for role, roots in groups.items()}
    names = sorted({c for fs in found.values() for f in fs for c in f})
    if classes is not None:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise DataError(f"class folder(s) {', '.join(unknown)} are not among the classes "
                            f"the network was trained with ({', '.join(classes)})")
        names = list(classes)
    if num_classes is not None and int(num_classes) != len(names):
        raise DataError(f"task.num_classes={num_classes} but the data has {len(names)} classes "
                        f"({', '.join(names)}): set task.num_classes={len(names)} (or null) or "
                        "point data.paths at the intended class folders")
    if len(names) < 2:
        raise DataError(f"the data has {len(names)} class ({', '.join(names)}): classification "
                        "needs at least two class folders under each root")
    label = {c: i for i, c in enumerate(names)}
    files: list[tuple[Path, int]] = []
    role_of: list[str] = []
    for role, fs in found.items():
        for f in fs:
            for c, paths in f.items():
                files += [(p, label[c]) for p in paths]
                role_of += [role] * len(paths)
    samples = load_samples(files, cfg)
    own = np.flatnonzero(np.asarray(role_of) == "train")
    split = _split(samples.labels[own], list(cfg.split),
                   seed, (not groups["val"], not groups["test"]))
    roles = {r: [int(own[i]) for i in split[r]] for r in split}
    for r in ("val", "test"):
        roles[r] += [i for i, x in enumerate(role_of) if x == r]
    sources = [str(r) for rs in groups.values() for r in rs]
    data = ClassBundle(samples, names, roles, cfg.window_us, cfg.batch_size, seed, sources)
    log.info("classification data: %d classes, %d / %d / %d samples (train / val / test), "
             "%d-%d windows", len(names), *(len(roles[r]) for r in ("train", "val", "test")),
             int(samples.lengths.min()), int(samples.lengths.max()))
    return data
