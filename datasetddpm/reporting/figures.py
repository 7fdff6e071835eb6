"""Figures for people: preview grids, the uncertainty histogram, training curves, compare charts.

Matplotlib draws through its Agg canvas on `Figure` objects (no pyplot, so no global backend switch and
no window). Every PNG has a fixed size (figsize x DPI, no tight bounding box) and no "Software"
metadata, so the same inputs give the same bytes: the kill-anywhere tests compare output folders byte
for byte, pictures included. Files are written with `atomic_path` like every other output.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullFormatter
from PIL import Image

from ..data.images import palette_for
from ..io import atomic_path
from ..data.overlays import image_grid, overlay

DPI = 100
PNG_METADATA = {"Software": None}  # matplotlib would stamp its version: bytes would change with it


TILE_SIDE = 96  # pixels a tile gets in a figure: 32 px samples are upscaled 3x, 256 px ones shrunk


def fit_tiles(tiles: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Tiles shrunk (box filter) when larger than TILE_SIDE, so matplotlib never resamples a huge grid,
    and the integer upscaling that brings small ones near it."""
    side = tiles[0].shape[1]
    if side > TILE_SIDE:
        size = (TILE_SIDE, round(tiles[0].shape[0] * TILE_SIDE / side))
        tiles = [np.asarray(Image.fromarray(t).resize(size, Image.BOX)) for t in tiles]
    return tiles, max(1, TILE_SIDE // tiles[0].shape[1])


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata=PNG_METADATA, facecolor="white")
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path) -> Path:
    data = figure_png(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def class_legend(fig: Figure, class_names: tuple[str, ...] | list[str], num_classes: int) -> None:
    """One coloured patch per class, in the palette the masks are drawn with, along the bottom."""
    palette = palette_for(num_classes)
    names = list(class_names) or [str(k) for k in range(num_classes)]
    handles = [Patch(facecolor=np.array(palette[k]) / 255, edgecolor="black", label=names[k])
               for k in range(min(num_classes, len(names)))]
    # Constrained layout makes room below an outside legend but never widens the figure: with long names a
    # row of 8 ran past the right edge. Fewer columns (more rows) until the legend fits the width.
    renderer = fig.canvas.get_renderer()
    for ncols in range(min(len(handles), 8), 0, -1):
        legend = fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=8, frameon=False)
        if ncols == 1 or legend.get_window_extent(renderer).width <= 0.98 * fig.bbox.width:
            return
        legend.remove()


def tile_section(ax, images: list[np.ndarray], masks: list[np.ndarray] | None, num_classes: int,
                 title: str, captions: list[str] | None = None) -> None:
    """Images in one row and, with masks, their label overlays in the row below (one make_grid picture),
    a caption under each column."""
    tiles = list(images) + ([overlay(im, m, num_classes) for im, m in zip(images, masks)] if masks else [])
    tiles, scale = fit_tiles(tiles)
    ax.imshow(image_grid(tiles, len(images), scale=scale, pad=2), interpolation="nearest")
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_xticks([])
    ax.set_yticks([])
    if captions:
        step = (tiles[0].shape[1] + 2) * scale  # tile width plus make_grid's padding, upscaled
        ax.set_xticks([step * (i + 0.5) for i in range(len(captions))], captions, fontsize=7)
        ax.tick_params(length=0)


def preview_figure(sections: list[dict], class_names, num_classes: int, title: str) -> Figure:
    """`sections`: dicts with title, images, masks (or None) and captions, drawn top to bottom."""
    columns = max(len(s["images"]) for s in sections)
    rows = sum(2 if s.get("masks") else 1 for s in sections)
    fig = new_figure(max(6.0, 1.1 * columns), 0.9 + 1.25 * rows + 0.35 * len(sections))
    axes = fig.subplots(len(sections), 1, squeeze=False,
                        height_ratios=[2 if s.get("masks") else 1 for s in sections])[:, 0]
    for ax, s in zip(axes, sections):
        tile_section(ax, s["images"], s.get("masks"), num_classes, s["title"], s.get("captions"))
    fig.suptitle(title, fontsize=10)
    if any(s.get("masks") for s in sections):
        class_legend(fig, class_names, num_classes)
    return fig


def drop_threshold(uncertainty: np.ndarray, kept: np.ndarray) -> float | None:
    """The JS score that separates kept from dropped images (the largest kept score); None when none
    was dropped."""
    if kept.all() or not kept.any():
        return None
    return float(uncertainty[kept].max())


def uncertainty_figure(uncertainty: np.ndarray, kept: np.ndarray, drop_fraction: float,
                       what: str = "generated images") -> Figure:
    """Histogram of the per-image JS scores, kept and dropped stacked, the drop threshold marked; `what` the
    images are (a `label-images` run's are real)."""
    fig = new_figure(6.4, 3.6)
    ax = fig.add_subplot()
    edges = np.histogram_bin_edges(uncertainty, bins=min(40, max(5, len(uncertainty) // 4)))
    ax.hist([uncertainty[kept], uncertainty[~kept]], bins=edges, stacked=True, color=["#4c78a8", "#e45756"],
            label=[f"kept ({int(kept.sum())})", f"dropped ({int((~kept).sum())})"])
    threshold = drop_threshold(uncertainty, kept)
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1,
                   label=f"drop threshold: JS > {threshold:.4g}")
    ax.set_xlabel("image uncertainty (JS score: mean JS divergence of its 10 % most uncertain pixels)",
                  fontsize=8)
    ax.set_ylabel("images")
    ax.set_title(f"{len(uncertainty)} {what}; --drop-fraction {drop_fraction:g}", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def curves_figure(x: list, panels: dict[str, dict[str, list]], xlabel: str, title: str,
                  log_y: tuple[str, ...] = ()) -> Figure:
    """One panel per entry of `panels` (panel title -> series label -> values over `x`)."""
    fig = new_figure(max(6.4, 4.2 * len(panels)), 3.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, series) in zip(axes, panels.items()):
        for label, values in series.items():
            ax.plot(x[:len(values)], values, marker="o" if len(values) <= 30 else None, markersize=3, label=label)
        values = [v for s in series.values() for v in s]
        if name in log_y and values and min(values) > 0 and max(values) > 10 * min(values):
            ax.set_yscale("log")  # only over a decade or more: a narrow log axis has unreadable labels
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and steps are whole numbers
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


# What each trainer's log holds: x key, then panel title -> log key (train-ddpm and train-deeplab logs).
LOG_PANELS = {
    "step": {"training loss (MSE on the noise)": "loss", "learning rate": "lr"},
    "epoch": {"training loss (cross-entropy)": "loss", "validation mIoU (%, real images)": "val_miou"},
}
# Logs and JSON keep mIoU as a fraction (0.604); what people read (console, markdown, axes) says 60.4 %.
PERCENT_KEYS = ("val_miou",)


def plot_training_rows(records: list[dict], out_png: str | Path, title: str) -> Path:
    """A trainer's log rows (train_log.jsonl: one record per step or epoch) -> loss and validation /
    learning-rate curves."""
    x_key = "step" if records and "step" in records[0] else "epoch"
    panels = {name: {key: [(100 * r[key] if key in PERCENT_KEYS else r[key]) for r in records]}
              for name, key in LOG_PANELS[x_key].items() if records and key in records[0]}
    return save_figure(curves_figure([r[x_key] for r in records], panels, x_key, title,
                                     log_y=("training loss (MSE on the noise)",)), out_png)


def plot_ensemble_log(training: dict, out_png: str | Path) -> Path:
    """The ensemble's training log (ensemble.json "training") -> mean loss of the training members per epoch."""
    losses = training["loss_per_epoch"]
    fig = curves_figure(list(range(len(losses))), {"training loss (cross-entropy)": {"members still training": losses}},
                        "epoch", f"train-ensemble: {training.get('members', '?')} members, "
                                 f"{training.get('pixels', '?')} labelled pixels")
    return save_figure(fig, out_png)


def read_rgb(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_mask(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


PREVIEW_COLUMNS = 6


def _section(run: Path, rows: list[dict], title: str) -> dict:
    return {"title": title, "images": [read_rgb(run / r["image"]) for r in rows],
            "masks": [read_mask(run / r["mask"]) for r in rows],
            "captions": [f"#{r['id']} JS {r['uncertainty']:.3g}" for r in rows]}


def write_finalize_figures(run: str | Path, rows: list[dict], keep: set[int], *, class_names, num_classes: int,
                           drop_fraction: float) -> tuple[Path, Path]:
    """RUN/preview.png (least and most uncertain kept pairs, the most uncertain dropped ones, legend) and
    RUN/uncertainty.png (the JS histogram with the drop threshold). `rows` are finalize's index rows."""
    run = Path(run)
    what = run_images(run)
    order = sorted(rows, key=lambda r: (r["uncertainty"], r["id"]))  # the order finalize ranks by
    kept = [r for r in order if r["id"] in keep]
    dropped = [r for r in order if r["id"] not in keep][::-1]
    n = PREVIEW_COLUMNS
    sections = [_section(run, kept[:n], f"least uncertain kept pairs ({len(kept)} kept)"),
                _section(run, kept[::-1][:n], "most uncertain kept pairs")]
    if dropped:
        sections.append(_section(run, dropped[:n], f"most uncertain dropped {what} images ({len(dropped)} dropped)"))
    preview = save_figure(preview_figure(sections, class_names, num_classes, f"{run.name}: images and their labels"),
                          run / "preview.png")
    scores = np.array([r["uncertainty"] for r in rows], dtype=np.float64)
    is_kept = np.array([r["id"] in keep for r in rows])
    histogram = save_figure(uncertainty_figure(scores, is_kept, drop_fraction, f"{what} images"),
                            run / "uncertainty.png")
    return preview, histogram


def run_images(run: Path) -> str:
    """What a run's images are, for titles: "real" in a `label-images` run (its manifest's sampler says so),
    else "generated"."""
    from ..pipeline.real_images import SAMPLER
    try:
        sampler = json.loads((run / "manifest.json").read_text())["config"]["sampler"]
    except (OSError, ValueError, KeyError, TypeError):
        sampler = None
    return "real" if sampler == SAMPLER else "generated"


def write_samples_preview(run: str | Path, preview) -> Path:
    """RUN/samples_preview.png: the first committed samples, with their label overlays once labelled (what
    `sample` / `label` made so far, before `finalize` ranks them), as `pipeline.preview.first_committed_samples`
    read them from the run."""
    run = Path(run)
    images, masks, captions = preview.images, preview.masks, preview.captions
    num_classes, names = preview.num_classes, preview.class_names
    with_masks = num_classes > 0
    half = (len(images) + 1) // 2 if len(images) > PREVIEW_COLUMNS else len(images)
    what = "real images" if preview.real else "samples"
    title = f"{what} and their labels" if with_masks else f"{what} (not labelled yet)"
    sections = [{"title": title if a == 0 else "", "images": images[a:b], "masks": masks[a:b] if with_masks else None,
                 "captions": captions[a:b]} for a, b in ((0, half), (half, len(images))) if b > a]
    fig = preview_figure(sections, names, num_classes, f"{run.name}: the first {len(images)} {what}")
    return save_figure(fig, run / "samples_preview.png")


METHOD_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2")


def iou_bars_figure(methods: dict[str, dict]) -> Figure:
    """Per-class IoU of each method as grouped bars (compare.json's "methods")."""
    names = list(next(iter(methods.values()))["iou"])
    fig = new_figure(max(6.4, 0.75 * len(names) + 2), 3.8)
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    x = np.arange(len(names))
    for i, (method, r) in enumerate(methods.items()):
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, [100 * r["iou"][c] for c in names], width,
               color=METHOD_COLOURS[i % len(METHOD_COLOURS)], label=f"{method} (mIoU {100 * r['miou']:.1f})")
    ax.set_xticks(x, names, rotation=30 if len(names) > 8 else 0, ha="right" if len(names) > 8 else "center",
                  fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("IoU per class on the real test images", fontsize=10)
    return fig


def speed_figure(methods: dict[str, dict]) -> Figure:
    """mIoU against seconds per image (log scale): what the segmenter's speed costs or gains in accuracy."""
    fig = new_figure(6.4, 3.6)
    ax = fig.add_subplot()
    for i, (method, r) in enumerate(methods.items()):
        ax.scatter([r["seconds_per_image"]], [100 * r["miou"]], s=60, color=METHOD_COLOURS[i % len(METHOD_COLOURS)],
                   label=f"{method}: {r['seconds_per_image']:.3g} s / image")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks collide within one decade
    seconds = [r["seconds_per_image"] for r in methods.values()]
    ax.set_xlim(min(seconds) / 3, max(seconds) * 3)
    ax.set_ylim(0, 100)
    ax.set_xlabel("seconds per image (log scale)")
    ax.set_ylabel("mIoU (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fast = min(methods, key=lambda m: methods[m]["seconds_per_image"])
    slow = max(methods, key=lambda m: methods[m]["seconds_per_image"])
    ratio = methods[slow]["seconds_per_image"] / methods[fast]["seconds_per_image"]
    ax.set_title(f"speed trade-off: {fast} is {ratio:.3g}x faster than {slow}", fontsize=9)
    return fig


def overlay_grid_figure(images: np.ndarray, columns: dict[str, np.ndarray], class_names, num_classes: int,
                        limit: int = 8) -> Figure:
    """One row per test image: the image, then each labelling in `columns` (e.g. ground truth, direct,
    DeepLab) as an overlay; column titles on top, the class legend below."""
    n = min(limit, len(images))
    tiles = []
    for i in range(n):
        tiles += [images[i]] + [overlay(images[i], masks[i], num_classes) for masks in columns.values()]
    width = 1 + len(columns)
    fig = new_figure(max(6.0, 1.6 * width), 1.0 + 1.45 * n)
    ax = fig.add_subplot()
    tiles, scale = fit_tiles(tiles)
    ax.imshow(image_grid(tiles, width, scale=scale, pad=2), interpolation="nearest")
    step = (tiles[0].shape[1] + 2) * scale
    ax.set_xticks([step * (c + 0.5) for c in range(width)], ["image", *columns], fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_yticks([])
    class_legend(fig, class_names, num_classes)
    return fig
