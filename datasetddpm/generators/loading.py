"""The one entry point that turns a `--model` value into a generator (no hub is ever reached).

It sits above the backends (`diffusion`, `adm`, `stylegan2`) so that they never import each other's loaders.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ..errors import InputError, OptionError
from ..io import load_tensors, read_checkpoint_meta, read_json
from ..paths import EMBEDDED_MODEL_DIR, EMBEDDED_STYLEGAN2_DIR
from .adm import load_adm_string
from .diffusion import CHECKPOINT_FORMAT, DiffusionGenerator, _load_diffusers, build_unet
from .stylegan2 import CHECKPOINT_FORMAT as STYLEGAN2_FORMAT
from .stylegan2 import StyleGAN2Generator, load_stylegan2

GENERATOR_KINDS = ("diffusion", "stylegan2")


def model_kind(path: str | Path) -> str:
    """'stylegan2' for a toolkit StyleGAN2 folder (its config.json says so), else 'diffusion'."""
    name = str(path)
    if name == "embedded-stylegan2":
        return "stylegan2"
    config = Path(path) / "config.json"
    if name.startswith("adm:") or name == "embedded" or not config.is_file():
        return "diffusion"
    return "stylegan2" if read_json(config).get("format") == STYLEGAN2_FORMAT else "diffusion"


def resolve_model(model: str | None, generator: str | None, default: str | None = None) -> str | None:
    """The --model to load given --generator. With --model (or, without it, the command's `default`, such
    as an ensemble's own model) the model must be of that kind; `--generator stylegan2` alone means the
    embedded StyleGAN2; `--generator diffusion` alone keeps the command's default (None)."""
    if generator is None:
        return model
    if generator not in GENERATOR_KINDS:
        raise OptionError("--generator", f"must be one of {', '.join(GENERATOR_KINDS)}, got {generator!r}")
    if model is None and default is None:
        return "embedded-stylegan2" if generator == "stylegan2" else None
    kind = model_kind(model or default)
    if kind != generator:
        raise OptionError("--generator", f"{generator} asked for, but --model {model or default} is a {kind} model")
    return model


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> DiffusionGenerator | StyleGAN2Generator:
    """Load a generator, never reaching a hub. `path` is one of:
    "embedded" (the shipped DDPM); "embedded-stylegan2" (the shipped StyleGAN2); a toolkit checkpoint
    directory (diffusion or StyleGAN2, told apart by its config.json); a diffusers folder (UNet2DModel
    with scheduler_config.json, or a pipeline folder with unet/ and scheduler/); or
    "adm:<flag set | flags.json>:<checkpoint.pt>" for a guided-diffusion checkpoint converted on the fly."""
    name = str(path)
    if name.startswith("adm:"):
        return load_adm_string(name, device)
    if name == "embedded-stylegan2":
        if not (EMBEDDED_STYLEGAN2_DIR / "config.json").is_file():
            raise InputError(EMBEDDED_STYLEGAN2_DIR, "no embedded StyleGAN2 is shipped in this install; train one "
                                                     "(datasetddpm train-stylegan2) and pass --model <its ema folder>")
        path = EMBEDDED_STYLEGAN2_DIR
    if name == "embedded":
        path = EMBEDDED_MODEL_DIR
    directory = Path(path)
    if not directory.is_dir():
        raise InputError(directory, "model directory not found")
    config_file = directory / "config.json"
    if model_kind(directory) == "stylegan2":
        generator = load_stylegan2(directory, device)
        generator.source = name if name == "embedded-stylegan2" else generator.source
        return generator
    if (directory / "unet").is_dir() or (config_file.is_file() and "_class_name" in read_json(config_file)):
        return _load_diffusers(directory, device)
    config = read_checkpoint_meta(directory, "config.json", CHECKPOINT_FORMAT, "diffusion checkpoint")
    weights = directory / "model.safetensors"
    unet = build_unet(config["unet"], load_tensors(weights), weights, directory / "config.json")
    source = name if name == "embedded" else str(directory.resolve())
    return DiffusionGenerator(unet.to(device), config["scheduler"], source=source)


def stylegan2_problem(problem, blocks: tuple[int, ...] | None, steps: str | None, noise_seed: int | None):
    """A problem whose model is a StyleGAN2 gets DatasetGAN features: the synthesis layers given by --blocks
    (default: all of them, as DatasetGAN), steps (0,); --steps / --noise-seed are refused. Others unchanged."""
    if not problem.model or model_kind(problem.model) != "stylegan2":
        return problem
    for option, value in (("--steps", steps), ("--noise-seed", noise_seed)):
        if value is not None:
            raise OptionError(option, "a StyleGAN2 has no diffusion steps or feature noise; leave it out "
                                      "(--blocks picks synthesis layers)")
    generator = load_generator(problem.model)
    spec = generator.default_spec()
    if blocks:
        spec = replace(spec, blocks=tuple(blocks))
    generator.check_spec(spec)
    return replace(problem, spec=spec)
