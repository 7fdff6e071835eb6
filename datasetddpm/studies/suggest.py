"""Suggest study: do the images `datasetddpm suggest` picks make better annotations than random ones?

Per seed, `start` images of the pool are drawn at random and labelled (the pool's exact masks stand
in for the annotator); an ensemble trained on them ranks the rest of the pool, and `add` more are
chosen by each arm: at random, by uncertainty alone, or by uncertainty with k-center diversity (the
`suggest` default). Each arm's ensemble on start + add images is scored in direct mode on the test
split. Seeds change the start set, the random picks and the ensembles' initialisation; the arms of
one seed share the start set. Intervals: the difference of mean mIoU to the random arm, resampling
test images (paired) and each arm's seeds (independently, which is conservative for seed-paired arms).
Resumable: every (seed, arm) result is saved as it is made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..direct import PerImageCache, fit_ensemble, segment
from ..ensemble.train import EnsembleTrainConfig
from ..errors import OptionError
from ..io import read_json, write_json
from ..segmenters.metrics import iou_per_class
from ..seeds import stream_seed
from .common import train_and_test, write_study, write_study_config
from ..suggest import choose
from .stats import hierarchical_bootstrap, interval_text, miou_of, per_item_confusions

ARMS = ("random", "uncertainty", "uncertainty+diversity")  # the first is the baseline


@dataclass
class SuggestStudyConfig:
    preset: str = "embedded"
    model: str | None = None
    start: int = 10  # labelled images every arm starts from
    add: int = 10  # images each arm adds
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    test_images: int = 200
    members: int = 10
    max_steps: int | None = None  # cap on each ensemble's optimisation steps (quick runs only)
    bootstrap: int = 2000

    @classmethod
    def quick(cls, model: str | None) -> "SuggestStudyConfig":
        return cls(model=model, start=1, add=1, seeds=(0, 1), test_images=4, members=2, max_steps=40, bootstrap=50)


def start_set(pool: int, start: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(stream_seed(seed, "suggest-start", 1))
    return np.sort(rng.choice(pool, size=start, replace=False))


def pick(arm: str, rest: np.ndarray, k: int, seed: int, source, ensemble, pool: np.ndarray) -> list[int]:
    """Pool indices `arm` adds, chosen from `rest` (indices into the `pool` images not yet labelled)."""
    if arm == "random":
        rng = np.random.default_rng(stream_seed(seed, "suggest-random", 1))
        return [int(i) for i in rng.choice(rest, size=k, replace=False)]
    chosen, _ = choose(source, ensemble, pool[rest], k, diversity=arm == "uncertainty+diversity")
    return [int(rest[i]) for i in chosen]


def run_suggest_study(out_dir: str | Path, data: str | Path, cfg: SuggestStudyConfig, *, device: str = "cpu",
                      progress: bool = True) -> dict:
    from ..environment import provenance
    from ..workflows import resolve_problem, source_for
    out = Path(out_dir)
    problem = resolve_problem(cfg.preset, model=cfg.model)
    pool, test = train_and_test(data, problem, cfg.test_images)
    if cfg.start < 1 or cfg.add < 1 or cfg.start + cfg.add > len(pool):
        raise OptionError("--start/--add", f"need start + add <= {len(pool)} (the labelled pool in {data}), got "
                                           f"{cfg.start} + {cfg.add}")
    source = PerImageCache(source_for(problem, device=device))
    write_study_config(out, {"study": "suggest", **asdict(cfg), "data": str(data)})

    def fit_and_score(idx, seed):
        ensemble, _ = fit_ensemble(source, pool.images[idx], pool.masks[idx], num_classes=problem.num_classes,
                                   ignore_label=problem.ignore_label, class_names=problem.class_names,
                                   train=EnsembleTrainConfig(members=cfg.members, seed=seed, max_steps=cfg.max_steps), progress=False)
        pred = segment(source, ensemble, test.images, progress=False).labels
        return ensemble, per_item_confusions(pred, test.masks, problem.num_classes, problem.ignore_label)

    confusions = {arm: [] for arm in ARMS}
    runs = {arm: [] for arm in ARMS}
    for seed in cfg.seeds:
        first = start_set(len(pool), cfg.start, seed)
        ensemble = None
        for arm in ARMS:
            saved = out / f"seed-{seed}" / arm
            if not (saved / "result.json").is_file():
                if ensemble is None:
                    ensemble, start_cms = fit_and_score(first, seed)
                rest = np.setdiff1d(np.arange(len(pool)), first)
                added = pick(arm, rest, cfg.add, seed, source, ensemble, pool.images)
                _, cms = fit_and_score(np.sort(np.r_[first, added]), seed)
                np.save(_npy(saved), cms)
                write_json(saved / "result.json", {"seed": seed, "start": first.tolist(), "added": added,
                                                   "start_miou": miou_of(start_cms, problem.ignore_label),
                                                   "miou": miou_of(cms, problem.ignore_label)})
            runs[arm].append(read_json(saved / "result.json"))
            confusions[arm].append(np.load(_npy(saved)))
    report = _report(cfg, runs, {a: np.stack(c) for a, c in confusions.items()}, problem, len(test))
    report.update(provenance())
    write_study(out, report, suggest_markdown, "suggest")
    return report


def _npy(saved: Path) -> Path:
    saved.mkdir(parents=True, exist_ok=True)
    return saved / "test_confusions.npy"


def _report(cfg: SuggestStudyConfig, runs: dict, confusions: dict, problem, test_images: int) -> dict:
    names = problem.class_names or tuple(str(k) for k in range(problem.num_classes))
    rows = {}
    for arm in ARMS:
        per_seed = [r["miou"] for r in runs[arm]]
        total = confusions[arm].sum(axis=1)  # (seeds, K, K)
        iou = np.array([list(iou_per_class(cm, problem.ignore_label).values()) for cm in total])
        rows[arm] = {"miou_mean": float(np.mean(per_seed)), "miou_std": float(np.std(per_seed)),
                     "miou_per_seed": per_seed, "iou_mean": dict(zip(names, iou.mean(0).round(4).tolist())),
                     "added": [r["added"] for r in runs[arm]]}
        if arm != ARMS[0]:
            rows[arm]["vs_random"] = hierarchical_bootstrap(confusions[ARMS[0]], confusions[arm],
                                                            ignore_label=problem.ignore_label, resamples=cfg.bootstrap)
    start = [r["start_miou"] for r in runs[ARMS[0]]]
    return {"study": "suggest", "start": cfg.start, "add": cfg.add, "seeds": list(cfg.seeds), "test_images": test_images,
            "start_miou_mean": float(np.mean(start)), "start_miou_std": float(np.std(start)), "arms": rows}


def suggest_markdown(report: dict) -> str:
    n, s, a = len(report["seeds"]), report["start"], report["add"]
    names = list(next(iter(report["arms"].values()))["iou_mean"])
    lines = [f"Start: {s} random labelled images, direct-mode mIoU {100 * report['start_miou_mean']:.1f} ± "
             f"{100 * report['start_miou_std']:.1f}; each arm adds {a} ({report['test_images']} test images, {n} seeds).",
             "", f"| {s} + {a} images chosen by | mIoU (mean ± std) | Δ vs random (95 % CI) | "
             + " | ".join(names) + " |", "|---|---:|---|" + "---:|" * len(names)]
    for arm, r in report["arms"].items():
        delta = interval_text(r.get("vs_random"))
        lines.append(f"| {arm} | {100 * r['miou_mean']:.1f} ± {100 * r['miou_std']:.1f} | {delta} | "
                     + " | ".join(f"{100 * v:.0f}" for v in r["iou_mean"].values()) + " |")
    return "\n".join(lines) + "\n"
