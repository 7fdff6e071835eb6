"""`datasetddpm train-ddpm`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .main import command


@command("train-ddpm")
def train_ddpm_command(
    out: opt.Out,
    data: Annotated[str, typer.Option(help="Image folder, or 'embedded' for the procedural domain.")] = "embedded",
    resolution: Annotated[int, typer.Option(help="Image side in pixels.")] = 32,
    steps: Annotated[int, typer.Option(help="Optimisation steps (raise it and rerun to extend a run).")] = 4000,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 5e-4,
    pool_size: Annotated[int, typer.Option(help="Procedural images rendered for --data embedded.")] = 10000,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 250,
    seed: opt.Seed = 0,
    overwrite: opt.Overwrite = False,
    threads: opt.Threads = None,
    quiet: opt.Quiet = False,
) -> None:
    """Train an unconditional DDPM (EMA, resumable: rerun the same command to continue)."""
    from ..generators.train_ddpm import DDPMTrainConfig, train_ddpm
    opt.set_threads(threads)
    cfg = DDPMTrainConfig(data=data, resolution=resolution, steps=steps, batch_size=batch_size, lr=lr,
                          pool_size=pool_size, checkpoint_every=checkpoint_every, seed=seed)
    ema_dir = train_ddpm(Path(out), cfg, overwrite=overwrite, progress=not quiet)
    typer.echo(f"EMA checkpoint: {ema_dir}")
