"""Features study (paper Fig. 2-3 and Table 5): which decoder blocks and diffusion steps carry the
semantics, for small and for large classes, and does one noise tensor shared by all images matter?

Grid: one small MLP per (block, step) and grid seed (a one-member ensemble, `probe`'s recipe), trained on
real/train and scored on real/test with per-class IoU. The classes are split by the data: a class is
small when its pixel share of the labelled training masks is below the median share of the classes.

Noise: the toolkit noises every image with the same eps (FeatureSpec.noise_seed); the alternative gives
each image its own eps, seeded by the image's bytes and the spec's seed (deterministic, and independent
of the batch an image comes in). Both at the preset's features with the full ensemble over training
seeds; the interval on independent - shared resamples the test images (paired) and each side's seeds.

Resumable: every grid cell and every (noise mode, seed) is saved as it is made.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..direct import CachedSource, FeatureSource, PerImageCache, fit_ensemble, segment
from ..ensemble.train import EnsembleTrainConfig
from ..errors import OptionError
from ..generators.base import FeatureSpec
from ..io import atomic_path, read_json, write_json
from ..progress import progress_bar
from ..segmenters.metrics import iou_per_class, mean_iou
from .common import train_and_test, write_study, write_study_config
from .stats import hierarchical_bootstrap, per_item_confusions

NOISE_MODES = ("shared", "independent")  # the first is the toolkit's: the baseline
GROUPS = ("all", "small", "large")


@dataclass
class FeaturesStudyConfig:
    preset: str = "embedded"
    model: str | None = None
    blocks: tuple[int, ...] | None = None  # None: every decoder block of the model
    steps: tuple[int, ...] = (10, 25, 50, 100, 200, 400, 700)
    grid_seeds: tuple[int, ...] = (0,)  # every cell is one MLP per seed: one seed bounds the cost
    seeds: tuple[int, ...] = (0, 1, 2)  # ensemble training seeds of the noise comparison
    test_images: int = 200
    members: int = 10  # the noise comparison's ensembles (the grid's probes have one member)
    max_steps: int | None = None  # cap on every MLP's optimisation steps (quick runs only)
    bootstrap: int = 2000

    @classmethod
    def quick(cls, model: str | None) -> "FeaturesStudyConfig":
        return cls(model=model, blocks=(1, 4), steps=(10, 100), seeds=(0, 1), test_images=4, members=2,
                   max_steps=40, bootstrap=50)


def image_noise_seed(image: torch.Tensor, noise_seed: int) -> int:
    """The noise seed of one (3, H, W) image: a hash of its bytes and the spec's seed."""
    h = hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=8, salt=noise_seed.to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little") >> 1


class IndependentNoiseSource(FeatureSource):
    """`base`'s features with every image noised by its own eps: one `feature_maps` call per image with
    that image's noise seed, so an image's maps do not depend on its batch."""

    def __init__(self, base: FeatureSource):
        super().__init__(base.generator, base.spec)

    def maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        per_image = [self.generator.feature_maps(x[None], replace(self.spec, noise_seed=image_noise_seed(
            x, self.spec.noise_seed))) for x in images]
        return [torch.cat(maps) for maps in zip(*per_image)]

    def describe(self) -> dict:
        return {**self.spec.to_dict(), "noise": "independent per image"}


def size_split(shares: dict[str, float]) -> dict:
    """Small classes: pixel share below the median share of the classes; the others are large."""
    median = float(np.median(list(shares.values())))
    return {"pixel_share": shares, "median_share": median, "small": [n for n, s in shares.items() if s < median],
            "large": [n for n, s in shares.items() if s >= median]}


def class_split(masks: np.ndarray, names: tuple[str, ...], ignore_label: int) -> dict:
    """`size_split` of the classes' pixel shares in labelled masks (ignored pixels left out)."""
    counts = np.bincount(masks[masks != ignore_label].ravel(), minlength=len(names))[:len(names)]
    evaluated = [k for k in range(len(names)) if k != ignore_label]
    total = max(int(counts[evaluated].sum()), 1)
    return size_split({names[k]: float(counts[k] / total) for k in evaluated})


def group_mious(cm: np.ndarray, names: tuple[str, ...], split: dict, ignore_label: int) -> dict:
    """mIoU of a (K, K) confusion over all classes and over the small and the large ones (None: no class)."""
    iou = iou_per_class(cm, ignore_label)
    out = {"all": mean_iou(cm, ignore_label)}
    for group in ("small", "large"):
        values = [iou[names.index(n)] for n in split[group]]
        out[group] = float(np.mean(values)) if values else None
    return out


