"""Repairing a run that `verify` found damaged: the run is deterministic, so the damaged shards are
regenerated from their seeds (a label-images run: reread from its folder) and relabelled with the run's
ensemble, to the same bytes; stray files
are deleted and the index is rewritten with the card's settings.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..io import run_lock
from .finalize import finalize_run
from .generate import sample_run
from .verify import Report, _Checker, require_run, verify_run


def repair_run(run_dir: str | Path, *, workers: int = 1, progress: bool = True, found=None) -> Report:
    """Fix what `verify_run` finds: regenerate damaged shards from their seeds (relabelled), remove debris,
    rewrite the index; returns the report after repair. The run lock is taken before anything is looked at
    or deleted, so a repair never removes files from under a running writer. `found(report)` is called
    with the report before the repair."""
    run = Path(run_dir)
    require_run(run)  # not a run: one line, before a lock is tried
    with run_lock(run, create=False):
        report = verify_run(run)
        if found is not None:
            found(report)
        if report.clean:
            return report
        _repair(run, report, workers, progress)
        return verify_run(run)


def _repair(run: Path, report: Report, workers: int, progress: bool) -> None:
    checker = _Checker(run)
    damaged = sorted({p.shard for p in report.problems if p.shard is not None})
    for p in report.problems:
        if p.shard is None and p.remedy == "delete":
            path = run / p.path
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    for k in damaged:
        checker.store.discard(k)
    # Seeds and batches are fixed ranges of the run's config, so the redone shards are the same bytes; with an
    # ensemble each one is labelled as it is made (the fused path writes the same masks as `label`).
    ensemble = checker.labels["config"]["ensemble"] if checker.labels else None
    if checker.cfg.images:  # a label-images run: its images are read again from their folder
        from .real_images import label_images_run
        label_images_run(checker.cfg.images, ensemble, run, batch_size=checker.cfg.batch_size,
                         shard_size=checker.cfg.shard_size, progress=progress)
    elif damaged:
        trajectory = bool(checker.labels) and checker.labels["config"].get("features") == "trajectory"
        sample_run(run, checker.cfg, ensemble=ensemble, workers=workers, device="cpu", trajectory_features=trajectory,
                   progress=progress)
    if checker.card:
        finalize_run(run, drop_fraction=checker.card["drop_fraction"], max_pairs=checker.card["max_pairs"],
                     prefer_classes=",".join(checker.card.get("prefer_classes") or ()) or None)
