"""Labelled-count study (paper Table 4): direct-mode mIoU against the number of labelled images.

For each count and seed the ensemble is trained on a subset of the labelled images drawn from
(seed, count) and scored on the whole test split; the seed changes both the subset and the
ensemble's initialisation. Each image's features are computed once and reused for every subset
(the same fixed feature noise, so a subset sees exactly the features it would alone).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..direct import PerImageCache, evaluate_labels, fit_ensemble, segment
from ..ensemble.train import EnsembleTrainConfig
from ..errors import OptionError
from ..io import read_json, write_json
from ..seeds import stream_seed
from .common import train_and_test, write_study, write_study_config


@dataclass
class LabelledCountConfig:
    preset: str = "embedded"
    model: str | None = None
    counts: tuple[int, ...] = (5, 10, 20, 40)
    seeds: tuple[int, ...] = (0, 1, 2)
    test_images: int = 200
    members: int = 10  # EnsembleTrainConfig.members of every ensemble of the study (flat: study_config.json)

    @classmethod
    def quick(cls, model: str | None) -> "LabelledCountConfig":
        return cls(model=model, counts=(2, 4), seeds=(0, 1), test_images=4, members=2)


def subset(count: int, available: int, seed: int) -> np.ndarray:
    """Which `count` of the `available` labelled images seed `seed` trains on (sorted indices)."""
    rng = np.random.default_rng(stream_seed(seed, "labelled-subset", count))
    return np.sort(rng.choice(available, size=count, replace=False))


def run_labelled_count_study(out_dir: str | Path, data: str | Path, cfg: LabelledCountConfig, *,
                             device: str = "cpu", progress: bool = True) -> dict:
    from ..environment import provenance
    from ..workflows import resolve_problem, source_for
    out = Path(out_dir)
    problem = resolve_problem(cfg.preset, model=cfg.model)
    train, test = train_and_test(data, problem, cfg.test_images)
    if not cfg.counts or max(cfg.counts) > len(train) or min(cfg.counts) < 1:
        raise OptionError("--counts", f"need counts in [1, {len(train)}] (the labelled images in {data}), "
                                      f"got {list(cfg.counts)}")
    source = PerImageCache(source_for(problem, device=device))
    write_study_config(out, {"study": "labelled-count", **asdict(cfg), "data": str(data)})
    rows = {}
    for count in cfg.counts:
        runs = []
        for seed in cfg.seeds:
            saved = out / f"count-{count}" / f"seed-{seed}.json"
            if not saved.is_file():
                idx = subset(count, len(train), seed)
                ensemble, _ = fit_ensemble(source, train.images[idx], train.masks[idx],
                                           num_classes=problem.num_classes, ignore_label=problem.ignore_label,
                                           class_names=problem.class_names,
                                           train=EnsembleTrainConfig(members=cfg.members, seed=seed), progress=False)
                pred = segment(source, ensemble, test.images, progress=False).labels
                ev = evaluate_labels(pred, test.masks, problem.num_classes, problem.ignore_label, problem.class_names)
                write_json(saved, {"seed": seed, "images": idx.tolist(), "miou": ev.miou, "iou": ev.iou})
            runs.append(read_json(saved))
        mious = [r["miou"] for r in runs]
        rows[str(count)] = {"labelled_images": count, "miou_mean": float(np.mean(mious)),
                            "miou_std": float(np.std(mious)), "runs": runs}
    report = {"study": "labelled-count", "test_images": len(test), "seeds": list(cfg.seeds), "rows": rows,
              **provenance()}
    write_study(out, report, labelled_count_markdown, "labelled-count")
    return report


def labelled_count_markdown(report: dict) -> str:
    lines = [f"| labelled images | direct-mode mIoU (mean ± std over {len(report['seeds'])} seeds) | per seed |",
             "|---:|---:|---|"]
    for r in report["rows"].values():
        lines.append(f"| {r['labelled_images']} | {100 * r['miou_mean']:.1f} ± {100 * r['miou_std']:.1f} | "
                     + ", ".join(f"{100 * x['miou']:.1f}" for x in r["runs"]) + " |")
    return "\n".join(lines) + "\n"
