"""Time-ordered split, fixed-length sequences, seeded shuffling, DDP shards and time-first batches.

A recording's windows are split in time order (train, validation, test), or a whole recording
takes one role; train and validation are cut into consecutive sequences of ``seq_length`` windows
(the remainder is dropped); a test part is one continuous sequence. A batch stacks B sequences
along dimension 1: frames [T, B, 2, H, W] (uint16, built on the fly from the sparse events) and
labels [T, B] (float32).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np


class SequenceRef(NamedTuple):
    """Windows ``start .. start + length - 1`` of recording number ``recording``."""

    recording: int
    start: int
    length: int


def split_bounds(n: int, split: Sequence[float]) -> tuple[tuple[int, int], tuple[int, int],
                                                           tuple[int, int]]:
    """``(train, val, test)`` half-open window ranges of ``n`` windows, in time order.

    The boundaries are ``int(n * s0)`` and ``int(n * (s0 + s1))``; test takes the rest.
    """
    if len(split) != 3:
        raise ValueError(f"split must have three fractions [train, val, test], got {split}")
    c1 = round(float(split[0]), 12)
    c2 = round(float(split[0]) + float(split[1]), 12)  # 0.88 + 0.07 -> exactly 0.95
    b = min(n, max(0, int(n * c1)))
    d = min(n, max(b, int(n * c2)))
    return (0, b), (b, d), (d, n)


def sequence_starts(lo: int, hi: int, length: int) -> list[int]:
    """Starts of the complete, consecutive sequences of ``length`` windows in ``[lo, hi)``."""
    if length <= 0:
        raise ValueError(f"sequence length must be positive, got {length}")
    return list(range(lo, hi - length + 1, length))


def sequence_refs(segments: Sequence[tuple[int, int, int]], seq_length: int
                  ) -> list[SequenceRef]:
    """The sequences of ``seq_length`` windows of every (recording, lo, hi) segment, in order."""
    return [SequenceRef(rec, s, seq_length) for rec, lo, hi in segments
            for s in sequence_starts(lo, hi, seq_length)]


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of ``n`` training sequences in ``epoch``: a function of (seed, epoch)
    only, independent of any global random state (a resumed run sees the same batches)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) & 0xFFFFFFFF,
                                                                      int(epoch), 0x5EED])))
    return rng.permutation(n)


def shard(indices: Sequence[int] | np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s share of ``indices`` for ``world_size`` processes.

    Like ``torch.utils.data.DistributedSampler``: the list is padded by wrapping around to a
    multiple of ``world_size``, then rank r takes every world_size-th item from r, so all ranks
    get the same number of items (and the same number of batches) and together cover all.
    """
    indices = np.asarray(indices)
    if world_size <= 1:
        return indices
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0 .. {world_size - 1}")
    n = len(indices)
    if n == 0:
        return indices
    total = math.ceil(n / world_size) * world_size
    padded = np.resize(indices, total)  # repeats from the start (wrap-around)
    return padded[rank:total:world_size]


def batched(items: Sequence[Any], batch_size: int) -> Iterator[list[Any]]:
    """Consecutive groups of ``batch_size`` (the last one may be smaller)."""
    items = list(items)
    for lo in range(0, len(items), batch_size):
        yield items[lo:lo + batch_size]


def make_batch(sources: Sequence[Any], refs: Sequence[SequenceRef], augment: Any = None,
               seed: int = 0, window_us: int = 10_000) -> tuple[Any, Any]:
    """Stack the sequences ``refs`` time-first: (frames uint16 [T, B, 2, H, W],
    labels float32 [T, B]) as torch tensors, the frames built from each source's ``events``
    (:func:`snnexp.data.framing.frame_batch`). All refs must have the same length."""
    import torch

    from snnexp.data.framing import frame_batch

    if not refs:
        raise ValueError("a batch needs at least one sequence")
    length = refs[0].length
    if any(r.length != length for r in refs):
        raise ValueError("the sequences of a batch must have the same length")
    frames = frame_batch([s.events for s in sources], [tuple(r) for r in refs], augment, seed,
                         window_us)
    labels = np.empty((length, len(refs)), dtype=np.float32)
    for b, r in enumerate(refs):
        labels[:, b] = sources[r.recording].labels[r.start:r.start + length]
    return torch.from_numpy(frames), torch.from_numpy(labels)
