"""Paired bootstrap confidence intervals for differences of dataset-level mIoU.

mIoU (reference protocol) sums intersections and unions over a whole set, so it is not a mean of
per-item numbers; the bootstrap resamples items (images or samples) and recomputes it from the
items' confusion matrices. Pairing: both methods are resampled with the same indices, so the
interval is on the difference for the same items (same test images, or same sample seeds).
"""

from __future__ import annotations

import numpy as np

from ..segmenters.metrics import mean_iou


def miou_of(confusions: np.ndarray, ignore_label: int = 255) -> float:
    """(N, K, K) per-item confusion matrices -> mIoU of the whole set."""
    return mean_iou(confusions.sum(0), ignore_label)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, ignore_label: int = 255, resamples: int = 2000,
                     seed: int = 0, level: float = 0.95) -> dict:
    """mIoU(b) - mIoU(a) with a percentile interval; a, b: (N, K, K) confusions of the same N items."""
    if a.shape != b.shape:
        raise ValueError(f"paired sets differ in shape: {a.shape} vs {b.shape}")
    rng = np.random.default_rng(seed)
    n = len(a)
    diffs = np.empty(resamples)
    for r in range(resamples):
        idx = rng.integers(0, n, n)
        diffs[r] = miou_of(b[idx], ignore_label) - miou_of(a[idx], ignore_label)
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return {"difference": miou_of(b, ignore_label) - miou_of(a, ignore_label), "ci_low": float(lo),
            "ci_high": float(hi), "level": level, "resamples": resamples, "items": n,
            "significant": bool(lo > 0 or hi < 0)}


def interval_text(d: dict | None, *, none: str = "—") -> str:
    """A bootstrap difference as '+1.6 [+0.5, +2.7]' (mIoU points), with ' (n.s.)' when the interval
    holds 0; `none` for a row without one (the baseline)."""
    if d is None:
        return none
    return (f"{100 * d['difference']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"
            + ("" if d["significant"] else " (n.s.)"))


def per_item_confusions(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: int = 255) -> np.ndarray:
    """(N, H, W) predictions and ground truth -> (N, K, K) confusion matrices (rows = ground truth)."""
    from ..segmenters.metrics import confusion_matrix
    return np.stack([confusion_matrix(p, g, num_classes, ignore_label) for p, g in zip(pred, gt)])


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for finding `positives` (the Mann-Whitney U statistic, ties
    counted half): the chance that a random positive scores above a random negative."""
    scores, positives = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(positives, dtype=bool).ravel()
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")  # undefined: one of the two groups is empty
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties: each run of equal scores gets the mean of its positions (1-based).
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def hierarchical_bootstrap(a: np.ndarray, b: np.ndarray, *, ignore_label: int = 255, resamples: int = 2000,
                           seed: int = 0, level: float = 0.95) -> dict:
    """Mean mIoU over training seeds of b minus a's, with an interval that resamples the test images
    (paired: the same images for both) and, independently, each side's training seeds; a, b: (S, N, K, K)."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"the two sides were scored on different test sets: {a.shape} vs {b.shape}")
    rng = np.random.default_rng(seed)
    n = a.shape[1]

    def mean_miou(x, seeds, idx):
        return np.mean([miou_of(x[s][idx], ignore_label) for s in seeds])
    everything = np.arange(n)
    point = mean_miou(b, range(len(b)), everything) - mean_miou(a, range(len(a)), everything)
    diffs = np.empty(resamples)
    for r in range(resamples):
        idx = rng.integers(0, n, n)
        diffs[r] = (mean_miou(b, rng.integers(0, len(b), len(b)), idx)
                    - mean_miou(a, rng.integers(0, len(a), len(a)), idx))
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return {"difference": float(point), "ci_low": float(lo), "ci_high": float(hi), "level": level,
            "resamples": resamples, "items": n, "seeds": [len(a), len(b)], "significant": bool(lo > 0 or hi < 0)}
