"""The studies' pictures, one `<name>_figure(report)` per study, drawn from its report (study.json) alone:
`results.PLOTS` names them, a study run draws its study.png through `FigureWriter.study_picture`, and
`datasetddpm report --readme` redraws a committed result's picture from its JSON (the same PNG bytes)."""

from __future__ import annotations

import numpy as np

from ..studies.common import seed_count, segmenter_name
from ..studies.features import GROUPS
from ..studies.main import COLOUR
from ..studies.mining import DEFAULT
from ..studies.precision import _interval  # precision differences with two decimals, as its table shows them
from ..studies.stats import interval_text
from .figures import new_figure
from .study_plots import Bar, Panel, bars_figure, curve_figure


def samplers_figure(report: dict):
    """DeepLab mIoU over seeds and label mIoU against the oracle, for each sampler."""
    rows = report["rows"]
    name = {s: f"{s} ({r['unet_evaluations']} evals)" for s, r in rows.items()}
    seeds = len(report.get("deeplab_seeds", [0]))
    deeplab = Panel(f"{segmenter_name(report)} on each sampler's kept pairs, {report['test_images']} real test images, "
                    f"{seed_count(seeds)} (Δ: vs {report['baseline']}, 95 % CI)",
                    [Bar(name[s], r["deeplab_miou_per_seed"], interval_text(r.get("deeplab_miou_vs_baseline"), none=""))
                     for s, r in rows.items()])
    labels = Panel(f"the ensemble's labels of {report['samples']} samples against the oracle's masks",
                   [Bar(name[s], [r["label_miou_all"]], interval_text(r.get("label_miou_vs_baseline"), none=""), "C2")
                    for s, r in rows.items()])
    return bars_figure([deeplab, labels], "Samplers study: the same sample seeds under each sampler")


def trajectory_figure(report: dict):
    """Label mIoU against the oracle over seeds for each way of labelling the same samples."""
    seeds = len(report["seeds"])
    bars = [Bar(f"{arm} (t = {', '.join(map(str, r['steps']))})", r["label_miou_per_seed"],
                interval_text(r.get("vs_standard"), none="")) for arm, r in report["arms"].items()]
    panel = Panel(f"labels of {report['samples']} samples ({report['sampler']}-{report['sampling_steps']}) against the "
                  f"oracle, {seed_count(seeds)} (Δ: vs standard, 95 % CI)", bars)
    return bars_figure([panel], "Trajectory study: activations kept while sampling vs a feature pass")


def segmenter_figure(report: dict):
    """mIoU over seeds for each segmenter setting."""
    seeds = len(report["deeplab_seeds"])
    bars = [Bar(f"{name} ({r['epochs']} epochs)", r["miou_per_seed"], interval_text(r.get("vs_baseline"), none=""))
            for name, r in report["rows"].items()]
    panel = Panel(f"{report['pairs']} kept pairs, {report['test_images']} real test images, "
                  f"{seed_count(seeds)} (Δ: vs the first setting, 95 % CI)", bars)
    return bars_figure([panel], "Segmenter study")


def real_images_figure(report: dict):
    """mIoU over seeds of the segmenter trained on each arm's pairs."""
    seeds = len(report["deeplab_seeds"])
    bars = [Bar(f"{arm} ({r['pairs']} pairs)", r["miou_per_seed"], interval_text(r.get("vs_synthetic"), none=""))
            for arm, r in report["arms"].items()]
    panel = Panel(f"{report['test_images']} real test images, {seed_count(seeds)} "
                  "(Δ: vs synthetic, 95 % CI)", bars)
    return bars_figure([panel], f"Real-images study: {segmenter_name(report)} trained on ensemble-labelled pairs")


