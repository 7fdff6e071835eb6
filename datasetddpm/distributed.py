"""Worker processes: G GPUs or W CPU workers on one node, torchrun on many, or independent batch tasks.

Generation (`sample`, `label`, `label-images`) needs no collective. Shard k belongs to global rank
k % world; a shard's sidecar is its commit, so each process owns its shards and finishes on its own:
no end-of-run barrier that a rank with less work would wait at (NCCL's watchdog kills a rank that waits
longer than its timeout, and uneven work is the rule: a short last shard, any resume). The output does
not depend on how many processes made it, nor on how they are spread over nodes or tasks.

Ways to run the same run, all giving the same bytes:
- one process, or `--workers W` / `--gpus G` processes spawned here (the parent prepares the run, then
  waits for its workers to exit);
- torchrun on one or many nodes: every rank runs the command, rank 0 prepares the run while the others
  wait at one CPU (gloo) barrier at the start, bounded by `--dist-timeout`;
- `--task-index I --task-count N` (a Slurm job array, a batch queue, preemptible jobs): N independent
  commands with no network between them; task I owns the shards of global ranks I*G .. I*G+G-1.

`train-deeplab` is data-parallel and keeps a process group: each process selects its GPU
(`set_device(local_rank)`) before any process-group call, and the group is created with that device
and the `--dist-timeout` timeout.

A user error (`DatasetDDPMError`) raised in a spawned worker reaches the parent as the same error, so
the command still prints one line and exits 2 instead of a worker's traceback.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .errors import DatasetDDPMError, OptionError

DEFAULT_TIMEOUT_S = 1800.0  # the start barrier and DDP collectives; NCCL's own default is 10 minutes
TASK_ENV = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")
DELAY_ENV = "DATASETDDPM_TEST_SHARD_DELAY"  # tests: "RANK:SECONDS", that global rank sleeps before each shard


@dataclass(frozen=True)
class Tasks:
    """This command's place among independent tasks: task `index` of `count` (0 of 1: not split)."""

    index: int = 0
    count: int = 1

    def global_rank(self, rank: int, world: int) -> int:
        return self.index * world + rank

    def global_world(self, world: int) -> int:
        return self.count * world


def resolve_tasks(index: int | None, count: int | None) -> Tasks:
    """--task-index / --task-count, defaulting to a Slurm job array's variables when set. A Slurm array's
    ids need not start at 0 (`--array=1-8`): SLURM_ARRAY_TASK_MIN is subtracted when present."""
    if count is None and os.environ.get(TASK_ENV[1]):
        count = _env_int(TASK_ENV[1])
    if index is None and os.environ.get(TASK_ENV[0]) and count is not None:
        index = _env_int(TASK_ENV[0]) - (_env_int("SLURM_ARRAY_TASK_MIN") if os.environ.get("SLURM_ARRAY_TASK_MIN") else 0)
    count = 1 if count is None else count
    index = 0 if index is None else index
    if count < 1:
        raise OptionError("--task-count", f"must be >= 1, got {count}")
    if not 0 <= index < count:
        raise OptionError("--task-index", f"must be in [0, {count - 1}] for --task-count {count}, got {index}")
    return Tasks(index, count)


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise OptionError(name, f"environment variable must be an integer, got {value!r}") from None


def check_timeout(timeout_s: float | None) -> float:
    if timeout_s is None:
        return DEFAULT_TIMEOUT_S
    if not timeout_s > 0:
        raise OptionError("--dist-timeout", f"must be > 0 seconds, got {timeout_s}")
    return float(timeout_s)


def resolve_world(workers: int, gpus: int, device: str) -> tuple[int, str, str]:
    """(world size on this machine, backend, device option for each worker), checked up front.

    Under torchrun the world comes from the environment and `--workers` / `--gpus` are not used."""
    from .devices import parse_device
    if torchrun_env():
        world = _env_int("WORLD_SIZE")
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


def select_device(backend: str) -> torch.device | None:
    """Before any process-group call: make this process's GPU (cuda:LOCAL_RANK) the current device, so NCCL
    never creates its communicator on cuda:0 for every rank of a node. None for a CPU backend."""
    if backend != "nccl":
        return None
    from .devices import resolve_device
    return resolve_device("cuda")


