"""The embedded domain's oracle segmenter: stands in for a human annotator of generated samples.

It is a DeepLabV3+ (ResNet-18, from scratch, input upsampled 2x) trained on thousands of procedural
images with exact masks. Its mIoU on real procedural images is the ceiling; its mIoU on a model's
samples against... is not defined (samples have no ground truth), so sample quality is measured
the other way round: how well the oracle's labels on samples agree with what a labeller predicts,
and how close its confidence on samples is to that on real images (see `oracle_report`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..segmenters.metrics import confusion_matrix, mean_iou
from ..segmenters.model import SegmenterConfig, create_segmenter, load_segmenter, predict
from ..segmenters.train import SegTrainConfig, train_segmenter
from .procedural import CLASS_NAMES, render_batch

ORACLE_TRAIN_SEED0 = 4_000_000
ORACLE_EVAL_SEED0 = 5_000_000


def train_oracle(out_dir: str | Path, *, steps: int = 2000, pool: int = 6000, batch_size: int = 16,
                 seed: int = 0, progress: bool = True) -> dict:
    images, masks = render_batch(range(ORACLE_TRAIN_SEED0, ORACLE_TRAIN_SEED0 + pool))
    cfg = SegmenterConfig(num_classes=len(CLASS_NAMES), arch="deeplabv3plus", encoder="resnet18", input_scale=2,
                          class_names=CLASS_NAMES)
    torch.manual_seed(seed)
    model = create_segmenter(cfg)
    log = train_segmenter(model, images, masks, SegTrainConfig(steps=steps, batch_size=batch_size, seed=seed),
                          out_dir=out_dir, progress=progress)
    log["real_miou"] = oracle_miou_on_real(load_segmenter(out_dir))
    return log


def oracle_miou_on_real(model, n: int = 500) -> float:
    images, masks = render_batch(range(ORACLE_EVAL_SEED0, ORACLE_EVAL_SEED0 + n))
    pred = predict(model, torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    return mean_iou(confusion_matrix(pred, masks, len(CLASS_NAMES)))
