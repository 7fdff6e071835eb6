"""Mean IoU as the reference code computes it (DESIGN.md section 1.7).

Intersections and unions are summed per class over the whole test set (not averaged per image);
pixels whose ground truth is the ignore label are skipped, and the ignore label is not a class of
the mean; a class absent from both prediction and ground truth still enters the mean with IoU 0.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: int = 255) -> np.ndarray:
    """(K, K) int64 counts, rows = ground truth, columns = prediction; ignored pixels skipped."""
    pred, gt = np.asarray(pred).ravel(), np.asarray(gt).ravel()
    keep = gt != ignore_label
    pred, gt = pred[keep].astype(np.int64), gt[keep].astype(np.int64)
    if gt.size and (gt.min() < 0 or gt.max() >= num_classes):
        raise ValueError(f"ground truth has class ids outside [0, {num_classes})")
    pred = np.clip(pred, 0, num_classes - 1)
    return np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(cm: np.ndarray, ignore_label: int = 255) -> dict[int, float]:
    """IoU of every class except the ignore label (0 when a class is absent from both)."""
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    return {k: float(inter[k] / union[k]) if union[k] > 0 else 0.0
            for k in range(cm.shape[0]) if k != ignore_label}


def mean_iou(cm: np.ndarray, ignore_label: int = 255) -> float:
    ious = iou_per_class(cm, ignore_label)
    return float(np.mean(list(ious.values())))
