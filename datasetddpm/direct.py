"""Direct DDPM mode: pixel features -> ensemble vote, on real images.

`FeatureSource` hides where features come from (a diffusion generator, or the RGB colour
baseline) so training, segmentation and evaluation are one code path for both.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .ensemble.model import EnsembleConfig, PixelEnsemble
from .ensemble.fused import FusedHead
from .ensemble.predict import image_uncertainty
from .ensemble.train import EnsembleTrainConfig, train_ensemble
from .features import FeatureBank, colour_maps, drop_tiny_regions
from .generators.base import FeatureSpec
from .progress import progress_bar
from .segmenters.metrics import confusion_matrix, iou_per_class, mean_iou


@dataclass
class FeatureSource:
    """Diffusion features (`generator` + `spec`) or, with generator None, the colour baseline."""

    generator: object | None = None
    spec: FeatureSpec | None = None

    def maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        if self.generator is None:
            return colour_maps(images)
        return self.generator.feature_maps(images, self.spec)

    def describe(self) -> dict:
        if self.generator is None:
            return {"kind": "colour"}
        return self.spec.to_dict()

    def model_name(self) -> str:
        return "" if self.generator is None else getattr(self.generator, "source", "")


class CachedSource(FeatureSource):
    """Computes `base`'s maps once per distinct image batch, for repeated passes over the same images
    (several seeds, or every block of a probe); `select` serves only map number `select`."""

    def __init__(self, base: FeatureSource, select: int | None = None, cache: dict | None = None):
        spec = base.spec
        if spec is not None and select is not None:
            spec = FeatureSpec((spec.blocks[select % len(spec.blocks)],), (spec.steps[select // len(spec.blocks)],),
                               spec.noise_seed)
        super().__init__(base.generator, spec)
        self.base, self.select = base, select
        self.cache = {} if cache is None else cache

    def maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        key = hashlib.blake2b(images.numpy().tobytes(), digest_size=16).digest()
        if key not in self.cache:
            self.cache[key] = self.base.maps(images)
        maps = self.cache[key]
        return maps if self.select is None else [maps[self.select]]


class PerImageCache(FeatureSource):
    """Computes `base`'s maps once per distinct *image*, whatever batches it later comes in: for studies
    that train on many subsets of one pool. An image's maps are those of the batch it was first seen in
    (CPU kernels round differently across batch sizes), so a study's numbers depend on its visiting order,
    which is fixed."""

    def __init__(self, base: FeatureSource):
        super().__init__(base.generator, base.spec)
        self.base, self.cache = base, {}

    def maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        keys = [hashlib.blake2b(x.numpy().tobytes(), digest_size=16).digest() for x in images]
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            fresh = self.base.maps(images[missing])
            for j, i in enumerate(missing):
                self.cache[keys[i]] = [m[j:j + 1] for m in fresh]
        return [torch.cat([self.cache[k][n] for k in keys]) for n in range(len(self.cache[keys[0]]))]


class GivenMaps(FeatureSource):
    """Maps computed elsewhere for exactly the images `segment` is given in one batch (trajectory
    features: the sampler's own decoder activations)."""

    def __init__(self, maps: list[torch.Tensor], spec: FeatureSpec | None = None):
        super().__init__(None, spec)
        self.given = maps

    def maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        if len(images) != len(self.given[0]):
            raise ValueError(f"maps were given for {len(self.given[0])} images, asked for {len(images)}")
        return self.given


def _batches(images: np.ndarray, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    for i in range(0, len(images), batch_size):
        yield i, torch.from_numpy(images[i:i + batch_size]).permute(0, 3, 1, 2).contiguous()


def build_bank(source: FeatureSource, images: np.ndarray, masks: np.ndarray, ignore_label: int, *,
               batch_size: int = 8, dtype: torch.dtype = torch.float32, progress: bool = True) -> FeatureBank:
    """Native-resolution features + hygiene-cleaned masks of a labelled set."""
    H, W = images.shape[1:3]
    bank = FeatureBank(H, W, dtype, capacity=len(images))  # allocated once: no second copy
    with progress_bar(progress) as bar:
        task = bar.add_task("features", total=len(images), info="")
        for i, x in _batches(images, batch_size):
            clean = np.stack([drop_tiny_regions(m, ignore_label) for m in masks[i:i + len(x)]])
            bank.add(source.maps(x), torch.from_numpy(clean))
            bar.update(task, advance=len(x))
    return bank.finalize()


def fit_ensemble(source: FeatureSource, images: np.ndarray, masks: np.ndarray, *, num_classes: int,
                 ignore_label: int = 255, class_names: tuple[str, ...] = (), train: EnsembleTrainConfig | None = None,
                 progress: bool = True, diagnose: bool = False) -> tuple[PixelEnsemble, dict]:
    """Features of the labelled images -> trained ensemble and its log; `diagnose` adds each class's recall on
    its own training pixels (`training_recall`, for train-ensemble's class warnings)."""
    train = train or EnsembleTrainConfig()
    bank = build_bank(source, images, masks, ignore_label, progress=progress)
    cfg = EnsembleConfig(in_dim=bank.dim, num_classes=num_classes, members=train.members, ignore_label=ignore_label,
                         class_names=tuple(class_names), features=source.describe(), model=source.model_name(),
                         resolution=int(images.shape[1]))
    ensemble, log = train_ensemble(bank, cfg, train, progress=progress)
    log["feature_bank_mb"] = round(bank.nbytes() / 2**20, 1)
    # The labeller's class balance, for the dataset card to compare the synthetic labels with.
    labelled = bank.mask_tensor[bank.mask_tensor != ignore_label]
    log["class_pixels"] = torch.bincount(labelled.flatten(), minlength=num_classes)[:num_classes].tolist()
    if diagnose:
        from .ensemble.diagnostics import training_recall
        log["training_recall"] = training_recall(ensemble, bank, num_classes, ignore_label, seed=train.seed)
    return ensemble, log


@dataclass
class Segmentation:
    labels: np.ndarray  # (N, H, W) int64
    pixel_uncertainty: np.ndarray  # (N, H, W) float32, JS divergence of the members
    image_uncertainty: np.ndarray  # (N,) mean of each image's 10 % most uncertain pixels

    def first(self, n: int) -> "Segmentation":
        return Segmentation(self.labels[:n], self.pixel_uncertainty[:n], self.image_uncertainty[:n])


@torch.no_grad()
def segment(source: FeatureSource, ensemble: PixelEnsemble, images: np.ndarray, *, batch_size: int = 8,
            progress: bool = True, description: str = "segment") -> Segmentation:
    """Segment images. The UNet runs in batches; the ensemble runs through `FusedHead` (fc1 at each
    map's native resolution, then upsampling of its small output), so no (d, H, W) feature tensor
    is ever built. Labels equal the materialised path's up to near-ties."""
    N, H, W = images.shape[:3]
    labels = np.zeros((N, H, W), dtype=np.int64)
    unc = np.zeros((N, H, W), dtype=np.float32)
    scores = np.zeros(N, dtype=np.float32)
    head = None
    with progress_bar(progress) as bar:
        task = bar.add_task(description, total=N, info="")  # the command's name: `suggest` runs this too
        device = ensemble.fc1.weight.device
        for i, x in _batches(images, batch_size):
            maps = [m.to(device) for m in source.maps(x)]  # colour maps are made on the CPU
            head = head or FusedHead(ensemble.eval(), [m.shape[1] for m in maps])
            # Small images go through the head together (fewer, larger ops); large ones one at a
            # time, as its activations take ~5 KB a pixel.
            step = max(1, 2**16 // (H * W))
            for j in range(0, len(x), step):
                lab, u = head([m[j:j + step] for m in maps], (H, W))
                labels[i + j:i + j + len(lab)] = lab.cpu().numpy()
                unc[i + j:i + j + len(u)] = u.cpu().numpy()
                scores[i + j:i + j + len(u)] = [image_uncertainty(v) for v in u]
            bar.update(task, advance=len(x))
    return Segmentation(labels, unc, scores)


@dataclass
class Evaluation:
    miou: float
    iou: dict[str, float]
    confusion: np.ndarray
    num_images: int
    class_report: dict | None = None  # segmenters.class_report's, when asked for (`evaluate --class-report`)

    def to_dict(self) -> dict:
        return {"miou": self.miou, "iou": self.iou, "num_images": self.num_images,
                "protocol": "reference: per-class intersections and unions summed over the test set; "
                            "ignore label skipped; classes absent from both count as IoU 0",
                "confusion": self.confusion.tolist(),
                **({"class_report": self.class_report} if self.class_report is not None else {})}


def evaluate_labels(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: int,
                    class_names: tuple[str, ...] = ()) -> Evaluation:
    cm = confusion_matrix(pred, gt, num_classes, ignore_label)
    names = class_names or tuple(str(k) for k in range(num_classes))
    ious = {names[k]: v for k, v in iou_per_class(cm, ignore_label).items()}
    return Evaluation(mean_iou(cm, ignore_label), ious, cm, len(gt))