def _grid_cells(out: Path, gen, train, test, problem, cfg: FeaturesStudyConfig, blocks, progress) -> list[dict]:
    """One saved result per (step, grid seed, block): mIoU, per-class IoU and the test confusion."""
    from ..probe import probe_cell
    cells = []
    with progress_bar(progress) as bar:
        task = bar.add_task("grid", total=len(cfg.steps) * len(cfg.grid_seeds) * len(blocks), info="")
        for t in cfg.steps:
            full = FeatureSource(gen, FeatureSpec(tuple(blocks), (t,), problem.spec.noise_seed))
            cache: dict = {}  # one UNet pass per image batch serves every block and seed of this step
            for seed in cfg.grid_seeds:
                for bi, b in enumerate(blocks):
                    saved = out / "grid" / f"seed-{seed}" / f"step-{t}" / f"block-{b}.json"
                    if not saved.is_file():
                        ev = probe_cell(CachedSource(full, select=bi, cache=cache), train.images, train.masks,
                                        test.images, test.masks, num_classes=problem.num_classes,
                                        ignore_label=problem.ignore_label, class_names=problem.class_names,
                                        seed=seed, max_steps=cfg.max_steps)
                        write_json(saved, {"seed": seed, "step": t, "block": b, "miou": ev.miou, "iou": ev.iou,
                                           "confusion": ev.confusion.tolist()})
                    cells.append(read_json(saved))
                    bar.update(task, advance=1, info=f"t={t} block={b} mIoU={100 * cells[-1]['miou']:.1f}")
    return cells


def _noise_confusions(out: Path, base: FeatureSource, train, test, problem, cfg: FeaturesStudyConfig) -> dict:
    """(seeds, test images, K, K) confusions of the full ensemble per noise mode."""
    confusions = {}
    for mode in NOISE_MODES:
        # Features computed once per image, reused by every seed; one mode's cache at a time.
        source = PerImageCache(base if mode == "shared" else IndependentNoiseSource(base))
        runs = []
        for seed in cfg.seeds:
            saved = out / "noise" / mode / f"seed-{seed}.npy"
            if not saved.is_file():
                ensemble, _ = fit_ensemble(source, train.images, train.masks, num_classes=problem.num_classes,
                                           ignore_label=problem.ignore_label, class_names=problem.class_names,
                                           train=EnsembleTrainConfig(members=cfg.members, seed=seed,
                                                                     max_steps=cfg.max_steps), progress=False)
                pred = segment(source, ensemble, test.images, progress=False).labels
                with atomic_path(saved) as tmp, open(tmp, "wb") as f:
                    np.save(f, per_item_confusions(pred, test.masks, problem.num_classes, problem.ignore_label))
            runs.append(np.load(saved))
        confusions[mode] = np.stack(runs)
    return confusions


def run_features_study(out_dir: str | Path, data: str | Path, cfg: FeaturesStudyConfig, *, device: str = "cpu",
                       progress: bool = True) -> dict:
    from ..environment import provenance
    from ..workflows import resolve_problem, source_for
    out = Path(out_dir)
    problem = resolve_problem(cfg.preset, model=cfg.model)
    for option, values in (("--steps", cfg.steps), ("--grid-seeds", cfg.grid_seeds), ("--seeds", cfg.seeds)):
        if not values:
            raise OptionError(option, "need at least one value")
    if cfg.test_images < 1:
        raise OptionError("--test-images", f"must be >= 1, got {cfg.test_images}")
    train, test = train_and_test(data, problem, cfg.test_images)
    base = source_for(problem, device=device)
    blocks = tuple(range(len(base.generator.blocks))) if cfg.blocks is None else cfg.blocks
    base.generator.check_spec(FeatureSpec(blocks, cfg.steps))
    write_study_config(out, {"study": "features", **asdict(cfg), "data": str(data)})
    split = class_split(train.masks, problem.class_names, problem.ignore_label)
    cells = _grid_cells(out, base.generator, train, test, problem, cfg, blocks, progress)
    noise = _noise_confusions(out, base, train, test, problem, cfg)
    report = {"study": "features", "model": problem.model, "train_images": len(train), "test_images": len(test),
              "class_split": split, "grid": grid_summary(cells, blocks, cfg, problem, split),
              "noise": noise_summary(noise, problem, split, cfg), **provenance()}
    write_study(out, report, features_markdown, "features")
    return report


