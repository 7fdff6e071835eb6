"""The pictures of the studies: every seed's score as a dot, the mean as a bar (or a line) with its
standard deviation, and the study's interval for each difference written beside its bar.

Each study has a `<name>_figure(report)` in `study_figures` built from these helpers; `results.PLOTS` names it, so
`datasetddpm report --readme` redraws a committed result's study.png from its JSON as it re-renders its
table. Figures come from `figures.new_figure` (fixed size, no version stamp): the same JSON gives the
same PNG bytes.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from ..studies.common import seed_count

MIOU_AXIS = "mIoU (%)"
SEED_DOT = dict(s=12, color="#555555", alpha=0.7, zorder=3, linewidths=0)


@dataclass
class Bar:
    """One bar: its label, each seed's score (fractions; one value for an unseeded measure) and the
    text written right of it (the interval of its difference to the study's reference)."""

    label: str
    per_seed: list[float]
    note: str = ""
    colour: str = "C0"


@dataclass
class Panel:
    title: str
    bars: list[Bar]
    axis: str = MIOU_AXIS
    reference: tuple[str, float] | None = None  # a dashed line: (label, value as a fraction)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def _wrap(text: str, width: int) -> str:
    return textwrap.fill(text.replace(" %", "\u00a0%"), width)  # "95 %" never split over two lines


def draw_bars(ax, panel: Panel) -> None:
    """Horizontal bars top to bottom in the given order: the mean, whiskers of ± one std over seeds, the
    seeds as dots, the mean and the note as text at the bar's end."""
    bars = panel.bars
    top = max(100 * max(b.per_seed) for b in bars)
    ys = list(range(len(bars)))[::-1]
    for y, b in zip(ys, bars):
        mean, std = _mean_std(b.per_seed)
        ax.barh(y, 100 * mean, color=b.colour, alpha=0.75, height=0.6, zorder=2)
        if len(b.per_seed) > 1:
            ax.errorbar(100 * mean, y, xerr=100 * std, color="black", capsize=3, linewidth=1, zorder=4)
            ax.scatter([100 * v for v in b.per_seed], [y] * len(b.per_seed), **SEED_DOT)
        text = f"{100 * mean:.1f}" + (f"  Δ {b.note}" if b.note else "")
        ax.text(100 * max(b.per_seed) + 0.02 * top + (100 * std if len(b.per_seed) > 1 else 0), y, text,
                va="center", fontsize=7)
    if panel.reference is not None:
        label, value = panel.reference
        ax.axvline(100 * value, color="C3", linestyle="--", linewidth=1, zorder=5, label=label)
        ax.legend(fontsize=7, loc="lower right")
    ax.set_yticks(ys, [b.label for b in bars], fontsize=8)
    ax.set_xlim(0, top * 1.55 + 1)  # room for the text right of the longest bar
    ax.set_xlabel(panel.axis, fontsize=8)
    ax.set_title(_wrap(panel.title, 80), fontsize=9, loc="left")
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3, zorder=0)


def bars_figure(panels: list[Panel], title: str, *, width: float = 7.5) -> Figure:
    """Panels of bars, one above the other, under one title."""
    from .figures import new_figure
    heights = [0.9 + 0.38 * len(p.bars) + 0.15 * _wrap(p.title, 80).count("\n") for p in panels]
    fig = new_figure(width, 0.5 + sum(heights) + 0.15 * _wrap(title, 85).count("\n"))
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, panel in zip(axes, panels):
        draw_bars(ax, panel)
    fig.suptitle(_wrap(title, 85), fontsize=10)
    return fig


def curve_figure(xs: list[float], per_seed: list[list[float]], *, title: str, xlabel: str, ylabel: str = MIOU_AXIS,
                 flat: list[bool] | None = None, flat_label: str = "") -> Figure:
    """A measure against a size on a log axis: each seed's value as a dot, the mean with ± one std as
    error bars; a hollow red ring on the points `flat` marks (e.g. a step up that is not a significant gain)."""
    from .figures import new_figure
    fig = new_figure(5, 3.4)
    ax = fig.add_subplot()
    for x, values in zip(xs, per_seed):
        ax.scatter([x] * len(values), [100 * v for v in values], **SEED_DOT)
    stats = [_mean_std(v) for v in per_seed]
    seeds = max(len(v) for v in per_seed)
    ax.errorbar(xs, [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats], color="C0", capsize=3, zorder=2,
                label=f"mean ± std over {seed_count(seeds)}")
    if flat and any(flat):
        ax.scatter([x for x, f in zip(xs, flat) if f], [100 * m for (m, _), f in zip(stats, flat) if f], s=60,
                   facecolors="none", edgecolors="C3", zorder=4, label=flat_label)
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_wrap(title, 70), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig
