"""`probe` on a labelled folder: one small MLP per (block, step), the mIoU grid."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.folders import read_labelled, resolve_split
from ..generators.base import FeatureSpec
from ..generators.loading import load_generator
from ..io import check_output_dir
from ..pipeline.annotate import attach_latents
from .problem import resolve_problem


def probe_folder(data: str | Path, out: str | Path, *, test: str | Path | None = None, preset: str = "embedded",
                 model: str | None = None, generator: str | None = None, blocks: tuple[int, ...] | None = None,
                 steps: tuple[int, ...] = (0, 25, 50, 100, 150, 250, 400, 600, 800),
                 train_images: int = 20, test_images: int = 20, ignore_label: int | None = None,
                 num_classes: int | None = None, seed: int = 0, device: str | torch.device = "cpu",
                 progress: bool = True, class_names: tuple[str, ...] | None = None,
                 class_report: bool = False) -> dict:
    """`datasetddpm probe`: one MLP per (block, step) on a labelled folder, scored on held-out images
    (`blocks` None: every block of the model); `class_report` (implied by `class_names`) adds per-class IoU."""
    from ..generators.loading import resolve_model
    from ..probe import run_probe, save_probe
    problem = resolve_problem(preset, model=resolve_model(model, generator), ignore_label=ignore_label,
                              num_classes=num_classes, class_names=class_names)
    gen = load_generator(problem.model, device)
    block_ids = tuple(range(len(gen.blocks))) if blocks is None else tuple(blocks)
    # A StyleGAN2 has one "step" (its layers are the grid's blocks); --steps applies to diffusion only.
    step_ids = (0,) if getattr(gen, "latent_based", False) else tuple(steps)
    gen.check_spec(FeatureSpec(block_ids, step_ids))
    train_dir, test_dir = resolve_split(data, "train"), test or resolve_split(data, "test")
    train = read_labelled(train_dir, problem.num_classes, problem.ignore_label, train_images)
    held = read_labelled(test_dir, problem.num_classes, problem.ignore_label, test_images)
    for folder, labelled in ((train_dir, train), (test_dir, held)):  # StyleGAN2: annotated generated samples
        attach_latents(gen, folder, labelled.images, labelled.paths)
    check_output_dir(out)
    result = run_probe(gen, train.images, train.masks, held.images, held.masks, blocks=block_ids, steps=step_ids,
                       num_classes=problem.num_classes, ignore_label=problem.ignore_label,
                       noise_seed=problem.spec.noise_seed, seed=seed, progress=progress,
                       class_names=problem.class_names if class_report or class_names else None)
    result["model"] = problem.model
    save_probe(result, out)
    return result
