"""What RUN/samples_preview.png shows, read from the run: the first committed samples, their label masks
and scores once labelled, and the labeller's classes. The command draws it (`reporting.figures.
write_samples_preview`); drawing reads no run file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.shards import ShardStore, sample_name

PREVIEW_SAMPLES = 12  # two rows of the preview's six columns


@dataclass
class SamplesPreview:
    images: list[np.ndarray]
    masks: list[np.ndarray | None]  # None for a sample of a shard that is not labelled yet
    captions: list[str]
    class_names: tuple[str, ...] = ()
    num_classes: int = 0  # 0: no overlays (not every shown sample is labelled)
    real: bool = False  # a `label-images` run: its images are real, not generated


def _image(path: Path, mode: str | None = None) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert(mode) if mode else im)


def _labels_config(run: Path) -> dict | None:
    path = run / "labels_manifest.json"
    return json.loads(path.read_text())["config"] if path.is_file() else None


def _is_real_run(run: Path) -> bool:
    from .real_images import SAMPLER
    try:
        return json.loads((run / "manifest.json").read_text())["config"]["sampler"] == SAMPLER
    except (OSError, ValueError, KeyError, TypeError):
        return False


def first_committed_samples(run: str | Path, limit: int = PREVIEW_SAMPLES) -> SamplesPreview | None:
    """The first `limit` committed samples in id order, with their masks where their shard is labelled;
    None when nothing is committed."""
    run = Path(run)
    store, labels = ShardStore(run), _labels_config(run)
    preview, k = SamplesPreview([], [], []), 0
    while len(preview.images) < limit and store.committed(k):
        labelled = labels is not None and store.committed(k, labels=True)
        meta = store.read_sidecar(k, labels=True) if labelled else store.read_sidecar(k)
        for s in meta["samples"][:limit - len(preview.images)]:
            preview.images.append(_image(store.images_dir(k) / sample_name(s["id"]), "RGB"))
            preview.masks.append(_image(store.masks_dir(k) / sample_name(s["id"])) if labelled else None)
            preview.captions.append(f"#{s['id']}" + (f" JS {s['uncertainty']:.3g}" if labelled else ""))
        k += 1
    if not preview.images:
        return None
    if labels is not None and all(m is not None for m in preview.masks):
        # The labeller's config, not its weights: classes are all the legend needs.
        cfg = json.loads((Path(labels["ensemble"]) / "ensemble.json").read_text())["ensemble"]
        preview.num_classes, preview.class_names = cfg["num_classes"], tuple(cfg.get("class_names", ()))
    preview.real = _is_real_run(run)
    return preview
