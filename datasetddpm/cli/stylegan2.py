"""`datasetddpm train-stylegan2 | convert-stylegan2`: the StyleGAN2 backend (DatasetGAN mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .app import command
from .runtime import runtime


@command("train-stylegan2")
def train_stylegan2_command(
    out: opt.Out,
    data: opt.TrainData = "embedded",
    resolution: Annotated[int, typer.Option(help="Image side in pixels (a power of two).")] = 32,
    steps: opt.TrainSteps = 4800,
    batch_size: opt.TrainBatch = 16,
    lr: Annotated[float, typer.Option(help="Adam learning rate (G; D's is corrected for lazy R1).")] = 0.0025,
    r1_gamma: Annotated[float, typer.Option(help="R1 penalty weight.")] = 0.05,
    r1_every: Annotated[int, typer.Option(help="Steps between (lazy) R1 penalties.")] = 16,
    ema_decay: Annotated[float, typer.Option(help="EMA decay of the saved generator.")] = 0.999,
    z_dim: Annotated[int, typer.Option(help="Latent z size.")] = 64,
    w_dim: Annotated[int, typer.Option(help="Latent w size.")] = 64,
    mapping_layers: Annotated[int, typer.Option(help="Mapping network layers.")] = 2,
    channel_base: Annotated[int, typer.Option(help="Channels at side r: min(channel_base // r, channel_max).")] = 2048,
    channel_max: Annotated[int, typer.Option(help="Widest layer.")] = 64,
    truncation_psi: Annotated[float, typer.Option(help="Truncation the saved model samples with (1 = none).")] = 1.0,
    pool_size: opt.PoolSize = 10000,
    checkpoint_every: opt.CheckpointEvery = 250,
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    overwrite: opt.Overwrite = False,
    threads: opt.Threads = None,
    quiet: opt.Quiet = False,
) -> None:
    """Train a small StyleGAN2 (non-saturating loss, R1, generator EMA; resumable: rerun to continue)."""
    from ..generators.train_stylegan2 import StyleGAN2TrainConfig, train_stylegan2
    rt = runtime(device=device, threads=threads, quiet=quiet)
    cfg = StyleGAN2TrainConfig(data=data, resolution=resolution, steps=steps, batch_size=batch_size, lr=lr,
                               r1_gamma=r1_gamma, r1_every=r1_every, ema_decay=ema_decay, z_dim=z_dim, w_dim=w_dim,
                               mapping_layers=mapping_layers, channel_base=channel_base, channel_max=channel_max,
                               truncation_psi=truncation_psi, pool_size=pool_size, checkpoint_every=checkpoint_every,
                               seed=seed)
    ema_dir = train_stylegan2(Path(out), cfg, overwrite=overwrite, progress=rt.progress, device=rt.device)
    typer.echo(f"EMA generator: {ema_dir} (use it as --model)")


@command("convert-stylegan2")
def convert_stylegan2_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="NVIDIA stylegan2-ada-pytorch snapshot (.pkl, read "
                                                                  "without running its code) or a G_ema state dict "
                                                                  "(.safetensors / weights-only .pt).")],
    out: opt.Out,
    truncation_psi: Annotated[float, typer.Option(help="Truncation the model samples with (DatasetGAN: 0.7).")] = 1.0,
    conv_clamp: Annotated[float | None, typer.Option(help="State dicts only: the model's conv_clamp (NVIDIA "
                                                             "configs: 256); a .pkl records its own.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")] = False,
) -> None:
    """Convert NVIDIA StyleGAN2 weights to the toolkit's model folder (checked strictly). The weights keep
    NVIDIA's licence (non-commercial): never commit them."""
    from ..generators.stylegan2 import convert_stylegan2
    generator = convert_stylegan2(checkpoint, out, truncation_psi=truncation_psi, conv_clamp=conv_clamp,
                                  overwrite=overwrite)
    typer.echo(f"StyleGAN2 model: {out} ({generator.num_parameters / 1e6:.1f}M parameters, {generator.resolution} px, "
               f"{len(generator.layers)} synthesis layers); use it with --model {out}")
