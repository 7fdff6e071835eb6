"""Per-class IoU with each class's labelled pixels and the small/large split of the features study.

mIoU hides a class at IoU 0 among good ones. The report lists every class's IoU beside how many labelled
training pixels it had, and gives the mean IoU of the small and of the large classes apart. A class is
small when its share of the labelled training pixels is below the median share of the classes (the rule
of `studies/features.py`); the ignore label is no class. `evaluate --class-report` and
`probe --class-report` print it and add it to their JSON.
"""

from __future__ import annotations

import numpy as np

from .metrics import iou_per_class, mean_iou


def pixel_counts(masks: np.ndarray, num_classes: int, ignore_label: int) -> list[int]:
    """Labelled pixels per class id (ignored pixels left out)."""
    masks = np.asarray(masks)
    return np.bincount(masks[masks != ignore_label].ravel(), minlength=num_classes)[:num_classes].tolist()


def small_classes(shares: dict[str, float]) -> tuple[float, list[str]]:
    """The median share and the classes below it (the features study's split)."""
    median = float(np.median(list(shares.values())))
    return median, [n for n, s in shares.items() if s < median]


def class_report(cm: np.ndarray, names: tuple[str, ...], ignore_label: int, train_pixels: list[int],
                 split_by: str) -> dict:
    """From a (K, K) confusion (rows: ground truth): per class its IoU, training pixels and share, test
    pixels, predicted pixels and group; the mIoU of all, small and large classes (None: an empty group)."""
    iou = iou_per_class(cm, ignore_label)
    evaluated = list(iou)
    total = max(sum(train_pixels[k] for k in evaluated), 1)
    shares = {names[k]: train_pixels[k] / total for k in evaluated}
    median, small = small_classes(shares)
    classes = {names[k]: {"iou": iou[k], "train_pixels": int(train_pixels[k]), "train_share": round(shares[names[k]], 6),
                          "test_pixels": int(cm[k].sum()), "predicted_pixels": int(cm[:, k].sum()),
                          "group": "small" if names[k] in small else "large"} for k in evaluated}
    groups = {"all": mean_iou(cm, ignore_label)}
    for group in ("small", "large"):
        values = [row["iou"] for row in classes.values() if row["group"] == group]
        groups[group] = float(np.mean(values)) if values else None
    return {"split_by": split_by, "median_share": round(median, 6), "classes": classes, "miou": groups}
