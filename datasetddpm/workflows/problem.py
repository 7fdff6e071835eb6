"""The problem a feature command works on (preset, model, blocks, steps, classes) and its feature source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..direct import FeatureSource, segment
from ..ensemble.model import PixelEnsemble
from ..errors import InputError, OptionError
from ..generators.base import FeatureSpec
from ..generators.loading import load_generator
from ..presets import get_preset


@dataclass
class Problem:
    """Classes, ignore label, features, model and image size for a run: a preset with optional overrides."""

    class_names: tuple[str, ...]
    ignore_label: int
    spec: FeatureSpec
    model: str
    resolution: int | None = None  # image side the data must have; None: the model's own resolution

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def resolve_problem(preset: str = "embedded", *, model: str | None = None, blocks=None, steps=None,
                    noise_seed: int | None = None, ignore_label: int | None = None,
                    num_classes: int | None = None, resolution: int | None = None,
                    class_names=None, require_model: bool = True) -> Problem:
    """The preset's problem with overrides; `require_model=False` for the colour baseline (no features).

    Class names: `class_names` when given, else the preset's, or class_0.. when `num_classes` differs."""
    p = get_preset(preset)
    if model is None and p.model is None and require_model:
        raise OptionError("--model", f"preset {p.name} ships no model: give --model adm:{p.adm_flags}:<{p.checkpoint}> "
                                     "(the paper's ADM checkpoint) or a converted model folder")
    names = p.class_names
    if num_classes is not None and num_classes < 1:
        raise OptionError("--num-classes", f"must be >= 1, got {num_classes}")
    if class_names:
        names = tuple(class_names)
        if num_classes is not None and num_classes != len(names):
            raise OptionError("--class-names", f"{len(names)} names but --num-classes {num_classes}")
    elif num_classes is not None and num_classes != len(names):
        names = tuple(f"class_{k}" for k in range(num_classes))
    if resolution is not None and resolution < 1:
        raise OptionError("--resolution", f"must be >= 1, got {resolution}")
    # Paper presets define their data at a fixed size (256); the embedded preset's 32 px belongs to its
    # shipped model, so another model (a user's own DDPM) sets the size itself. No model, no constraint.
    if resolution is None and require_model and (p.model is None or model is None):
        resolution = p.resolution
    spec = FeatureSpec(tuple(blocks or p.features.blocks), tuple(steps or p.features.steps),
                       p.features.noise_seed if noise_seed is None else noise_seed)
    return Problem(names, p.ignore_label if ignore_label is None else ignore_label, spec, model or p.model or "",
                   resolution)


def source_for(problem_or_ensemble, *, colour: bool = False, model: str | None = None,
               device: str | torch.device = "cpu") -> FeatureSource:
    """The feature source a problem (for training) or an ensemble (for inference) needs, on `device`."""
    if isinstance(problem_or_ensemble, PixelEnsemble):
        cfg = problem_or_ensemble.cfg
        spec = cfg.feature_spec()
        if spec is None:
            return FeatureSource()
        return FeatureSource(load_generator(model or cfg.model, device), spec)
    if colour:
        return FeatureSource()
    problem = problem_or_ensemble
    generator = load_generator(model or problem.model, device)
    generator.check_spec(problem.spec)
    return FeatureSource(generator, problem.spec)


def check_image_sizes(source: FeatureSource, images: np.ndarray, paths: list[Path], resolution: int | None = 0) -> None:
    """`resolution` None: the images must have the model's own resolution; 0: any size the UNet takes."""
    if source.generator is None:
        return
    side = source.generator.resolution
    if resolution is None and images.shape[1:3] != (side, side):
        raise InputError(paths[0], f"image is {images.shape[2]}x{images.shape[1]} but the model was trained at "
                                   f"{side}x{side}: resize the data or pass --resolution")
    reason = source.generator.check_image_size(*images.shape[1:3])
    if reason:
        raise InputError(paths[0], reason)


def ensemble_side(cfg) -> int | None:
    """The image side an ensemble's features mean what they meant in training: the resolution it was trained
    at (diffusion or StyleGAN2 features); None for the colour baseline (any size) or one that records none."""
    return cfg.resolution if cfg.feature_spec() is not None and cfg.resolution else None


def check_ensemble_size(cfg, images: np.ndarray, paths: list[Path]) -> None:
    """The one size check of every command that runs an ensemble on images (segment, evaluate, suggest):
    they must have the side it was trained at."""
    side = ensemble_side(cfg)
    if side and images.shape[1:3] != (side, side):
        raise InputError(paths[0], f"image is {images.shape[2]}x{images.shape[1]} but this run expects {side}x{side} "
                                   "(set by the ensemble, trained at that size): resize the data")
