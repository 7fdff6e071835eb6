"""The global step after all shards are labelled: rank every image's uncertainty, keep the rest.

The drop of the most uncertain fraction is a decision over all N scores, so it runs once at the
end; it writes `index.jsonl` (one line per sample: id, seed, files, checksums, uncertainty, kept)
and `dataset_card.json`, and never rewrites shard files. Beside them the installed figures (`hooks`; the
command line's draw) write `preview.png` (kept pairs at both ends of the ranking, dropped ones) and
`uncertainty.png` (the scores and the drop threshold).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import OptionError
from ..io import atomic_path, read_json, remove_stale_temporaries, run_lock, write_json
from .selection import FinalizePlan, class_balance, kept_ids, plan_finalize, preferred_classes  # noqa: F401


def finalize_run(run_dir: str | Path, *, drop_fraction: float = 0.1, max_pairs: int = 50_000,
                 prefer_classes: str | None = None) -> dict:
    """Drop the most uncertain, keep at most `max_pairs` (the least uncertain, or with `prefer_classes`
    the richest in those classes: over-generate, then mine), write index.jsonl, the card and pictures.
    The order of every writer: take the run lock, validate, then write."""
    if not 0 <= drop_fraction < 1:
        raise OptionError("--drop-fraction", f"must be in [0, 1), got {drop_fraction}")
    if max_pairs < 1:
        raise OptionError("--max-pairs", f"must be >= 1, got {max_pairs}")
    run = Path(run_dir)
    if not run.is_dir():
        read_json(run / "manifest.json")  # the one line a missing run gets, before a lock is tried
    with run_lock(run, create=False):
        from .verify import cheap_check
        cheap_check(run)
        plan = plan_finalize(run, drop_fraction=drop_fraction, max_pairs=max_pairs, prefer_classes=prefer_classes)
        remove_stale_temporaries(run)
        _write(run, plan)
    return plan.card


def _write(run: Path, plan: FinalizePlan) -> None:
    import json
    with atomic_path(run / "index.jsonl") as tmp:
        with open(tmp, "w") as f:
            for line in plan.index_lines():
                f.write(json.dumps(line) + "\n")
    write_json(run / "dataset_card.json", plan.card)
    from ..hooks import current_figures
    ens = plan.ensemble
    current_figures().finalize_pictures(run, plan.rows, plan.keep, class_names=ens.class_names,
                                        num_classes=ens.num_classes, drop_fraction=plan.drop_fraction)
