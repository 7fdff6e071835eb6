"""`datasetddpm demo`: the main job on the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from . import options as opt
from .app import command


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
    deeplab_epochs: Annotated[int, typer.Option(help="DeepLabV3 epochs.")] = 6,
    input_scale: Annotated[int, typer.Option(help="DeepLabV3 input upsampling (32 px images).")] = 2,
    model: Annotated[str, typer.Option(help="Diffusion checkpoint ('embedded' = shipped).")] = "embedded",
    device: Annotated[str, typer.Option(help="cpu (default: the demo is sized for a CPU), cuda or cuda:N.")] = "cpu",
    threads: opt.Threads = None,
    quiet: opt.Quiet = False,
) -> None:
    """The whole pipeline on the embedded domain: direct mode vs colour, then DatasetDDPM vs direct mode."""
    from ..demo import run_demo
    from ..devices import resolve_device
    if labeller not in ("real", "generated"):
        from ..errors import OptionError
        raise OptionError("--labeller", f"must be real or generated, got {labeller!r}")
    opt.set_threads(threads)
    report = run_demo(out, train=train, test=test, seeds=tuple(range(seeds)), model=model, pairs=pairs,
                      labeller=labeller, sampler=sampler, sampling_steps=sampling_steps, workers=workers,
                      deeplab_epochs=deeplab_epochs, input_scale=input_scale, device=resolve_device(device),
                      progress=not quiet)
    console = Console()
    direct = report["direct"]
    names = list(next(iter(direct.values()))["runs"][0]["iou"])
    table = Table(title=f"Direct mode: {train} labelled, {test} test images, {seeds} seed(s)")
    for col in ("method", "mIoU (%)", *names):
        table.add_column(col, justify="left" if col == "method" else "right")
    for method, r in direct.items():
        per_class = [np.mean([run["iou"][n] for run in r["runs"]]) for n in names]
        table.add_row(method, f"{100 * r['miou_mean']:.1f} ± {100 * r['miou_std']:.1f}",
                      *[f"{100 * v:.0f}" for v in per_class])
    console.print(table)
    if "datasetddpm" in report:
        from .deeplab import print_compare
        d = report["datasetddpm"]
        print_compare({"test_images": test, "methods": d["compare"]})
        console.print(f"pairs: {d['pairs']}; labeller: {d['labeller']}; DeepLabV3 best epoch "
                      f"{d['deeplab']['best_epoch']} (input x{d['deeplab']['input_scale']})")
    times = Table(title=f"time per stage (total {report['total_seconds']:.0f} s)")
    times.add_column("stage")
    times.add_column("seconds", justify="right")
    for stage, s in report["timings_seconds"].items():
        times.add_row(stage, f"{s:.1f}")
    console.print(times)
    console.print(f"report: {out}/demo.json")
    if "datasetddpm" in report:
        console.print(f"HTML report (open in a browser): {out}/compare/compare.html")
