"""`datasetddpm demo`: the main job on the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .app import command
from .runtime import runtime


@command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("runs/demo"),
    train: Annotated[int, typer.Option(help="Labelled training images.")] = 20,
    test: Annotated[int, typer.Option(help="Labelled test images.")] = 200,
    seeds: Annotated[int, typer.Option(help="Repeat the direct-mode ensembles over this many seeds (0..N-1).")] = 1,
    pairs: Annotated[int, typer.Option(help="DatasetDDPM pairs to keep after the 10 % filter (0 = direct mode only).")] = 500,
    labeller: Annotated[str, typer.Option(help="real: ensemble on the real labelled images; generated: on oracle-annotated samples (paper).")] = "real",
    sampler: Annotated[str, typer.Option(help="ddpm | ddim | dpm++")] = "ddim",
    sampling_steps: Annotated[int, typer.Option(help="Reverse diffusion steps.")] = 20,
    workers: Annotated[int, typer.Option(help="CPU worker processes for sampling.")] = 2,
    deeplab_epochs: Annotated[int, typer.Option(help="DeepLabV3 epochs.")] = 12,
    input_scale: Annotated[int, typer.Option(help="DeepLabV3 input upsampling (32 px images).")] = 2,
    arch: Annotated[str, typer.Option(help="The segmenter trained on the pairs: unet (the best measured here: a "
                                           "full-resolution decoder for 3-4 px parts) | deeplabv3 (the paper's) | "
                                           "deeplabv3plus.")] = "unet",
    real_fraction: Annotated[float, typer.Option(help="Share of each DeepLab epoch given to the labeller's labelled "
                                                      "images (the real ones; the annotated samples with --labeller "
                                                      "generated); 0 = synthetic pairs only.")] = 0.1,
    model: Annotated[str, typer.Option(help="Diffusion checkpoint ('embedded' = shipped).")] = "embedded",
    device: Annotated[str, typer.Option(help="cpu (default: the demo is sized for a CPU), cuda or cuda:N.")] = "cpu",
    threads: opt.Threads = None,
    quiet: opt.Quiet = False,
) -> None:
    """The whole pipeline on the embedded domain: direct mode vs colour, then DatasetDDPM vs direct mode."""
    from ..reporting.console import print_demo
    from ..demo import run_demo
    rt = runtime(device=device, threads=threads, quiet=quiet)
    report = run_demo(out, train=train, test=test, seeds=tuple(range(seeds)), model=model, pairs=pairs,
                      labeller=labeller, sampler=sampler, sampling_steps=sampling_steps, workers=workers,
                      deeplab_epochs=deeplab_epochs, input_scale=input_scale, real_fraction=real_fraction,
                      arch=arch, device=rt.device, progress=rt.progress)
    print_demo(report, out)
