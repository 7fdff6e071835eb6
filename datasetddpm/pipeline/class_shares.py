"""The first labelled shard's class shares beside the labeller's, printed once by the first worker.

A class the labeller never predicts is missing from every synthetic label; `finalize` says so after the
whole run is sampled. One shard (minutes into a run) is enough to see it: `sample --ensemble` and `label`
print each class's share of the first shard they label next to its share of the labeller's training
labels (`training.class_pixels` of ensemble.json), and flag a class with no pixel in that shard.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..io import read_json


def labeller_pixels(ensemble_dir: str | Path) -> list[int] | None:
    """Per-class labelled pixels the ensemble was trained on (None: an ensemble saved without them)."""
    pixels = read_json(Path(ensemble_dir) / "ensemble.json").get("training", {}).get("class_pixels")
    return list(pixels) if pixels else None


def shard_share_lines(labels: np.ndarray, names: tuple[str, ...], reference: list[int] | None,
                      shard: int, ignore_label: int | None = None) -> list[str]:
    """The report: a heading, then one line per class with its share of the shard's label pixels, the
    labeller's share, and a flag for a class absent from the shard (the ignore label, when it is a class id
    such as 0 = unlabelled, left out)."""
    counts = np.bincount(np.asarray(labels).ravel(), minlength=len(names))[:len(names)]
    share = counts / max(int(counts.sum()), 1)
    ref = np.asarray(reference, dtype=np.float64) / max(sum(reference), 1) if reference else None
    lines = [f"first labelled shard ({shard}, {len(labels)} images): each class's share of its label pixels"
             + (" (labeller's training labels in brackets)" if ref is not None else "")]
    for k, name in enumerate(names):
        if k == ignore_label:
            continue
        line = f"  {name:>16}: {100 * share[k]:6.2f} %" + (f"  ({100 * ref[k]:.2f} %)" if ref is not None else "")
        if counts[k] == 0:
            line += ("  <- no pixel in this shard: if train-ensemble warned about this class, the labeller "
                     "misses it and so will every label; stop and see docs/custom_data.md")
        lines.append(line)
    return lines


class FirstShardReport:
    """Called with every shard's labels; prints the report for the first one only, when `enabled` (the
    first worker), on stderr (beside the progress display, which rich keeps below it)."""

    def __init__(self, ensemble_dir: str | Path | None, names: tuple[str, ...], enabled: bool,
                 ignore_label: int | None = None, stream=None):
        self.enabled = enabled and ensemble_dir is not None
        self.names, self.ignore_label, self.stream = names, ignore_label, stream
        self.reference = labeller_pixels(ensemble_dir) if self.enabled else None

    def __call__(self, labels: np.ndarray, shard: int) -> None:
        if not self.enabled:
            return
        self.enabled = False
        stream = self.stream or sys.stderr
        stream.write("\n".join(shard_share_lines(labels, self.names, self.reference, shard, self.ignore_label)) + "\n")
        stream.flush()
