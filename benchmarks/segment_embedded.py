"""End-to-end labelling on the embedded default: seconds per image of `direct.segment`, UNet included.

The shipped 32-px model (`load_generator("embedded")`) with the EMBEDDED preset's features (6 blocks x
steps 10/50/100, d = 960), procedural images, a 7-class ensemble with random trained-scale weights
(timing does not depend on the values). Old path: `segment` as it was before the fused head (per image,
upsample_concat to (d, H, W), then the stacked ensemble on every pixel); new path: `segment` today.
Both in this process, alternating, on the same images; the UNet's share is timed on its own.

    .venv/bin/python benchmarks/segment_embedded.py [--quick] [--out DIR]
"""

from __future__ import annotations

import time

import bench_utils as bu  # first: sets the OpenMP wait policy before torch loads
import numpy as np
import torch
from labelling_head import near_ties, trained_ish_ensemble

from datasetddpm.data.procedural import render_batch
from datasetddpm.direct import FeatureSource, Segmentation, _batches, segment
from datasetddpm.ensemble.predict import image_uncertainty, predict_pixels
from datasetddpm.features import upsample_concat
from datasetddpm.generators.loading import load_generator
from datasetddpm.presets import EMBEDDED


@torch.no_grad()
def segment_materialised(source: FeatureSource, ensemble, images: np.ndarray, batch_size: int = 8) -> Segmentation:
    """`direct.segment` before the fused head, verbatim apart from the progress bar."""
    N, H, W = images.shape[:3]
    labels = np.zeros((N, H, W), dtype=np.int64)
    unc = np.zeros((N, H, W), dtype=np.float32)
    scores = np.zeros(N, dtype=np.float32)
    for i, x in _batches(images, batch_size):
        maps = source.maps(x)
        for j in range(len(x)):
            feats = upsample_concat([m[j:j + 1] for m in maps], (H, W))[0]
            lab, u = predict_pixels(ensemble, feats.flatten(1).T)
            labels[i + j] = lab.view(H, W).numpy()
            unc[i + j] = u.view(H, W).numpy()
            scores[i + j] = image_uncertainty(u)
    return Segmentation(labels, unc, scores)


def unet_only(source: FeatureSource, images: np.ndarray, batch_size: int = 8) -> None:
    for _, x in _batches(images, batch_size):
        source.maps(x)


def run(quick: bool = False, threads: int = 2) -> dict:
    torch.set_num_threads(threads)
    n, rounds = (16, 1) if quick else (64, 3)
    images, _ = render_batch(range(1000, 1000 + n))
    source = FeatureSource(load_generator("embedded"), EMBEDDED.features)
    first = source.maps(torch.from_numpy(images[:1]).permute(0, 3, 1, 2).contiguous())
    ens = trained_ish_ensemble(first, (32, 32), EMBEDDED.num_classes)
    times, outs, peaks = {"old": [], "new": [], "unet_only": []}, {}, {"old": 0.0, "new": 0.0, "unet_only": 0.0}
    paths = [("old", lambda: segment_materialised(source, ens, images)),
             ("new", lambda: segment(source, ens, images, progress=False)),
             ("unet_only", lambda: unet_only(source, images))]
    for r in range(rounds):
        for name, fn in (paths if r % 2 == 0 else paths[::-1]):  # alternate: contention hits all paths
            bu.reset_peak()
            t = time.perf_counter()
            outs[name] = fn()
            times[name].append((time.perf_counter() - t) / n)
            peaks[name] = max(peaks[name], bu.peak_rss_mb())
    old, new = outs["old"], outs["new"]
    differ = np.argwhere(old.labels != new.labels)
    near = True
    for i in np.unique(differ[:, 0]) if len(differ) else []:
        maps = source.maps(torch.from_numpy(images[i:i + 1]).permute(0, 3, 1, 2).contiguous())
        flat = torch.from_numpy((old.labels[i] != new.labels[i]).flatten().nonzero()[0])
        near &= bool(near_ties(ens, maps, (32, 32), flat, 1e-3).all())
    js_err = float(np.abs(old.pixel_uncertainty - new.pixel_uncertainty).max())
    best = {k: sorted(v)[len(v) // 2] for k, v in times.items()}  # the median round
    return {
        **bu.header(threads),
        "what": f"direct.segment on {n} procedural 32-px images, embedded UNet, EMBEDDED features (d = 960), "
                f"7 classes, batch 8; seconds per image, median of {rounds} alternating rounds",
        "seconds_per_image": {**best, "all": times},
        "head_seconds_per_image": {"old": best["old"] - best["unet_only"], "new": best["new"] - best["unet_only"]},
        "ratio": best["old"] / best["new"],
        "peak_rss_mb": {k: round(v, 1) for k, v in peaks.items()},
        "head_ratio": (best["old"] - best["unet_only"]) / max(best["new"] - best["unet_only"], 1e-9),
        "check": {"passed": near and js_err < 1e-3, "pixels": int(old.labels.size),
                  "labels_differing": len(differ), "all_differing_are_near_ties_lt_1e-3": near,
                  "js_max_abs_diff": js_err},
    }


def main() -> None:
    bu.standalone("segment_embedded", run, "16 images, one round")


if __name__ == "__main__":
    main()
