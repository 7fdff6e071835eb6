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


def per_item_confusions(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: int = 255) -> np.ndarray:
    """(N, H, W) predictions and ground truth -> (N, K, K) confusion matrices (rows = ground truth)."""
    from ..segmenters.metrics import confusion_matrix
    return np.stack([confusion_matrix(p, g, num_classes, ignore_label) for p, g in zip(pred, gt)])
