import numpy as np
import pytest

from datasetddpm.segmenters.metrics import confusion_matrix, iou_per_class, mean_iou


def test_miou_matches_hand_computed_confusion():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 2]])
    cm = confusion_matrix(pred, gt, 3, 255)
    # rows = gt, cols = pred; the ignored pixel (gt 255) is skipped.
    assert cm.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 1]]
    ious = iou_per_class(cm)
    assert ious[0] == pytest.approx(1 / 3)  # 1 / (2 + 2 - 1)
    assert ious[1] == pytest.approx(2 / 4)  # 2 / (3 + 3 - 2)
    assert ious[2] == pytest.approx(1 / 3)  # 1 / (2 + 2 - 1)
    assert mean_iou(cm) == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)


def test_summed_over_dataset_not_averaged_per_image():
    gt = [np.array([0, 0, 0, 1]), np.array([1, 1, 1, 1])]
    pred = [np.array([0, 0, 0, 0]), np.array([1, 1, 1, 1])]
    cm = sum(confusion_matrix(p, g, 2) for p, g in zip(pred, gt))
    assert iou_per_class(cm) == {0: pytest.approx(3 / 4), 1: pytest.approx(4 / 5)}


def test_absent_class_counts_as_zero_and_ignore_label_zero_is_not_a_class():
    gt = np.array([1, 1, 2, 0])
    pred = np.array([1, 1, 2, 3])
    cm = confusion_matrix(pred, gt, 4, ignore_label=0)
    ious = iou_per_class(cm, ignore_label=0)
    assert set(ious) == {1, 2, 3}
    assert ious[3] == 0.0  # absent from ground truth, and its only prediction was on an ignored pixel
    assert mean_iou(cm, ignore_label=0) == pytest.approx(2 / 3)


def test_out_of_range_ground_truth_raises():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0]), np.array([5]), 3)