def init_group(backend: str, timeout_s: float, *, device_backend: str | None = None, **kwargs) -> None:
    """A process group with a timeout, created after this process's GPU became its current device
    (`device_backend`: the backend that names the device, when the group itself is a CPU one)."""
    device = select_device(device_backend or backend)
    if device is not None and backend == "nccl":
        kwargs["device_id"] = device
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **kwargs)


def shard_delay(rank: int) -> float:
    """Seconds the fault-injection hook asks global rank `rank` to wait before each shard (tests only)."""
    spec = os.environ.get(DELAY_ENV, "")
    if ":" in spec:
        who, seconds = spec.split(":", 1)
        if int(who) == rank:
            return float(seconds)
    return 0.0


def _entry(rank: int, world: int, backend: str, port: int, threads: int | None, error_dir: str, fn: Callable,
           args: tuple, collective: bool, timeout_s: float) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    if threads:
        torch.set_num_threads(threads)
    try:
        if not collective:  # generation: a worker owns its shards and ends on its own
            fn(rank, world, *args)
            return
        init_group(backend, timeout_s, rank=rank, world_size=world)
        try:
            fn(rank, world, *args)
            dist.barrier()
        finally:
            gc.collect()  # free DDP/NCCL objects before tearing the group down (abort at exit otherwise)
            dist.destroy_process_group()
    except DatasetDDPMError as e:
        Path(error_dir, f"rank{rank}.txt").write_text(str(e))
        os._exit(2)  # skip the other ranks' barrier: the parent terminates them and reports this line


def _torchrun(fn: Callable, args: tuple, backend: str, prepare: Callable[[], None] | None, collective: bool,
              timeout_s: float) -> bool:
    """One rank of a torchrun job. Generation: a gloo group for the start only (rank 0 prepares, its error
    reaches every rank), destroyed before any work. Training: the group lives until the end."""
    if not dist.is_initialized():
        init_group(backend if collective else "gloo", timeout_s, device_backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        error, failure = None, None
        if prepare is not None and rank == 0:
            try:
                prepare()
            except Exception as e:  # every rank hears of it now, not at its timeout
                error, failure = (str(e) if isinstance(e, DatasetDDPMError) else f"rank 0 failed to prepare the "
                                  f"run ({type(e).__name__}: {e})"), e
        shared = [error]
        dist.broadcast_object_list(shared, src=0)  # the start barrier, carrying rank 0's refusal if any
        if failure is not None:
            raise failure
        if shared[0] is not None:
            raise DatasetDDPMError(shared[0])
        if not collective:
            dist.destroy_process_group()
        fn(rank, world, *args)
        if collective:
            dist.barrier()
    finally:
        if dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()
    return rank == 0


def launch(fn: Callable, args: tuple, *, world: int, backend: str, threads: int | None = None,
           prepare: Callable[[], None] | None = None, collective: bool = True,
           timeout_s: float | None = None) -> bool:
    """Run fn(rank, world, *args) on `world` workers (inline when 1, or under torchrun when launched so).

    `prepare` (writing manifests, discarding an overwritten run) runs once before any worker starts:
    in this process, or under torchrun on global rank 0 while the other ranks wait. `collective` False
    (generation): workers share no process group and finish independently; True (DDP training): a group
    on each worker's own device, with `timeout_s`. Returns True in the process that should do the final,
    global steps (rank 0 or the parent)."""
    timeout_s = check_timeout(timeout_s)
    if torchrun_env():  # started by torchrun: one rank per process, possibly on several nodes
        return _torchrun(fn, args, backend, prepare, collective, timeout_s)
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
            mp.spawn(_entry, args=(world, backend, _free_port(), threads, error_dir, fn, args, collective, timeout_s),
                     nprocs=world, join=True)
        except mp.ProcessExitedException as e:
            messages = sorted(Path(error_dir).glob("rank*.txt"))
            if messages:
                raise DatasetDDPMError(messages[0].read_text()) from None
            raise DatasetDDPMError(f"worker {e.error_index} of {world} died ({_exit_text(e)}); the shards other "
                                   "workers committed are kept: rerun the same command to finish") from None
    return True


def _exit_text(e: "mp.ProcessExitedException") -> str:
    if e.exit_code is not None and e.exit_code < 0:
        import signal
        try:
            return f"killed by {signal.Signals(-e.exit_code).name}"
        except ValueError:
            pass
    return f"exit code {e.exit_code}"