def suggest_figure(report: dict):
    """Direct-mode mIoU over seeds after each arm's additions; the start set's mean as a dashed line."""
    seeds = len(report["seeds"])
    bars = [Bar(arm, r["miou_per_seed"], interval_text(r.get("vs_random"), none=""))
            for arm, r in report["arms"].items()]
    panel = Panel(f"{report['test_images']} real test images, {seed_count(seeds)} "
                  "(Δ: vs random, 95 % CI)", bars,
                  reference=(f"start: {report['start']} random images", report["start_miou_mean"]))
    return bars_figure([panel], f"Suggest study: {report['start']} labelled images + {report['add']} chosen by "
                                "each arm")


def main_figure(report: dict):
    """Each row's mIoU over seeds; DeepLab rows in orange with their difference to their labeller."""
    bars = []
    for row, r in report["rows"].items():
        if "vs_labeller" in r:
            note, colour = interval_text(r["vs_labeller"]) + " vs its labeller", "C1"
        elif "vs_datasetddpm_paper" in r:
            note, colour = interval_text(r["vs_datasetddpm_paper"]) + " vs DatasetDDPM (paper protocol)", "C1"
        else:
            note, colour = "", "C7" if row == COLOUR else "C0"
        bars.append(Bar(row, r["miou_per_seed"], note, colour))
    seeds = len(report["seeds"])
    panel = Panel(f"{report['test_images']} real test images; blue: direct mode, orange: a segmenter trained on "
                  f"{report['pairs']} kept synthetic pairs", bars)
    return bars_figure([panel], f"Main study: mIoU, mean ± std over {seed_count(seeds)} "
                                "(dots: seeds; Δ: 95 % CI)")


def labelled_count_figure(report: dict):
    """Direct-mode mIoU against the number of labelled images, each seed a dot."""
    rows = list(report["rows"].values())
    return curve_figure([r["labelled_images"] for r in rows], [[x["miou"] for x in r["runs"]] for r in rows],
                        title=f"Direct mode against labelled images ({report['test_images']} real test images)",
                        xlabel="labelled images (log scale)")


def filter_figure(report: dict):
    """DeepLab mIoU over seeds at each drop fraction, and the oracle-measured mIoU of the kept labels."""
    q, rows = report["labels"], report["deeplab"]
    name = {key: f"drop {100 * r['drop']:.0f} % ({r['pairs']} pairs)" for key, r in rows.items()}
    seeds = len(report["deeplab_seeds"])
    deeplab = Panel(f"{segmenter_name(report)} on the kept pairs, {report['test_images']} real test images, "
                    f"{seed_count(seeds)} (Δ: vs no drop, 95 % CI)",
                    [Bar(name[k], r["deeplab_miou_per_seed"], interval_text(r.get("vs_no_drop"), none=""))
                     for k, r in rows.items()])
    labels = Panel("the kept labels against the oracle's masks of the same samples",
                   [Bar(name[k], [q["label_miou_by_drop"][k]], colour="C2") for k in rows])
    return bars_figure([deeplab, labels], f"Filter study: {q['samples']} samples; JS finds wrong pixels with AUROC "
                                          f"{q['pixel_auroc_wrong_labels']:.3f}, the worse half of the images with "
                                          f"{q['image_auroc_worse_half']:.3f}")


def mining_figure(report: dict):
    """mIoU over seeds for each way of keeping pairs, and the preferred classes' IoU."""
    arms, pref = report["arms"], report["prefer_classes"]
    seeds = len(report["deeplab_seeds"])
    first = "vs_default_filter" if DEFAULT in arms else "vs_least_uncertain"
    overall = Panel(f"mIoU, {report['test_images']} real test images, {seed_count(seeds)} "
                    f"(Δ: {first[3:].replace('_', ' ')}, 95 % CI)",
                    [Bar(arm, r["miou_per_seed"], interval_text(r.get(first), none="")) for arm, r in arms.items()])
    classes = Panel(f"IoU of the preferred classes ({', '.join(pref)}), mean over seeds",
                    [Bar(f"{arm}: {c}", [r["iou_mean"][c]], colour="C2") for arm, r in arms.items() for c in pref],
                    axis="IoU (%)")
    return bars_figure([overall, classes], f"Mining study: {report['pairs']} pairs kept by each arm "
                                           f"({segmenter_name(report)})")


