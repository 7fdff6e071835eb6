"""One place that turns a `--device` option and the process environment into a `torch.device`.

Under NCCL or torchrun each process owns one GPU: `cuda:LOCAL_RANK`, never the global rank (on a
second node global rank 4 is local GPU 0). The resolver also calls `torch.cuda.set_device`, so
libraries that allocate on "the current device" (NCCL, autocast, `torch.cuda.*` calls without an
index) use the same GPU as our tensors.
"""

from __future__ import annotations

import os

import torch

from .errors import OptionError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def local_rank(default: int = 0) -> int:
    """The process's index on its own node: LOCAL_RANK (torchrun, our spawner), else SLURM_LOCALID."""
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                raise OptionError(name, f"environment variable must be an integer, got {value!r}") from None
    return default


def parse_device(spec: str) -> str:
    """Check a --device option, its text and that a GPU it names is usable here (so a command refuses it
    before it writes anything, not in its workers); returns it normalised ('auto', 'cpu', 'cuda' or 'cuda:N')."""
    spec = (spec or "auto").strip().lower()
    if spec not in ("auto", "cpu", "cuda") and not (spec.startswith("cuda:") and spec[5:].isdigit()):
        raise OptionError("--device", f"must be {DEVICE_CHOICES}, got {spec!r}")
    if spec.startswith("cuda") and not (torch.cuda.is_available() and torch.cuda.device_count() > 0):
        raise OptionError("--device", f"{spec} asked for but no usable GPU is visible to torch "
                                      f"(torch {torch.__version__}); use --device cpu")
    return spec


def resolve_device(spec: str = "auto", *, rank: int | None = None, set_current: bool = True) -> torch.device:
    """The device this process computes on.

    `spec` is a --device value. 'cuda' picks `cuda:LOCAL_RANK` (or `cuda:rank` for a worker we spawned
    ourselves, where rank is the local rank); 'auto' is 'cuda' when a GPU is usable, else 'cpu'."""
    spec = parse_device(spec)
    has_cuda = torch.cuda.is_available() and torch.cuda.device_count() > 0
    if spec == "auto":
        spec = "cuda" if has_cuda else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not has_cuda:
        raise OptionError("--device", f"{spec} asked for but no usable GPU is visible to torch "
                                      f"(torch {torch.__version__}); use --device cpu")
    index = int(spec[5:]) if ":" in spec else local_rank(rank if rank is not None else 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise OptionError("--device", f"cuda:{index} asked for but this node has {count} GPU(s) "
                                      "(local rank / --gpus larger than the GPUs on the node?)")
    device = torch.device("cuda", index)
    if set_current:
        torch.cuda.set_device(device)
    return device
