"""`datasetddpm make-dataset`: the embedded domain in the reference folder layout."""

from __future__ import annotations

from typing import Annotated

import typer

from . import options as opt
from .app import command


@command("make-dataset")
def make_dataset_command(
    out: opt.Out,
    train: Annotated[int, typer.Option(help="Labelled training images (real/train).")] = 20,
    test: Annotated[int, typer.Option(help="Labelled test images (real/test).")] = 200,
    unlabelled: Annotated[int, typer.Option(help="Unlabelled images for training a generative model.")] = 0,
    resolution: Annotated[int, typer.Option(help="Image side in pixels (>= 32).")] = 32,
    seed: opt.Seed = 0,
) -> None:
    """Write procedural critters: real/{train,test}/<stem>.png + <stem>.npy (255 = ignore) and unlabelled/."""
    from ..data.folders import write_procedural_dataset
    if resolution < 32:
        from ..errors import OptionError
        raise OptionError("--resolution", f"must be >= 32, got {resolution}")
    counts = write_procedural_dataset(out, train=train, test=test, unlabelled=unlabelled, resolution=resolution, seed=seed)
    typer.echo(f"wrote {counts} to {out}")
