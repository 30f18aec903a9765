"""Data-parallel training helpers: ``torchrun --nproc_per_node N reldrop train ...`` just works.

When ``WORLD_SIZE > 1`` in the environment (set by torchrun), :func:`init_distributed` starts a
process group (NCCL on CUDA, Gloo on CPU) and every process trains on its shard of each epoch's
permutation (the same split as ``DistributedSampler``: pad to a multiple of the world size, then
``rank::world``). Rank 0 alone writes logs and checkpoints. ``train.batch_size`` is per process.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "cleanup", "wrap_model", "unwrap_model", "all_reduce_sum",
           "shard_indices", "free_port", "spawn"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, its device, and whether it logs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(pref: str, local_rank: int) -> torch.device:
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available; use --device cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    from reldrop._checks import check_device

    return check_device(pref)


def init_distributed(device: str = "auto") -> DistInfo:
    """Start the process group if launched by torchrun (``WORLD_SIZE > 1``); pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = _pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup() -> None:
    """Destroy the process group if one is running."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model`` unchanged."""
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if info.device.type == "cuda":
        return DDP(model, device_ids=[info.device.index], output_device=info.device.index)
    return DDP(model)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP/DataParallel wrapper (or ``model`` itself)."""
    return getattr(model, "module", model)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over all processes (in place; no-op when not distributed)."""
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def shard_indices(perm: torch.Tensor, rank: int, world: int, *, pad: bool = True) -> torch.Tensor:
    """This rank's part of ``perm`` ``(N,)``: padded by wrap-around to a multiple of ``world`` (if ``pad``), then ``rank::world``."""
    if world == 1:
        return perm
    if pad and perm.numel() % world:
        extra = world - perm.numel() % world
        perm = torch.cat([perm, perm[:extra]])
    return perm[rank::world]


def free_port() -> int:
    """A TCP port that is free on localhost right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_entry(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    fn(rank, *args)


def spawn(fn: Callable[..., Any], nprocs: int, args: tuple = ()) -> None:
    """Run ``fn(rank, *args)`` in ``nprocs`` processes with torchrun-style env vars (CPU, Gloo). For tests."""
    import torch.multiprocessing as mp

    mp.spawn(_spawn_entry, args=(nprocs, free_port(), fn, args), nprocs=nprocs, join=True)
