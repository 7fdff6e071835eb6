"""Repairing a run that `verify` found damaged: the run is deterministic, so the damaged shards are
regenerated from their seeds (a label-images run: reread from its folder) and relabelled with the run's
ensemble, to the same bytes; stray files
are deleted and the index is rewritten with the card's settings.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .finalize import finalize_run
from .generate import sample_run
from .verify import Report, _Checker, verify_run


def repair_run(run_dir: str | Path, *, workers: int = 1, progress: bool = True) -> Report:
    """Fix what `verify_run` finds: regenerate damaged shards from their seeds (relabelled), remove debris,
    rewrite the index; returns the report after repair."""
    run = Path(run_dir)
    report = verify_run(run)
    if report.clean:
        return report
    checker = _Checker(run)
    damaged = sorted({p.shard for p in report.problems if p.shard is not None})
    for p in report.problems:
        path = run / p.path
        if p.shard is None and path != run / "index.jsonl" and path.name != "dataset_card.json":
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
    else:
        trajectory = bool(checker.labels) and checker.labels["config"].get("features") == "trajectory"
        sample_run(run, checker.cfg, ensemble=ensemble, workers=workers, device="cpu", trajectory_features=trajectory,
                   progress=progress)
    if checker.card:
        finalize_run(run, drop_fraction=checker.card["drop_fraction"], max_pairs=checker.card["max_pairs"])
    return verify_run(run)