def grid_summary(cells: list[dict], blocks, cfg: FeaturesStudyConfig, problem, split: dict) -> dict:
    """Per group (all / small / large), the mIoU grid [step][block] averaged over grid seeds, and its best cell."""
    per_cell = {}
    for c in cells:
        cm = np.array(c["confusion"])
        per_cell.setdefault((c["step"], c["block"]), []).append(
            group_mious(cm, problem.class_names, split, problem.ignore_label))
    grids, best = {}, {}
    for g in GROUPS:
        grid = [[None if per_cell[t, b][0][g] is None else float(np.mean([m[g] for m in per_cell[t, b]]))
                 for b in blocks] for t in cfg.steps]
        grids[g] = grid
        scored = [(v, t, b) for t, row in zip(cfg.steps, grid) for b, v in zip(blocks, row) if v is not None]
        if scored:
            v, t, b = max(scored, key=lambda x: x[0])  # ties: the smallest step, then block
            best[g] = {"miou": v, "step": t, "block": b}
    std = [[float(np.std([m["all"] for m in per_cell[t, b]])) for b in blocks] for t in cfg.steps]
    return {"blocks": list(blocks), "steps": list(cfg.steps), "seeds": list(cfg.grid_seeds), "miou": grids,
            "miou_std": std, "best": best,
            "cells": [{k: c[k] for k in ("seed", "step", "block", "miou", "iou")} for c in cells]}


def noise_summary(confusions: dict, problem, split: dict, cfg: FeaturesStudyConfig) -> dict:
    """Per noise mode, mIoU over seeds (all, small and large classes), and independent - shared."""
    def mean(values):
        return None if None in values else float(np.mean(values))
    modes = {}
    for mode, cms in confusions.items():
        per_seed = [group_mious(c.sum(0), problem.class_names, split, problem.ignore_label) for c in cms]
        overall = [m["all"] for m in per_seed]
        modes[mode] = {"miou_mean": float(np.mean(overall)), "miou_std": float(np.std(overall)),
                       "miou_small_mean": mean([m["small"] for m in per_seed]),
                       "miou_large_mean": mean([m["large"] for m in per_seed]), "miou_per_seed": overall}
    diff = hierarchical_bootstrap(confusions["shared"], confusions["independent"], ignore_label=problem.ignore_label,
                                  resamples=cfg.bootstrap)
    return {"features": problem.spec.to_dict(), "members": cfg.members, "seeds": list(cfg.seeds), "modes": modes,
            "independent_vs_shared": diff}


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def features_markdown(report: dict) -> str:
    grid, split, noise = report["grid"], report["class_split"], report["noise"]
    share = ", ".join(f"{n} {100 * s:.1f} %" for n, s in split["pixel_share"].items())
    lines = [f"One MLP per cell, {report['train_images']} labelled / {report['test_images']} test images, "
             f"grid seed{'s' if len(grid['seeds']) > 1 else ''} {', '.join(map(str, grid['seeds']))}. Classes "
             f"by pixel share of the labelled masks ({share}); small = below the median "
             f"({100 * split['median_share']:.1f} %): {', '.join(split['small']) or 'none'}; large: "
             f"{', '.join(split['large'])}.", ""]
    for g in GROUPS:
        best = grid["best"].get(g)
        if best is None:
            continue
        lines += [f"mIoU over {g} classes (best **bold**: block {best['block']} at t = {best['step']}, "
                  f"{_pct(best['miou'])}):", "",
                  "| t \\ block | " + " | ".join(map(str, grid["blocks"])) + " |",
                  "|---:|" + "---:|" * len(grid["blocks"])]
        for t, row in zip(grid["steps"], grid["miou"][g]):
            cells = [f"**{_pct(v)}**" if (t, b) == (best["step"], best["block"]) else _pct(v)
                     for b, v in zip(grid["blocks"], row)]
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        lines.append("")
    f, d = noise["features"], noise["independent_vs_shared"]
    lines += [f"Feature noise, blocks {f['blocks']} x t {f['steps']}, {noise['members']}-member ensembles over "
              f"{len(noise['seeds'])} training seeds:", "",
              "| noise | mIoU (mean ± std) | small | large | per seed |", "|---|---:|---:|---:|---|"]
    for mode, r in noise["modes"].items():
        lines.append(f"| {mode} | {_pct(r['miou_mean'])} ± {_pct(r['miou_std'])} | {_pct(r['miou_small_mean'])} | "
                     f"{_pct(r['miou_large_mean'])} | " + ", ".join(map(_pct, r["miou_per_seed"])) + " |")
    lines += ["", f"Independent - shared: {100 * d['difference']:+.1f} [{100 * d['ci_low']:+.1f}, "
                  f"{100 * d['ci_high']:+.1f}] mIoU (95 % CI over test images and seeds"
                  + (")." if d["significant"] else "; not significant).")]
    return "\n".join(lines) + "\n"
