"""The reference-protocol mIoU (datasetddpm/segmenters/metrics.py) against an independent implementation,
segmentation_models_pytorch.metrics (smp), on random predictions and random confusion matrices.

The protocol's conventions (metrics.py's docstring) and how the smp side is made to follow them:
- intersections and unions are summed per class over the whole set, not averaged per image: smp's per-image
  true/false positive/negative counts are summed over images before the IoU (its "macro" reduction does the
  same: sum over images per class, IoU per class, mean over classes);
- pixels whose ground truth is the ignore label are skipped: smp's `ignore_index` skips them (it must lie outside
  0..K-1, so ignored pixels are handed to it as -1 even when the protocol's ignore label is a class id);
- the ignore label is not a class of the mean: when it is a class id (ignore 0), its column is left out of the
  smp counts before the mean; predictions of it elsewhere still count against the true class (a false negative);
- a class absent from both prediction and ground truth enters the mean with IoU 0: its smp counts are all 0,
  its IoU 0/0, and `zero_division=0` makes that 0 (and keeps it in the mean).
"""

import numpy as np
import pytest
import torch

smp_metrics = pytest.importorskip("segmentation_models_pytorch.metrics")

from datasetddpm.segmenters.metrics import confusion_matrix, iou_per_class, mean_iou  # noqa: E402

SMP_IGNORE = -1  # smp's ignore_index must lie outside the class ids


def _smp_ious(preds: np.ndarray, gts: np.ndarray, num_classes: int, ignore_label: int) -> tuple[dict, float]:
    """Per-class IoU and mIoU by smp, under the protocol's conventions (the module docstring)."""
    target = torch.from_numpy(np.where(gts == ignore_label, SMP_IGNORE, gts).astype(np.int64))
    output = torch.from_numpy(preds.astype(np.int64))
    tp, fp, fn, tn = smp_metrics.get_stats(output, target, mode="multiclass", num_classes=num_classes,
                                           ignore_index=SMP_IGNORE)
    classes = [k for k in range(num_classes) if k != ignore_label]
    tp, fp, fn, tn = (t[:, classes] for t in (tp, fp, fn, tn))
    summed = [t.sum(0, keepdim=True) for t in (tp, fp, fn, tn)]
    per_class = smp_metrics.iou_score(*summed, reduction="none", zero_division=0)[0]
    miou = smp_metrics.iou_score(tp, fp, fn, tn, reduction="macro", zero_division=0)
    return {k: float(v) for k, v in zip(classes, per_class)}, float(miou)


def _protocol_ious(preds: np.ndarray, gts: np.ndarray, num_classes: int, ignore_label: int) -> tuple[dict, float]:
    cm = sum(confusion_matrix(p, g, num_classes, ignore_label) for p, g in zip(preds, gts))
    return iou_per_class(cm, ignore_label), mean_iou(cm, ignore_label)


def _random_case(seed: int):
    """Random images of random classes; some classes never used (absent from both), some ignored pixels, the
    ignore label either outside the ids (255) or class 0."""
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 9))
    ignore_label = 255 if seed % 3 else 0
    used = [k for k in range(num_classes) if rng.random() < 0.7 or k == num_classes - 1]
    n, side = int(rng.integers(1, 5)), int(rng.integers(3, 12))
    gts = rng.choice(used, size=(n, side, side))
    preds = np.where(rng.random(gts.shape) < 0.6, gts, rng.choice(used, size=gts.shape))  # mostly right
    gts = np.where(rng.random(gts.shape) < 0.15, ignore_label, gts)
    gts[0, 0, 0] = ignore_label  # at least one ignored pixel in every case
    return preds, gts, num_classes, ignore_label


@pytest.mark.parametrize("seed", range(40))
def test_protocol_miou_equals_smp_on_random_predictions(seed):
    preds, gts, num_classes, ignore_label = _random_case(seed)
    ours, our_miou = _protocol_ious(preds, gts, num_classes, ignore_label)
    theirs, their_miou = _smp_ious(preds, gts, num_classes, ignore_label)
    assert set(ours) == set(theirs)
    assert ours == {k: pytest.approx(v, abs=1e-6) for k, v in theirs.items()}
    assert our_miou == pytest.approx(their_miou, abs=1e-6)


def _pixels_of(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One prediction and ground-truth pixel per count of the confusion matrix (rows truth, columns prediction)."""
    k = cm.shape[0]
    gt = np.repeat(np.repeat(np.arange(k), k), cm.ravel())
    pred = np.repeat(np.tile(np.arange(k), k), cm.ravel())
    return pred[None], gt[None]


@pytest.mark.parametrize("seed", range(20))
def test_protocol_miou_equals_smp_on_random_confusions(seed):
    """A random confusion matrix with classes absent from both (zero row and column), read by the protocol
    directly and by smp from the pixels it counts."""
    rng = np.random.default_rng(1000 + seed)
    num_classes = int(rng.integers(2, 10))
    cm = rng.integers(0, 50, size=(num_classes, num_classes)) * (rng.random((num_classes, num_classes)) < 0.7)
    absent = rng.random(num_classes) < 0.3
    cm[absent, :] = 0
    cm[:, absent] = 0
    pred, gt = _pixels_of(cm)
    assert np.array_equal(confusion_matrix(pred, gt, num_classes), cm)
    theirs, their_miou = _smp_ious(pred, gt, num_classes, 255)
    assert iou_per_class(cm) == {k: pytest.approx(v, abs=1e-6) for k, v in theirs.items()}
    assert mean_iou(cm) == pytest.approx(their_miou, abs=1e-6)


def test_absent_classes_enter_both_means_as_zero():
    """Classes 2 and 3 appear in neither prediction nor truth: IoU 0 on both sides, and the mean is over all
    four classes (the protocol's convention), not over the two present."""
    gts = np.array([[[0, 0, 1, 1]]])
    preds = np.array([[[0, 1, 1, 1]]])
    ours, our_miou = _protocol_ious(preds, gts, 4, 255)
    theirs, their_miou = _smp_ious(preds, gts, 4, 255)
    assert ours[2] == ours[3] == theirs[2] == theirs[3] == 0.0
    assert our_miou == pytest.approx((1 / 2 + 2 / 3) / 4) and their_miou == pytest.approx(our_miou, abs=1e-6)


def test_the_random_cases_cover_every_convention():
    """The random predictions hold absent classes, ignored pixels, and both kinds of ignore label."""
    cases = [_random_case(seed) for seed in range(40)]
    absent = sum(any(not ((p == k).any() or (g == k).any()) for k in range(n)) for p, g, n, _ in cases)
    assert absent >= 5
    assert all((g == ignore).any() for _, g, _, ignore in cases)
    assert {ignore for *_, ignore in cases} == {0, 255}
