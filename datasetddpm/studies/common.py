"""What several studies share: the test-set confusions of a trained DeepLab."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..segmenters.model import load_segmenter, predict
from .stats import per_item_confusions


def deeplab_confusions(deeplab_dir: str | Path, test, num_classes: int, ignore_label: int) -> np.ndarray:
    """(N, K, K) per-image confusions of `deeplab_dir/best` (train-deeplab's output) on `test`, a labelled set."""
    model = load_segmenter(Path(deeplab_dir) / "best")
    pred = predict(model, torch.from_numpy(test.images).permute(0, 3, 1, 2), batch_size=32).numpy()
    return per_item_confusions(pred, test.masks, num_classes, ignore_label)
