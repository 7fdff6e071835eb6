"""Which decoder blocks and diffusion steps carry the semantics (the paper's Fig. 2) for any model.

One small MLP (a one-member ensemble, same recipe) per (block, step) on a few labelled images,
evaluated by mIoU on held-out images. Each UNet pass serves every block of its step.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .direct import CachedSource, Evaluation, FeatureSource, evaluate_labels, fit_ensemble, segment
from .ensemble.train import EnsembleTrainConfig
from .generators.base import FeatureSpec
from .io import atomic_path, write_json
from .progress import progress_bar
from .segmenters.class_report import class_report, pixel_counts


def run_probe(generator, train_images: np.ndarray, train_masks: np.ndarray, test_images: np.ndarray,
              test_masks: np.ndarray, *, blocks: tuple[int, ...], steps: tuple[int, ...], num_classes: int,
              ignore_label: int = 255, noise_seed: int = 0, seed: int = 0, max_epochs: int = 100,
              progress: bool = True, class_names: tuple[str, ...] | None = None) -> dict:
    """mIoU grid[step][block] of one MLP per cell; with `class_names`, also each cell's per-class report
    (`probe_class_report`)."""
    grid = np.zeros((len(steps), len(blocks)))
    confusions: dict[tuple[int, int], np.ndarray] = {}
    t0 = time.time()
    with progress_bar(progress) as bar:
        task = bar.add_task("probe", total=len(steps) * len(blocks), info="")
        for si, t in enumerate(steps):
            full = FeatureSource(generator, FeatureSpec(tuple(blocks), (t,), noise_seed))
            cache: dict = {}  # one UNet pass per image batch serves every block of this step
            for bi, b in enumerate(blocks):
                cell = CachedSource(full, select=bi, cache=cache)
                ev = probe_cell(cell, train_images, train_masks, test_images, test_masks, num_classes=num_classes,
                                ignore_label=ignore_label, seed=seed, max_epochs=max_epochs)
                grid[si, bi], confusions[si, bi] = ev.miou, ev.confusion
                bar.update(task, advance=1, info=f"t={t} block={b} mIoU={100 * grid[si, bi]:.1f}")
    result = {"blocks": list(blocks), "steps": list(steps), "miou": grid.tolist(),
              "train_images": len(train_images), "test_images": len(test_images), "seconds": round(time.time() - t0, 1)}
    if class_names is not None:  # only when asked: probe.json keeps its keys otherwise
        result["class_report"] = probe_class_report(confusions, steps, blocks, class_names, ignore_label,
                                                    pixel_counts(train_masks, num_classes, ignore_label))
    return result


def probe_class_report(confusions: dict, steps, blocks, names: tuple[str, ...], ignore_label: int,
                       train_pixels: list[int]) -> dict:
    """Per cell the IoU of every class and the mIoU of the small and of the large classes (grids [step][block],
    split by the classes' shares of the training masks' pixels), and the full report of the best cell."""
    reports = {cell: class_report(cm, names, ignore_label, train_pixels, "the training masks' pixels")
               for cell, cm in confusions.items()}
    rows, cols = range(len(steps)), range(len(blocks))
    # The best cell as `best_cell` picks it: highest mIoU, ties to the larger step, then block.
    best = max(reports, key=lambda c: (reports[c]["miou"]["all"], steps[c[0]], blocks[c[1]]))
    return {"split_by": reports[best]["split_by"], "median_share": reports[best]["median_share"],
            "groups": {name: row["group"] for name, row in reports[best]["classes"].items()},
            "miou_small": [[reports[r, c]["miou"]["small"] for c in cols] for r in rows],
            "miou_large": [[reports[r, c]["miou"]["large"] for c in cols] for r in rows],
            "class_iou": [[{n: row["iou"] for n, row in reports[r, c]["classes"].items()} for c in cols] for r in rows],
            "best_cell": {"step": steps[best[0]], "block": blocks[best[1]], **reports[best]}}


def probe_cell(cell: FeatureSource, train_images: np.ndarray, train_masks: np.ndarray, test_images: np.ndarray,
               test_masks: np.ndarray, *, num_classes: int, ignore_label: int = 255, class_names: tuple[str, ...] = (),
               seed: int = 0, max_epochs: int = 100, max_steps: int | None = None) -> Evaluation:
    """One cell's MLP (a one-member ensemble, the ensemble's recipe) trained on the labelled images and
    scored on the held-out ones."""
    train = EnsembleTrainConfig(members=1, seed=seed, max_epochs=max_epochs, max_steps=max_steps)
    ens, _ = fit_ensemble(cell, train_images, train_masks, num_classes=num_classes, ignore_label=ignore_label,
                          train=train, progress=False)
    seg = segment(cell, ens, test_images, progress=False)
    return evaluate_labels(seg.labels, test_masks, num_classes, ignore_label, class_names)


def best_cell(result: dict) -> tuple[float, int, int]:
    """(mIoU, step, block) of the best cell of a probe grid."""
    return max((v, s, b) for s, row in zip(result["steps"], result["miou"]) for b, v in zip(result["blocks"], row))


def save_probe(result: dict, out_dir: str | Path) -> None:
    """probe.json + probe.png (heatmap: steps x blocks, mIoU in %)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .environment import provenance
    out = Path(out_dir)
    write_json(out / "probe.json", {**result, **provenance()})
    grid = np.array(result["miou"]) * 100
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * grid.shape[1], 1.0 + 0.5 * grid.shape[0]))
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [str(b) for b in result["blocks"]])
    ax.set_yticks(range(grid.shape[0]), [str(s) for s in result["steps"]])
    ax.set_xlabel("decoder block (ADM output_blocks, deep -> shallow)")
    ax.set_ylabel("diffusion step t")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax, label="mIoU (%)")
    fig.tight_layout()
    with atomic_path(out / "probe.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
