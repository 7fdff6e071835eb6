"""The one entry point that turns a `--model` value into a generator (no hub is ever reached).

It sits above the backends (`diffusion`, `adm`) so that they never import each other's loaders.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from ..io import load_tensors, read_checkpoint_meta, read_json
from ..paths import EMBEDDED_MODEL_DIR
from .adm import load_adm_string
from .diffusion import CHECKPOINT_FORMAT, DiffusionGenerator, _load_diffusers, build_unet


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> DiffusionGenerator:
    """Load a diffusion model, never reaching a hub. `path` is one of:
    "embedded" (the shipped model); a toolkit checkpoint directory; a diffusers folder (UNet2DModel
    with scheduler_config.json, or a pipeline folder with unet/ and scheduler/); or
    "adm:<flag set | flags.json>:<checkpoint.pt>" for a guided-diffusion checkpoint converted on the fly."""
    name = str(path)
    if name.startswith("adm:"):
        return load_adm_string(name, device)
    if name == "embedded":
        path = EMBEDDED_MODEL_DIR
    directory = Path(path)
    if not directory.is_dir():
        raise InputError(directory, "model directory not found")
    config_file = directory / "config.json"
    if (directory / "unet").is_dir() or (config_file.is_file() and "_class_name" in read_json(config_file)):
        return _load_diffusers(directory, device)
    config = read_checkpoint_meta(directory, "config.json", CHECKPOINT_FORMAT, "diffusion checkpoint")
    weights = directory / "model.safetensors"
    unet = build_unet(config["unet"], load_tensors(weights), weights, directory / "config.json")
    source = name if name == "embedded" else str(directory.resolve())
    return DiffusionGenerator(unet.to(device), config["scheduler"], source=source)
