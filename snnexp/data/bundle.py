"""The data of a run: prepared recordings in their roles, cut into sequences, served as batches.

Roles (``data.split_by``):

- ``time`` (default): every recording of ``data.paths`` is split in time by ``data.split``
  (train, validation, test part); ``data.val_paths`` / ``data.test_paths`` add whole held-out
  recordings to validation / test.
- ``recording``: whole recordings take one role. With ``val_paths`` / ``test_paths`` given, all
  of ``paths`` train; else the last recordings of ``paths`` are held out for test and the ones
  before them for validation, in the proportions of ``data.split`` (at least one each).

Test parts are evaluated one by one as continuous sequences; each is named after its recording
and grouped as ``held_out`` (a recording never trained on, evaluated whole) or ``within`` (the
test part of a training recording). Training batches are built in ``data.num_workers``
DataLoader worker processes (0: in the training process) while the network trains, into pinned
memory when the model is on CUDA (``pin_memory``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from snnexp.config.schema import DataConfig
from snnexp.data.datasets import (
    SequenceRef,
    batched,
    epoch_order,
    make_batch,
    sequence_refs,
    shard,
    split_bounds,
)
from snnexp.data.framing import Augment
from snnexp.data.pipeline import Prepared, make_target_map, prepare_recording
from snnexp.data.sources import ensure_builtin, resolve
from snnexp.data.targets import TargetMap
from snnexp.errors import DataError

log = logging.getLogger(__name__)

HELD_OUT, WITHIN = "held_out", "within"


@dataclass(frozen=True)
class TestPart:
    """A continuous test sequence: windows ``lo .. hi - 1`` of recording ``recording``."""

    recording: int
    lo: int
    hi: int
    group: str  # held_out | within
    name: str

    @property
    def ref(self) -> SequenceRef:
        return SequenceRef(self.recording, self.lo, self.hi - self.lo)

    @property
    def windows(self) -> str:
        return "all" if self.group == HELD_OUT else "test split"


class _Batches:
    """A map-style dataset whose items are whole batches: ``(refs, seed)`` -> (frames, labels)."""

    def __init__(self, bundle: DataBundle) -> None:
        self.bundle = bundle

    def __getitem__(self, item: tuple[tuple[SequenceRef, ...], int]) -> tuple[Any, Any]:
        refs, seed = item
        b = self.bundle
        return make_batch(b.prepared, list(refs), b.augment, seed, b.window_us)



class DataBundle:
    """All recordings of a run in their roles, cut into sequences; iterated by the trainer.

    Training sequences are shuffled per epoch as a function of (seed, epoch) only (augmentation
    too); validation keeps time order; each test part is one continuous sequence (batch 1).
    Batches are (frames uint16 [T, B, 2, H, W], labels float32 [T, B]) torch tensors.
    """

    def __init__(self, prepared: list[Prepared], target_map: TargetMap, window_us: int,
                 seq_length: int, batch_size: int, seed: int,
                 train: list[tuple[int, int, int]], val: list[tuple[int, int, int]],
                 test: list[TestPart], augment: Augment | None = None,
                 num_workers: int = 0) -> None:
        self.prepared = prepared
        self.target_map = target_map
        self.window_us = int(window_us)
        self.seq_length = int(seq_length)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.train_refs = sequence_refs(train, self.seq_length)
        self.val_refs = sequence_refs(val, self.seq_length)
        self.test_parts = [p for p in test if p.hi - p.lo >= 2]  # an initial label and a step
        self.test_refs = [p.ref for p in self.test_parts]
        self.augment = augment or Augment()
        self.num_workers = int(num_workers)
        self.pin_memory = False  # set by the trainer when the model is on CUDA

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.prepared[0].input_shape

    @property
    def recordings(self) -> list[dict[str, Any]]:
        """The meta data of every recording (JSON-serialisable, stored in checkpoints)."""
        return [dict(p.meta) for p in self.prepared]

    @property
    def num_train_sequences(self) -> int:
        return len(self.train_refs)

    @property
    def num_val_sequences(self) -> int:
        return len(self.val_refs)

    @property
    def num_test_sequences(self) -> int:
        return len(self.test_refs)

    def train_order(self, epoch: int) -> np.ndarray:
        """Indices into ``train_refs`` in the order of ``epoch``."""
        return epoch_order(len(self.train_refs), self.seed, epoch)

    def train_batches(self, epoch: int, rank: int = 0,
                      world_size: int = 1) -> Iterator[tuple[Any, Any]]:
        """The shuffled training batches of ``epoch`` (this rank's shard under DDP)."""
        order = shard(self.train_order(epoch), rank, world_size)
        items = []
        for n, idx in enumerate(batched([int(i) for i in order], self.batch_size)):
            seed = (self.seed * 1_000_003 + epoch * 10_007 + rank * 101 + n) & 0x7FFFFFFF
            items.append((tuple(self.train_refs[i] for i in idx), seed))
        return self._serve(items, self.num_workers)

    def val_batches(self) -> Iterator[tuple[Any, Any]]:
        """The validation batches, in time order."""
        for refs in batched(self.val_refs, self.batch_size):
            yield make_batch(self.prepared, refs, window_us=self.window_us)

    def test_batches(self) -> Iterator[tuple[Any, Any]]:
        """One continuous sequence per test part (``test_parts``), batch size 1."""
        for ref in self.test_refs:
            yield make_batch(self.prepared, [ref], window_us=self.window_us)

    def _serve(self, items: list[tuple[tuple[SequenceRef, ...], int]],
               workers: int) -> Iterator[tuple[Any, Any]]:
        dataset = _Batches(self)
        if workers <= 0 or len(items) <= 1:
            return (dataset[it] for it in items)
        import torch

        return iter(torch.utils.data.DataLoader(
            dataset, batch_size=None, sampler=items, num_workers=min(workers, len(items)),
            pin_memory=self.pin_memory, prefetch_factor=2))


# ----------------------------------------------------------------------------- building
def _prepare_all(cfg: DataConfig, lists: dict[str, list[Any]], tmap: TargetMap
                 ) -> dict[str, list[Prepared]]:
    out: dict[str, list[Prepared]] = {}
    for role, items in lists.items():
        out[role] = []
        for path, sim in items:
            ensure_builtin(path, sim)
            prep = prepare_recording(path, cfg, target_map=tmap)
            prep.meta["role"] = role
            out[role].append(prep)
    everything = [p for ps in out.values() for p in ps]
    if len({p.input_shape for p in everything}) > 1:
        sizes = ", ".join(f"{p.path} {p.meta['width']}x{p.meta['height']}" for p in everything)
        raise DataError(f"the recordings have different input sizes ({sizes}): one run needs "
                        "one input size; use recordings of one camera model")
    return out


def _by_recording(cfg: DataConfig, train: list[Prepared]) -> dict[str, list[Prepared]]:
    """split_by=recording without explicit held-out lists: the last recordings held out."""
    _, s_val, s_test = (float(s) for s in cfg.split)
    n = len(train)
    n_test = max(1, round(n * s_test)) if s_test > 0 else 0
    n_val = max(1, round(n * s_val)) if s_val > 0 else 0
    if n - n_test - n_val < 1:
        raise DataError(f"data.split_by=recording needs at least {n_test + n_val + 1} recordings "
                        f"in data.paths for data.split={list(cfg.split)}, got {n}: add "
                        "recordings, name held-out ones in data.val_paths / data.test_paths or "
                        "use data.split_by=time")
    cut_val, cut_test = n - n_test - n_val, n - n_test
    for p in train[cut_val:cut_test]:
        p.meta["role"] = "val"
    for p in train[cut_test:]:
        p.meta["role"] = "test"
    return {"train": train[:cut_val], "val": train[cut_val:cut_test], "test": train[cut_test:]}


def build_bundle(cfg: DataConfig, seed: int = 0, *, require_sequences: bool = True,
                 trained: set[str] | None = None) -> DataBundle:
    """Prepare every recording of ``cfg`` and assign the roles (module docstring).

    With ``require_sequences`` (training) a DataError says how to fix a setting that leaves no
    training or validation sequence. ``trained`` (evaluation of a checkpoint): the sha256 of
    the recordings it was trained on; those are tested on their test split, all others whole.
    """
    split_by = str(getattr(cfg, "split_by", "time"))
    if split_by not in ("time", "recording"):
        raise DataError(f"data.split_by={split_by} is not allowed; use time or recording")
    tmap = make_target_map(cfg)
    roles = _prepare_all(cfg, resolve(cfg), tmap)
    if split_by == "recording" and not roles["val"] and not roles["test"] and trained is None:
        roles = _by_recording(cfg, roles["train"])
    prepared = roles["train"] + roles["val"] + roles["test"]
    index = {id(p): i for i, p in enumerate(prepared)}
    train_seg, val_seg, test = [], [], []
    for p in roles["train"]:
        i, n = index[id(p)], p.n_windows
        if trained is not None and p.meta["sha256"] not in trained:
            test.append(TestPart(i, 0, n, HELD_OUT, p.path.name))
            continue
        if split_by == "recording":
            train_seg.append((i, 0, n))
            continue
        (a, b), (c, d), (e, g) = split_bounds(n, cfg.split)
        train_seg.append((i, a, b))
        val_seg.append((i, c, d))
        test.append(TestPart(i, e, g, WITHIN, p.path.name))
    for p in roles["val"]:
        if trained is not None and p.meta["sha256"] not in trained:
            test.append(TestPart(index[id(p)], 0, p.n_windows, HELD_OUT, p.path.name))
        else:
            val_seg.append((index[id(p)], 0, p.n_windows))
    for p in roles["test"]:
        test.append(TestPart(index[id(p)], 0, p.n_windows, HELD_OUT, p.path.name))
    aug = Augment.from_config(getattr(cfg, "augment", None))
    data = DataBundle(prepared, tmap, int(cfg.window_us), int(cfg.seq_length),
                      int(cfg.batch_size), seed, train_seg, val_seg, test, augment=aug,
                      num_workers=int(getattr(cfg, "num_workers", 0) or 0))
    if require_sequences and (data.num_train_sequences == 0 or data.num_val_sequences == 0):
        raise _too_short(data, train_seg, val_seg, cfg)
    _warm_up(data)
    return data


def _warm_up(data: DataBundle) -> None:
    """Compile the framing kernel here, before any DataLoader worker is forked."""
    p = data.prepared[0]
    if p.n_windows:
        p.frames(0, 1)


def _too_short(data: DataBundle, train: list[tuple[int, int, int]],
               val: list[tuple[int, int, int]], cfg: DataConfig) -> DataError:
    part = "training" if data.num_train_sequences == 0 else "validation"
    segments = train if part == "training" else val
    most = max((hi - lo for _, lo, hi in segments), default=0)
    if most == 0:
        what = "data.paths" if part == "training" else "data.val_paths"
        return DataError(f"no {part} windows at data.split={list(cfg.split)} and "
                         f"data.split_by={getattr(cfg, 'split_by', 'time')}: give {part} "
                         f"recordings ({what}) or a non-zero {part} fraction in data.split")
    fix = (f"lower data.seq_length to at most {most} or use longer recordings" if most >= 2
           else "use longer recordings, a shorter data.window_us or smaller trims")
    longest = max(data.prepared, key=lambda p: p.n_windows)
    return DataError(f"no {part} sequence: the longest {part} part holds {most} windows (the "
                     f"longest recording, {longest.path}, has {longest.n_windows}) at "
                     f"data.split={list(cfg.split)}, fewer than one sequence of "
                     f"data.seq_length={cfg.seq_length}; {fix}")
