"""The end-to-end demo on the embedded default: direct DDPM mode against the colour baseline.

Writes a labelled procedural dataset, trains the pixel ensemble on diffusion features of the 20
labelled images, segments the held-out test set, and does the same with RGB-3x3 colour features.
With several seeds it reports mean +- std; every stage is timed.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .data.folders import read_labelled, write_procedural_dataset
from .direct import CachedSource, FeatureSource, evaluate_labels, fit_ensemble, segment
from .ensemble.model import save_ensemble
from .ensemble.train import EnsembleTrainConfig
from .generators.diffusion import load_generator
from .io import write_json
from .presets import EMBEDDED


def run_demo(out: str | Path, *, train: int = 20, test: int = 200, seeds: tuple[int, ...] = (0,),
             model: str = "embedded", train_cfg: EnsembleTrainConfig | None = None, progress: bool = True,
             log=print) -> dict:
    out = Path(out)
    timings: dict[str, float] = {}
    preset = EMBEDDED

    t = time.time()
    write_procedural_dataset(out / "data", train=train, test=test)
    train_set = read_labelled(out / "data" / "real" / "train", preset.num_classes, preset.ignore_label)
    test_set = read_labelled(out / "data" / "real" / "test", preset.num_classes, preset.ignore_label)
    timings["dataset"] = time.time() - t

    generator = load_generator(model)
    methods = {"direct DDPM": CachedSource(FeatureSource(generator, preset.features)),
               "colour RGB-3x3": CachedSource(FeatureSource())}
    results: dict[str, list[dict]] = {name: [] for name in methods}
    for name, source in methods.items():
        for seed in seeds:
            t = time.time()
            ensemble, train_log = fit_ensemble(source, train_set.images, train_set.masks,
                                               num_classes=preset.num_classes, ignore_label=preset.ignore_label,
                                               class_names=preset.class_names,
                                               train=replace(train_cfg or EnsembleTrainConfig(), seed=seed),
                                               progress=progress)
            t_train = time.time() - t
            t = time.time()
            seg = segment(source, ensemble, test_set.images, progress=progress)
            t_seg = time.time() - t
            ev = evaluate_labels(seg.labels, test_set.masks, preset.num_classes, preset.ignore_label,
                                 preset.class_names)
            if seed == seeds[0]:
                save_ensemble(out / ("ensemble" if name == "direct DDPM" else "ensemble_colour"), ensemble,
                              {"training": {**train_log, "seed": seed}})
            results[name].append({"seed": seed, "miou": ev.miou, "iou": ev.iou, "train_seconds": round(t_train, 2),
                                  "segment_seconds": round(t_seg, 2)})
            timings[f"{name}: train (seed {seed})"] = t_train
            timings[f"{name}: segment {test} images (seed {seed})"] = t_seg
            log(f"{name} seed {seed}: mIoU {100 * ev.miou:.1f}")

    summary = {name: {"miou_mean": float(np.mean([r["miou"] for r in rs])),
                      "miou_std": float(np.std([r["miou"] for r in rs])),
                      "runs": rs} for name, rs in results.items()}
    report = {"train_images": train, "test_images": test, "seeds": list(seeds), "model": model,
              "features": preset.features.to_dict(), "results": summary,
              "timings_seconds": {k: round(v, 2) for k, v in timings.items()}}
    write_json(out / "demo.json", report)
    return report
