"""`datasetddpm train-ddpm | train-oracle | check-samples`: the generative side of the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as opt
from .app import command
from .runtime import runtime


@command("train-ddpm")
def train_ddpm_command(
    out: opt.Out,
    data: opt.TrainData = "embedded",
    resolution: Annotated[int, typer.Option(help="Image side in pixels.")] = 32,
    steps: opt.TrainSteps = 4000,
    batch_size: opt.TrainBatch = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 5e-4,
    warmup: Annotated[int, typer.Option(help="Linear learning-rate warm-up steps.")] = 200,
    lr_schedule: Annotated[str, typer.Option(help="constant | cosine (decays to lr x --min-lr-ratio over "
                                                  "--schedule-steps, then stays there).")] = "constant",
    schedule_steps: Annotated[int, typer.Option(help="Length of the cosine decay: the planned total steps.")] = 0,
    min_lr_ratio: Annotated[float, typer.Option(help="Final learning rate of the cosine schedule, as a fraction of --lr.")] = 0.1,
    ema_decay: Annotated[float, typer.Option(help="EMA decay of the saved weights.")] = 0.999,
    channels: Annotated[Optional[str], typer.Option(help="UNet widths per level, e.g. '32,64,64' (default: the embedded UNet).")] = None,
    attention_res: Annotated[Optional[str], typer.Option(help="Feature-map sides with self-attention, e.g. '8'.")] = None,
    init_from: Annotated[Optional[str], typer.Option(
        help="Fine-tune: start the model and its EMA from this diffusion model (a --model value: a folder, "
             "'embedded' or adm:...), with a fresh optimiser and learning-rate schedule; its UNet shape and "
             "noise schedule are kept.")] = None,
    pool_size: opt.PoolSize = 10000,
    checkpoint_every: opt.CheckpointEvery = 250,
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    overwrite: opt.Overwrite = False,
    threads: opt.Threads = None,
    dry_run: opt.DryRun = False,
    quiet: opt.Quiet = False,
) -> None:
    """Train an unconditional DDPM (EMA, resumable: rerun the same command to continue)."""
    from ..generators.train_ddpm import DDPMTrainConfig, train_ddpm
    rt = runtime(device=device, threads=threads, quiet=quiet)
    unet = {"block_out_channels": opt.parse_ints("--channels", channels)} if channels else {}
    cfg = DDPMTrainConfig(data=data, resolution=resolution, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup,
                          lr_schedule=lr_schedule, schedule_steps=schedule_steps, min_lr_ratio=min_lr_ratio,
                          ema_decay=ema_decay, unet=unet,
                          attention_resolutions=opt.parse_ints("--attention-res", attention_res) or (),
                          pool_size=pool_size, checkpoint_every=checkpoint_every, seed=seed,
                          init_from=init_from or "")
    if dry_run:
        from ..plans import plan_train_ddpm
        typer.echo(plan_train_ddpm(Path(out), cfg, device=rt.device).text())
        return
    ema_dir = train_ddpm(Path(out), cfg, overwrite=overwrite, progress=rt.progress, device=rt.device)
    typer.echo(f"EMA checkpoint: {ema_dir}")


@command("train-oracle")
def train_oracle_command(
    out: opt.Out,
    steps: Annotated[int, typer.Option(min=1, help="Optimisation steps (rerun with more to extend; resumes).")] = 2000,
    pool: Annotated[int, typer.Option(min=1, help="Procedural training images.")] = 6000,
    batch_size: opt.TrainBatch = 16,
    lr: Annotated[float, typer.Option(help="Adam learning rate (cosine decay to 0 over --steps).")] = 1e-3,
    arch: Annotated[str, typer.Option(help="deeplabv3 | deeplabv3plus | unet")] = "deeplabv3plus",
    encoder: Annotated[str, typer.Option(help="smp encoder.")] = "resnet18",
    input_scale: Annotated[int, typer.Option(help="Input upsampling inside the model.")] = 2,
    encoder_depth: Annotated[int, typer.Option(help="unet: encoder stages used.")] = 5,
    decoder_channels: Annotated[Optional[str], typer.Option(help="unet: decoder widths, e.g. '128,64,32,16'.")] = None,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Steps between saved training states.")] = 250,
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    threads: opt.Threads = None,
    quiet: opt.Quiet = False,
) -> None:
    """Train the embedded domain's oracle segmenter (stands in for an annotator of generated samples)."""
    from ..data.oracle import train_oracle
    rt = runtime(device=device, threads=threads, quiet=quiet)
    log = train_oracle(out, steps=steps, pool=pool, batch_size=batch_size, seed=seed, lr=lr, arch=arch, encoder=encoder,
                       input_scale=input_scale, encoder_depth=encoder_depth,
                       decoder_channels=opt.parse_ints("--decoder-channels", decoder_channels) or (),
                       checkpoint_every=checkpoint_every, device=rt.device, progress=rt.progress)
    typer.echo(f"oracle: {out} (mIoU on 500 held-out real images: {100 * log['real_miou']:.1f}, {log['seconds']} s)")


@command("check-samples")
def check_samples_command(
    out: opt.Out,
    model: opt.Model = "embedded",
    oracle: Annotated[str, typer.Option(help="Oracle segmenter directory ('embedded' = shipped).")] = "embedded",
    n: Annotated[int, typer.Option("--n", min=1, help="Samples to draw.")] = 200,
    sampler: Annotated[str, typer.Option(help="ddpm | ddim | dpm++")] = "ddim",
    sampling_steps: Annotated[int, typer.Option(help="Reverse diffusion steps.")] = 50,
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    threads: opt.Threads = None,
    quiet: opt.Quiet = False,
) -> None:
    """Sample the model; write a preview grid with oracle overlays and the oracle's numbers on samples vs real."""
    from ..workflows import check_samples_run
    rt = runtime(device=device, threads=threads, quiet=quiet)
    r = check_samples_run(out, model=model, oracle=oracle, n=n, sampler=sampler, sampling_steps=sampling_steps,
                          seed=seed, device=rt.device, progress=rt.progress)
    typer.echo(f"oracle flip-consistency mIoU: samples {100 * r['samples']['flip_consistency_miou']:.1f} vs real "
               f"{100 * r['real']['flip_consistency_miou']:.1f}; confidence {r['samples']['mean_confidence']:.3f} vs "
               f"{r['real']['mean_confidence']:.3f}; class-frequency TV distance "
               f"{r['class_frequency_total_variation']:.3f}; grid in {out}/samples_grid.png")
