"""Worker processes through torch.distributed: G GPUs with NCCL, W CPU workers with gloo, or torchrun.

Workers share nothing but the run directory: shard k belongs to rank k % world, so the output does
not depend on how many workers made it. The process group gives a barrier at the end.
"""

from __future__ import annotations

import gc
import os
import socket
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .errors import OptionError


def resolve_world(workers: int, gpus: int, device: str) -> tuple[int, str, str]:
    """(world size, backend, device type) from the options, with a clear error for missing GPUs."""
    if gpus:
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have < gpus:
            raise OptionError("--gpus", f"asked for {gpus} GPU worker(s) but this machine has {have} usable GPU(s); "
                                        f"use --workers W --device cpu to run W CPU workers instead")
        return gpus, "nccl", "cuda"
    if device not in ("cpu", "cuda"):
        raise OptionError("--device", f"must be cpu or cuda, got {device!r}")
    if workers < 1:
        raise OptionError("--workers", f"must be >= 1, got {workers}")
    return workers, "gloo", device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, backend: str, port: int, threads: int | None, fn: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if threads:
        torch.set_num_threads(threads)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
        dist.barrier()
    finally:
        gc.collect()  # free DDP/NCCL objects before tearing the group down (abort at exit otherwise)
        dist.destroy_process_group()


def launch(fn: Callable, args: tuple, *, world: int, backend: str, threads: int | None = None) -> bool:
    """Run fn(rank, world, *args) on `world` workers (inline when 1, or under torchrun when launched so).

    Returns True in the process that should do the final, global steps (rank 0 or the parent)."""
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:  # started by torchrun: one rank per process
        if not dist.is_initialized():
            dist.init_process_group(backend)
        rank = dist.get_rank()
        try:
            fn(rank, dist.get_world_size(), *args)
            dist.barrier()
        finally:
            gc.collect()
            dist.destroy_process_group()
        return rank == 0
    if world == 1:
        if threads:
            torch.set_num_threads(threads)
        fn(0, 1, *args)
        return True
    mp.spawn(_entry, args=(world, backend, _free_port(), threads, fn, args), nprocs=world, join=True)
    return True
