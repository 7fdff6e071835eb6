"""The one entry point that turns a `--model` value into a generator (no hub is ever reached).

It sits above the backends (`diffusion`, `adm`, `stylegan2`) so that they never import each other's loaders.

`device="meta"` builds a model from its config and its weights' headers (shapes, dtypes) without reading
the weights: what a parent process needs to validate a run before its workers load the model.
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


_process_precision = ["fp32"]  # what `set_process_precision` chose for this command's UNet passes


def set_process_precision(precision: str) -> None:
    """--precision of a command that computes features (segment, evaluate, train-ensemble, probe, suggest):
    every generator this process loads runs at it, as --threads sets torch's threads for the process.
    Runs (`sample`, `label`) record theirs in the run instead and pass it explicitly."""
    _process_precision[0] = resolve_precision(precision, "cpu")


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> DiffusionGenerator | StyleGAN2Generator:
    """`load_model` on `device`, at the process's --precision (none on the meta device: shapes only)."""
    generator = load_model(path, device)
    if _process_precision[0] != "fp32" and torch.device(device).type != "meta":
        speed_up(generator, _process_precision[0])
    return generator


def load_model(path: str | Path, device: str | torch.device = "cpu") -> DiffusionGenerator | StyleGAN2Generator:
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
    state = load_tensors(weights, meta=torch.device(device).type == "meta")
    unet = build_unet(config["unet"], state, weights, directory / "config.json")
    source = name if name == "embedded" else str(directory.resolve())
    return DiffusionGenerator(unet.to(device), config["scheduler"], source=source)


# --precision auto on a GPU. docs/studies/precision (`datasetddpm study precision`): fp16 autocast passes its rule
# (labels 99.99 % identical to fp32's, no mIoU loss beyond 0.5 points on test labels or samples' labels), bf16
# does not (its samples drift more: 8 mantissa bits against fp16's 11). Tensor cores run both at one rate, and
# guided-diffusion samples its own LSUN / FFHQ models in fp16 (`--use_fp16 True`).
CUDA_DEFAULT_PRECISION = "fp16"


def resolve_precision(precision: str | None, device: str | torch.device, recorded: str | None = None) -> str:
    """--precision: 'auto' (or None) is a run's recorded precision when it has one, else fp32 on a CPU and
    CUDA_DEFAULT_PRECISION on a GPU."""
    from .diffusion import PRECISIONS
    precision = (precision or "auto").lower()
    if precision == "auto":
        if recorded:
            return recorded
        return CUDA_DEFAULT_PRECISION if torch.device(device).type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise OptionError("--precision", f"must be auto or one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def speed_up(generator, precision: str = "fp32", compile: bool = False):
    """Apply --precision / --compile to a loaded generator (channels-last with half precision on a GPU,
    where tensor cores want it). A StyleGAN2 runs in fp32, eager."""
    if not hasattr(generator, "optimize"):
        if precision == "fp32" and not compile:
            return generator
        raise OptionError("--precision" if precision != "fp32" else "--compile",
                          f"{generator.source} is a StyleGAN2: it runs in fp32 without torch.compile")
    half = precision in ("bf16", "fp16")
    generator.optimize(precision=precision, compile=compile,
                       channels_last=half and generator.device.type == "cuda")
    return generator


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
