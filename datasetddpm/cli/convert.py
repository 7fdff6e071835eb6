"""`datasetddpm convert-adm`: a guided-diffusion (ADM) checkpoint -> a diffusers model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .app import command


@command("convert-adm")
def convert_adm_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="ADM state dict (.pt, or .safetensors).")],
    flags: Annotated[str, typer.Option("--flags", help="ADM model flags: a named set (lsun_256, ffhq_256) or a JSON "
                                                        "file of ADM flag names, e.g. {\"image_size\": 64, ...}.")],
    out: opt.Out,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")] = False,
) -> None:
    """Convert an ADM checkpoint to a diffusers UNet2DModel folder usable as --model (checked exactly)."""
    from ..generators.adm import convert_adm
    from ..generators.loading import load_generator
    folder = convert_adm(checkpoint, flags, out, overwrite=overwrite)
    generator = load_generator(folder)
    typer.echo(f"diffusers model: {folder} ({generator.num_parameters / 1e6:.1f}M parameters, {generator.resolution} px, "
               f"{len(generator.blocks)} decoder blocks); use it with --model {folder}")