def features_figure(report: dict):
    """Three heatmaps (steps x blocks, mIoU in %): all, small and large classes, the best cell boxed."""
    from matplotlib.patches import Rectangle
    grid = report["grid"]
    nb, ns = len(grid["blocks"]), len(grid["steps"])
    fig = new_figure(3 * (1.6 + 0.6 * nb), 1.2 + 0.45 * ns)
    axes = fig.subplots(1, 3)
    for ax, g in zip(axes, GROUPS):
        values = np.array([[np.nan if v is None else 100 * v for v in row] for row in grid["miou"][g]])
        im = ax.imshow(values, cmap="viridis", aspect="auto")
        ax.set_xticks(range(nb), [str(b) for b in grid["blocks"]])
        ax.set_yticks(range(ns), [str(s) for s in grid["steps"]])
        ax.set_title(f"{g} classes")
        ax.set_xlabel("decoder block (deep -> shallow)")
        for i in range(ns):
            for j in range(nb):
                ax.text(j, i, "" if np.isnan(values[i, j]) else f"{values[i, j]:.0f}", ha="center", va="center",
                        color="w", fontsize=7)
        if g in grid["best"]:
            best = grid["best"][g]
            i, j = grid["steps"].index(best["step"]), grid["blocks"].index(best["block"])
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        fig.colorbar(im, ax=ax, label="mIoU (%)")
    axes[0].set_ylabel("diffusion step t")
    return fig


def synthetic_size_figure(report: dict):
    """mIoU (%) against kept pairs on a log axis: each seed's score as a dot, the mean with its std as
    error bars; a hollow marker where a step up is not a significant gain over the previous size."""
    rows = list(report["rows"].values())
    budget = (f"{report['segmenter']['epochs']} epochs each" if report["budget"]["rule"] == "epochs"
              else "the largest set's optimisation steps each")
    return curve_figure([r["pairs"] for r in rows], [r["miou_per_seed"] for r in rows],
                        title=f"{segmenter_name(report)}, {budget}", xlabel="kept synthetic pairs",
                        ylabel="mIoU on real test images (%)",
                        flat=["vs_previous" in r and not r["vs_previous"]["significant"] for r in rows],
                        flat_label="gain over previous size not significant")


def precision_figure(report: dict):
    """Each precision's test-label mIoU, its sample labels' mIoU against the oracle, and its label agreement."""
    sides, rows = report["precisions"], report["versus_fp32"]

    def note(p, part, key):
        return _interval(rows[p][part][key]) if p in rows else ""
    test = Panel(f"labels of {report['test_images']} real test images, mIoU vs ground truth (Δ: vs fp32, 95 % CI)",
                 [Bar(p, [s["test_miou"]], note(p, "test", "miou_difference")) for p, s in sides.items()])
    samples = Panel(f"ensemble labels of {report['samples']} samples ({report['sampler']}-{report['sampling_steps']}, "
                    "each sampled and labelled at its precision), mIoU vs the oracle's masks (Δ: vs fp32, 95 % CI)",
                    [Bar(p, [s["sample_label_miou"]], note(p, "samples", "label_miou_difference"))
                     for p, s in sides.items()])
    agreement = Panel("pixel agreement of the ensemble's labels with its fp32 labels (test images; samples)",
                      [Bar(f"{p}, {part}", [rows[p][part][key]], colour="C1") for p in rows
                       for part, key in (("test", "pixel_agreement"), ("samples", "label_agreement"))],
                      axis="pixels (%)")
    return bars_figure([test, samples, agreement], f"Precision study: reduced-precision autocast vs fp32 on "
                                                   f"{report['device']} (recommended: {report['recommended']})")
