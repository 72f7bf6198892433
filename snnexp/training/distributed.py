"""Multi-process data-parallel training (torchrun + DistributedDataParallel).

    torchrun --nproc_per_node=2 -m snnexp train trainer.strategy=ddp

gloo on CPU, NCCL on GPU (one GPU per process, LOCAL_RANK). Every rank trains on its own shard
of each epoch's shuffled training sequences; gradients are averaged by DDP; only rank 0 logs,
shows progress bars and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from snnexp.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_distributed(strategy: str) -> DistContext:
    """Join the process group started by torchrun (strategy ``ddp``), else a single process."""
    if strategy != "ddp":
        return DistContext()
    if not launched_by_torchrun():
        raise ConfigError("trainer.strategy=ddp needs processes started by torchrun: "
                          "torchrun --nproc_per_node=2 -m snnexp train trainer.strategy=ddp")
    import torch.distributed as dist

    ctx = DistContext(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                      int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=backend)
    return ctx


def device_for(ctx: DistContext, device: torch.device) -> torch.device:
    """One GPU per process under DDP."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def wrap(net: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    if not ctx.enabled:
        return net
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    # channels_last activations give conv weight gradients another stride than DDP's buckets:
    # a copy per bucket, harmless (and small next to the convolutions themselves)
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids)



def same_path(ctx: DistContext, path: Path) -> Path:
    """Rank 0's ``path`` on every rank (each torchrun process composed its own run dir)."""
    if not ctx.enabled:
        return path
    import torch.distributed as dist

    box = [str(path)]
    dist.broadcast_object_list(box, src=0)
    return Path(box[0])


def sync_buffers(ctx: DistContext, net: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward; after the last one of an epoch the
    ranks' running statistics differ, and validation must see the same model everywhere.
    """
    if not ctx.enabled:
        return
    import torch.distributed as dist

    for buf in net.buffers():
        dist.broadcast(buf, src=0)


def mean_over_ranks(ctx: DistContext, value: float) -> float:
    if not ctx.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def reduce_int(ctx: DistContext, value: int, op: str = "sum") -> int:
    """``value`` summed (``op="sum"``) or maximised (``"max"``) over the ranks."""
    if not ctx.enabled:
        return int(value)
    import torch.distributed as dist

    t = torch.tensor([int(value)], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return int(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
