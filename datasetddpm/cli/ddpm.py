"""`datasetddpm train-ddpm | train-oracle | check-samples`: the generative side of the embedded default."""

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


@command("train-oracle")
def train_oracle_command(
    out: opt.Out,
    steps: Annotated[int, typer.Option(help="Optimisation steps.")] = 2000,
    pool: Annotated[int, typer.Option(help="Procedural training images.")] = 6000,
    seed: opt.Seed = 0,
    threads: opt.Threads = None,
    quiet: opt.Quiet = False,
) -> None:
    """Train the embedded domain's oracle segmenter (stands in for an annotator of generated samples)."""
    from ..data.oracle import train_oracle
    opt.set_threads(threads)
    log = train_oracle(out, steps=steps, pool=pool, seed=seed, progress=not quiet)
    typer.echo(f"oracle: {out} (mIoU on 500 held-out real images: {100 * log['real_miou']:.1f}, {log['seconds']} s)")


@command("check-samples")
def check_samples_command(
    out: opt.Out,
    model: opt.Model = "embedded",
    oracle: Annotated[str, typer.Option(help="Oracle segmenter directory ('embedded' = shipped).")] = "embedded",
    n: Annotated[int, typer.Option("--n", help="Samples to draw.")] = 200,
    sampler: Annotated[str, typer.Option(help="ddpm | ddim | dpm++")] = "ddim",
    sampling_steps: Annotated[int, typer.Option(help="Reverse diffusion steps.")] = 50,
    seed: opt.Seed = 0,
    threads: opt.Threads = None,
    quiet: opt.Quiet = False,
) -> None:
    """Sample the model; write a preview grid with oracle overlays and the oracle's numbers on samples vs real."""
    from ..data.oracle import check_samples
    from ..generators.diffusion import load_generator
    from ..presets import EMBEDDED_ORACLE_DIR
    from ..segmenters.model import load_segmenter
    opt.set_threads(threads)
    generator = load_generator(model)
    seg = load_segmenter(EMBEDDED_ORACLE_DIR if oracle == "embedded" else oracle)
    r = check_samples(generator, seg, out, n=n, sampler=sampler, num_steps=sampling_steps, seed=seed,
                      progress=not quiet)
    typer.echo(f"oracle flip-consistency mIoU: samples {100 * r['samples']['flip_consistency_miou']:.1f} vs real "
               f"{100 * r['real']['flip_consistency_miou']:.1f}; confidence {r['samples']['mean_confidence']:.3f} vs "
               f"{r['real']['mean_confidence']:.3f}; class-frequency TV distance "
               f"{r['class_frequency_total_variation']:.3f}; grid in {out}/samples_grid.png")
