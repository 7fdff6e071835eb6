"""`datasetddpm probe`: an mIoU grid over decoder blocks x diffusion steps (paper Fig. 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as opt
from .app import command
from .runtime import runtime


@command("probe")
def probe_command(
    data: Annotated[Path, typer.Option(help="Dataset root with real/train and real/test (or use --test).")],
    out: opt.Out,
    test: Annotated[Optional[Path], typer.Option(help="Held-out labelled folder (default: <data>/real/test).")] = None,
    preset: opt.Preset = "embedded",
    model: Annotated[Optional[str], typer.Option(help="Diffusion checkpoint directory (default: the preset's).")] = None,
    blocks: Annotated[str, typer.Option(help="Blocks to probe, e.g. '0,2,4' or 'all'.")] = "all",
    steps: Annotated[str, typer.Option(help="Steps to probe.")] = "0,25,50,100,150,250,400,600,800",
    train_images: Annotated[int, typer.Option(help="Labelled images to train each MLP on.")] = 20,
    test_images: Annotated[int, typer.Option(help="Held-out images to evaluate on.")] = 20,
    ignore_label: opt.IgnoreLabel = None,
    num_classes: Annotated[Optional[int], typer.Option(help="Class count (default: the preset's).")] = None,
    class_names: Annotated[Optional[str], typer.Option(help="Comma-separated class names in id order (sets the class "
                                                       "count; default: the preset's); implies --class-report.")] = None,
    class_report: opt.ClassReport = False,
    generator: opt.GeneratorKind = None,
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    threads: opt.Threads = None,
    precision: opt.Precision = "auto",
    quiet: opt.Quiet = False,
) -> None:
    """Train one MLP per (block, step) and save the mIoU grid as probe.json + probe.png."""
    from ..probe import best_cell
    from ..workflows import probe_folder
    rt = runtime(device=device, threads=threads, quiet=quiet, precision=precision)
    result = probe_folder(data, out, test=test, preset=preset, model=model, generator=generator,
                          blocks=None if blocks == "all" else opt.parse_ints("--blocks", blocks),
                          steps=opt.parse_ints("--steps", steps), train_images=train_images,
                          test_images=test_images, ignore_label=ignore_label, num_classes=num_classes, seed=seed,
                          device=rt.device, progress=rt.progress,
                          class_names=opt.parse_names("--class-names", class_names), class_report=class_report)
    miou, step, block = best_cell(result)
    if "class_report" in result:
        from ..reporting.class_table import print_class_report
        print_class_report(result["class_report"]["best_cell"], f"best cell: block {block} at t={step}, per class")
    typer.echo(f"best cell: block {block} at t={step} ({100 * miou:.1f} mIoU); grid in {out}/probe.png")
