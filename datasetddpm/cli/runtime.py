"""The runtime block of every command: `--device`, `--threads`, `--quiet` (and `--precision`) applied once.

A command body makes one call, `rt = runtime(device=device, threads=threads, quiet=quiet, ...)`, and hands
the library `rt.device` (resolved here) or `rt.device_option` (the text, for a call that starts worker
processes which resolve it each), `rt.threads` and `rt.progress`. tests/test_cli_runtime.py fails when a
command in cli/ resolves the device, pins threads or reads --quiet by hand again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from .options import check_threads, set_precision, set_threads

if TYPE_CHECKING:  # torch is imported by the first command that resolves a device, not by `--help`
    import torch


@dataclass(frozen=True)
class Runtime:
    """A command's process settings, as its options gave them (checked)."""

    device_option: str = "auto"   # --device as given: auto, cpu, cuda or cuda:N
    threads: int | None = None    # --threads, >= 1; None leaves torch's default (all cores)
    quiet: bool = False           # --quiet: no progress bars
    precision: str | None = None  # --precision of a command that runs a diffusion UNet in this process

    @property
    def progress(self) -> bool:
        return not self.quiet

    @cached_property  # resolved on first use: a command that only plans or fails early never touches CUDA
    def device(self) -> "torch.device":
        """The device this process computes on (`devices.resolve_device`)."""
        from ..devices import resolve_device
        return resolve_device(self.device_option)


def runtime(*, device: str = "auto", threads: int | None = None, quiet: bool = False,
            precision: str | None = None, pin_threads: bool = True) -> Runtime:
    """The runtime of one command, its process settings applied: torch pinned to --threads and, with a
    --precision, the UNet arithmetic set for the resolved device. `pin_threads=False` only checks --threads:
    for a command whose library call starts workers that pin (and record) their own threads."""
    rt = Runtime(device_option=device, threads=check_threads(threads), quiet=quiet, precision=precision)
    if pin_threads:
        set_threads(rt.threads)
    if precision is not None:
        set_precision(precision, rt.device)
    return rt
