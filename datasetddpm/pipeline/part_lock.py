"""Locks of the processes that write one run together without a parent (torchrun ranks, batch tasks).

A command that is the run's only writer takes the run lock (`io.run_lock`). Processes that share a run
take one part lock each, `.datasetddpm.lock.<part>` (`task-3`, `rank-5`): two copies of the same task are
refused, and so is a part while a single writer (`finalize`, `verify --repair`, another `sample`) holds
the run, and that writer while a part is live (`io.run_lock` checks `io.live_part_locks`).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from ..errors import DatasetDDPMError, InputError
from ..io import LOCK_NAME, check_unlocked, create_lock_file


@contextmanager
def part_lock(directory: str | Path, part: str):
    directory = Path(directory)
    path = directory / f"{LOCK_NAME}.{part}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        check_unlocked(directory)
        holder = create_lock_file(path)
    except OSError as e:
        raise InputError(directory, f"cannot take the run lock ({e.strerror or type(e).__name__})") from None
    if holder is not None:
        raise DatasetDDPMError(f"{directory}: {part} is already running (pid {holder.get('pid')} on "
                               f"{holder.get('host')}); delete {path} if that process no longer exists")
    try:
        check_unlocked(directory)  # a single writer that started between our check and our file
        yield
    finally:
        path.unlink(missing_ok=True)
