"""`datasetddpm suggest`: which unlabelled real images to annotate next.

Each image gets the ensemble's uncertainty (the same per-image JS score the filter uses). With
diversity on, the 3k most uncertain images are candidates and k of them are chosen greedily
(k-center) on pooled features — each map of the feature source averaged over the image — starting
from the most uncertain, so that near-duplicates of one hard image do not fill the list. The chosen
images are copied (bytes unchanged) into the output folder for annotators, with `suggestions.json`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from .data.folders import read_images
from .direct import segment
from .ensemble.model import load_ensemble
from .errors import OptionError
from .io import atomic_path, check_output_dir, write_json
from .labelling_tools.preannotations import ensemble_classes, write_preannotations


def pooled_features(source, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """(N, sum of channels): every feature map averaged over its pixels, each map scaled to unit norm."""
    rows = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i:i + batch_size]).permute(0, 3, 1, 2)
        maps = [m.float().mean(dim=(2, 3)) for m in source.maps(x)]
        rows.append(torch.cat([m / m.norm(dim=1, keepdim=True).clamp_min(1e-8) for m in maps], 1).cpu().numpy())
    return np.concatenate(rows)


def k_center(features: np.ndarray, k: int, first: int) -> list[int]:
    """Greedy k-center: start at `first`, then repeatedly take the point farthest from those chosen."""
    chosen = [first]
    distance = np.linalg.norm(features - features[first], axis=1)
    while len(chosen) < k:
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(features - features[nxt], axis=1))
    return chosen


def choose(source, ensemble, images: np.ndarray, k: int, *, diversity: bool = True,
           progress: bool = False, segmentation=None) -> tuple[list[int], np.ndarray]:
    """Indices of the `k` images to annotate next (in order) and every image's uncertainty score
    (from `segmentation`, the ensemble's `segment` of `images`, when the caller has it)."""
    if segmentation is None:
        segmentation = segment(source, ensemble, images, progress=progress)
    scores = segmentation.image_uncertainty
    order = np.lexsort((np.arange(len(scores)), -scores))  # most uncertain first; ties by file order
    if diversity and k > 1:
        candidates = order[:min(len(order), 3 * k)]
        return [int(candidates[i]) for i in k_center(pooled_features(source, images[candidates]), k, 0)], scores
    return [int(i) for i in order[:k]], scores


def suggest(images_dir: str | Path, ensemble_dir: str | Path, k: int, out_dir: str | Path, *, diversity: bool = True,
            model: str | None = None, device: str | torch.device = "cpu", progress: bool = True) -> list[dict]:
    from .workflows.problem import check_image_sizes, check_ensemble_size, source_for
    images, paths = read_images(images_dir)
    if not 1 <= k <= len(paths):
        raise OptionError("--k", f"must be in [1, {len(paths)}] (the images in {images_dir}), got {k}")
    ensemble = load_ensemble(ensemble_dir).to(device)
    check_ensemble_size(ensemble.cfg, images, paths)
    source = source_for(ensemble, model=model, device=device)
    check_image_sizes(source, images, paths)
    check_output_dir(out_dir)
    segmentation = segment(source, ensemble, images, progress=progress, description="suggest")
    picked, scores = choose(source, ensemble, images, k, diversity=diversity, segmentation=segmentation)
    out = Path(out_dir)
    rows = []
    for rank, i in enumerate(picked):
        with atomic_path(out / paths[i].name) as tmp:
            shutil.copyfile(paths[i], tmp)
        rows.append({"rank": rank, "file": paths[i].name, "uncertainty": float(scores[i])})
    # The annotators start from the ensemble's masks, most uncertain first (Label Studio sorts by score).
    write_preannotations(out, [r["file"] for r in rows], ensemble_classes(ensemble.cfg),
                         masks=segmentation.labels[picked], scores=scores[picked],
                         ignore_label=ensemble.cfg.ignore_label, model_version=f"datasetddpm ensemble {ensemble_dir}")
    write_json(out / "suggestions.json", {"images": str(images_dir), "ensemble": str(ensemble_dir), "k": k,
                                          "diversity": diversity, "suggestions": rows})
    return rows
