"""The one run-folder discipline of every resumable trainer: a hash-guarded resume, a writable folder,
one writer at a time, and no debris left by a killed run."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from .errors import DatasetDDPMError
from .io import check_output_dir, read_json, remove_stale_temporaries, run_lock

CONFIG_FILE = "train_config.json"


def check_resume(out: Path, config_hash: str, *, overwrite: bool = False, detail: str = "") -> None:
    """Refuse a folder holding a run with another config (unless `overwrite`): rerunning the same command
    resumes, a different one would silently mix two runs."""
    config_file = Path(out) / CONFIG_FILE
    if overwrite or not config_file.exists():
        return
    previous = read_json(config_file)
    if previous.get("hash") != config_hash:
        raise DatasetDDPMError(f"{out}: holds a run with a different config ({detail}hash {previous.get('hash')} != "
                               f"{config_hash}); rerun with the same options to resume, or use --overwrite or "
                               "another --out")


@contextmanager
def training_dir(out: str | Path, config_hash: str, *, overwrite: bool = False, subdirs: tuple[str, ...] = ()):
    """Checked, locked and cleaned `out` for a trainer: every check before anything is written."""
    out = Path(out)
    check_resume(out, config_hash, overwrite=overwrite)
    check_output_dir(out)
    with run_lock(out):
        for folder in (out, *(out / s for s in subdirs)):
            remove_stale_temporaries(folder)
        yield out
