"""Worker processes through torch.distributed: G GPUs with NCCL, W CPU workers with gloo, or torchrun.

Workers share nothing but the run directory: shard k belongs to rank k % world, so the output does
not depend on how many workers made it, nor on how they are spread over nodes. The process group
gives a barrier at the end.

Ranks: `RANK` / `WORLD_SIZE` name a process among all of them (all nodes); `LOCAL_RANK` names it on
its node and picks its GPU (`devices.resolve_device`). Workers spawned here set all three, as
torchrun does, so one code path serves both.

A user error (`DatasetDDPMError`) raised in a spawned worker reaches the parent as the same error, so
the command still prints one line and exits 2 instead of a worker's traceback.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .errors import DatasetDDPMError, OptionError


def resolve_world(workers: int, gpus: int, device: str) -> tuple[int, str, str]:
    """(world size on this machine, backend, device option for each worker), checked up front.

    Under torchrun the world comes from the environment and `--workers` / `--gpus` are not used."""
    from .devices import parse_device
    if torchrun_env():
        world = int(os.environ["WORLD_SIZE"])
        device = "cuda" if gpus else parse_device(device)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return world, "nccl" if device.startswith("cuda") else "gloo", device
    if gpus < 0:
        raise OptionError("--gpus", f"must be >= 0, got {gpus}")
    if gpus:
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have < gpus:
            raise OptionError("--gpus", f"asked for {gpus} GPU worker(s) but this machine has {have} usable GPU(s); "
                                        f"use --workers W --device cpu to run W CPU workers instead")
        return gpus, "nccl", "cuda"
    device = parse_device(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() and torch.cuda.device_count() else "cpu"
    if workers < 1:
        raise OptionError("--workers", f"must be >= 1, got {workers}")
    if workers > 1 and device.startswith("cuda:"):
        raise OptionError("--device", f"{device} names one GPU but --workers {workers} starts several processes; "
                                      "use --gpus G (one process per GPU)")
    return workers, "gloo", device


def torchrun_env() -> bool:
    """True in a process started by torchrun (or any launcher that sets RANK and WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, backend: str, port: int, threads: int | None, error_dir: str, fn: Callable,
           args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    if threads:
        torch.set_num_threads(threads)
    try:
        dist.init_process_group(backend, rank=rank, world_size=world)
        try:
            fn(rank, world, *args)
            dist.barrier()
        finally:
            gc.collect()  # free DDP/NCCL objects before tearing the group down (abort at exit otherwise)
            dist.destroy_process_group()
    except DatasetDDPMError as e:
        Path(error_dir, f"rank{rank}.txt").write_text(str(e))
        os._exit(2)  # skip the other ranks' barrier: the parent terminates them and reports this line


def launch(fn: Callable, args: tuple, *, world: int, backend: str, threads: int | None = None,
           prepare: Callable[[], None] | None = None) -> bool:
    """Run fn(rank, world, *args) on `world` workers (inline when 1, or under torchrun when launched so).

    `prepare` (writing manifests, discarding an overwritten run) runs once before any worker starts:
    in this process, or under torchrun on global rank 0 while the other ranks wait at a barrier.
    Returns True in the process that should do the final, global steps (rank 0 or the parent)."""
    if torchrun_env():  # started by torchrun: one rank per process, possibly on several nodes
        if not dist.is_initialized():
            dist.init_process_group(backend)
        rank = dist.get_rank()
        try:
            if prepare is not None and rank == 0:
                prepare()
            dist.barrier()
            fn(rank, dist.get_world_size(), *args)
            dist.barrier()
        finally:
            gc.collect()
            dist.destroy_process_group()
        return rank == 0
    if prepare is not None:
        prepare()
    if world == 1:
        if threads:
            torch.set_num_threads(threads)
        fn(0, 1, *args)
        return True
    # torch logs a warning for every worker it terminates after one failed; the failure itself is reported.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="datasetddpm-workers-") as error_dir:
        try:
            mp.spawn(_entry, args=(world, backend, _free_port(), threads, error_dir, fn, args), nprocs=world, join=True)
        except mp.ProcessExitedException:
            messages = sorted(Path(error_dir).glob("rank*.txt"))
            if messages:
                raise DatasetDDPMError(messages[0].read_text()) from None
            raise
    return True
