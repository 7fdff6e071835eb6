"""The results table: the paper's Table 2 layout (methods as rows) for one preset, this run beside the paper."""

from __future__ import annotations

import numpy as np

from .config import DATASET_TITLES, PAPER_TABLE2, ReproduceConfig

ROWS = ("DatasetGAN", "DatasetDDPM", "DDPM")  # Table 2's order


def results_table(cfg: ReproduceConfig, progress: dict) -> dict:
    """{method: {"paper": [mean, std] | None, "this run": [mean, std] | None, "runs": [...]}} in percent."""
    direct = [100 * progress[f"direct seed {s}: evaluate"]["miou"] for s in cfg.seeds]
    compared = progress.get("compare", {}).get("miou", {})
    rows = {}
    for method in ROWS:
        runs = direct if method == "DDPM" else [100 * compared[method]] if method in compared else []
        paper = PAPER_TABLE2.get(cfg.preset, {}).get(method)
        if not runs and paper is None:
            continue
        rows[method] = {"paper": list(paper) if paper else None,
                        "this run": [round(float(np.mean(runs)), 2), round(float(np.std(runs)), 2)] if runs else None,
                        "runs": [round(r, 2) for r in runs]}
    return rows


def _cell(value, runs: int = 0) -> str:
    if value is None:
        return "–"
    mean, std = value
    return f"{mean:.1f}" if runs == 1 else f"{mean:.1f} ± {std:.1f}"


def table_markdown(cfg: ReproduceConfig, rows: dict, environment: dict) -> str:
    title = DATASET_TITLES.get(cfg.preset, cfg.preset)
    lines = [f"# `datasetddpm reproduce {cfg.preset}`", "",
             f"mIoU (%) on {title}'s real test images; the paper's Table 2 (mean ± std over 5 runs) beside this "
             f"run (mean ± std over seeds {', '.join(map(str, cfg.seeds))} for DDPM, one run for the others).", "",
             f"| Method | {title} (paper) | {title} (this run) |", "|:---|---:|---:|"]
    for method, row in rows.items():
        name = "DDPM (direct mode)" if method == "DDPM" else method
        lines.append(f"| {name} | {_cell(row['paper'])} | {_cell(row['this run'], len(row['runs']))} |")
    lines += ["", f"Scale: {cfg.n} samples, {cfg.sampler} sampler with {cfg.sampling_steps} steps, {cfg.members} MLPs "
              f"per ensemble" + (f", DeepLab {cfg.deeplab_epochs} epochs" if cfg.deeplab_epochs else "")
              + (f", ensemble capped at {cfg.ensemble_steps} steps" if cfg.ensemble_steps else "") + ".",
              f"Environment: {environment.get('machine', '')}; torch {environment.get('torch', '')}; "
              f"CPU {environment.get('cpu', '')} (results.json holds the full record)."]
    return "\n".join(lines) + "\n"
