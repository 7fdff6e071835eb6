"""The one run-folder discipline of every resumable trainer: a hash-guarded resume, a writable folder,
one writer at a time, no debris left by a killed run, and the state and log files that make a resumed
run end as an uninterrupted one.

On disk (the same for every trainer): `train_config.json` ({"hash", "config", ...}),
`train_state.safetensors` (model weights as `model.<name>`, optimiser as `opt.*`, then the trainer's
own counters) and `train_log.jsonl` (one JSON line per checkpoint, ordered by its `step` / `epoch`)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import DatasetDDPMError
from .io import (atomic_path, check_output_dir, load_optimizer_tensors, optimizer_tensors, read_json,
                 remove_stale_temporaries, run_lock)

CONFIG_FILE = "train_config.json"
STATE_FILE = "train_state.safetensors"
LOG_FILE = "train_log.jsonl"


def check_resume(out: Path, config_hash: str, *, overwrite: bool = False, shown: tuple[str, ...] = (),
                 can_overwrite: bool = True) -> None:
    """Refuse a folder holding a run with another config (unless `overwrite`): rerunning the same command
    resumes, a different one would silently mix two runs. `shown`: fields of the previous run's config
    file named in the message (e.g. world size and AMP); `can_overwrite`: the command has --overwrite."""
    config_file = Path(out) / CONFIG_FILE
    if overwrite or not config_file.exists():
        return
    previous = read_json(config_file)
    if previous.get("hash") != config_hash:
        detail = "".join(f"{key} {previous.get(key)}, " for key in shown)
        remedy = "--overwrite or another --out" if can_overwrite else "another --out"
        raise DatasetDDPMError(f"{out}: holds a run with a different config ({detail}hash {previous.get('hash')} != "
                               f"{config_hash}); rerun with the same options to resume, or use {remedy}")


@contextmanager
def training_dir(out: str | Path, config_hash: str, *, overwrite: bool = False, subdirs: tuple[str, ...] = (),
                 shown: tuple[str, ...] = (), can_overwrite: bool = True, lock: bool = True):
    """Checked, locked and cleaned `out` for a trainer: every check before anything is written.

    `lock=False` (a torchrun rank other than 0) checks only: the lock holder locks and cleans."""
    out = Path(out)
    check_resume(out, config_hash, overwrite=overwrite, shown=shown, can_overwrite=can_overwrite)
    check_output_dir(out)
    with run_lock(out, enabled=lock):
        if lock:
            for folder in (out, *(out / s for s in subdirs)):
                remove_stale_temporaries(folder)
        yield out


def model_state(model: torch.nn.Module, opt: torch.optim.Optimizer, **counters) -> dict[str, torch.Tensor]:
    """Flat training state of a model and its optimiser (safetensors names), plus `counters` as tensors."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update(optimizer_tensors(opt))
    state.update({name: value if torch.is_tensor(value) else torch.tensor(value) for name, value in counters.items()})
    return state


def restore_model_state(state: dict[str, torch.Tensor], model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """The inverse of `model_state` for the model and optimiser; the caller reads its own counters."""
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    load_optimizer_tensors(opt, state)


def append_log(path: Path, record: dict, key: str) -> None:
    """Append one line to a training log, first dropping lines at or past `record[key]` (written by a run
    killed after logging but before its state save), so a resumed run's log equals an uninterrupted one's."""
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [ln for ln in lines if ln.strip() and json.loads(ln)[key] < record[key]]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in kept) + json.dumps(record) + "\n")
