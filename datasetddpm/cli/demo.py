"""`datasetddpm demo`: the main job on the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from . import options as opt
from .main import command


@command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("runs/demo"),
    train: Annotated[int, typer.Option(help="Labelled training images.")] = 20,
    test: Annotated[int, typer.Option(help="Labelled test images.")] = 200,
    seeds: Annotated[int, typer.Option(help="Repeat ensemble training over this many seeds (0..N-1).")] = 1,
    model: Annotated[str, typer.Option(help="Diffusion checkpoint ('embedded' = shipped).")] = "embedded",
    threads: opt.Threads = None,
    quiet: opt.Quiet = False,
) -> None:
    """Direct DDPM mode end to end on the embedded domain, against the RGB-3x3 colour baseline."""
    from ..demo import run_demo
    opt.set_threads(threads)
    report = run_demo(out, train=train, test=test, seeds=tuple(range(seeds)), model=model, progress=not quiet)
    console = Console()
    table = Table(title=f"Direct mode on the embedded domain: {train} labelled, {test} test images, {seeds} seed(s)")
    table.add_column("method")
    table.add_column("mIoU (%)", justify="right")
    names = list(next(iter(report["results"].values()))["runs"][0]["iou"])
    for name in names:
        table.add_column(name, justify="right")
    for method, r in report["results"].items():
        per_class = [np.mean([run["iou"][n] for run in r["runs"]]) for n in names]
        table.add_row(method, f"{100 * r['miou_mean']:.1f} ± {100 * r['miou_std']:.1f}",
                      *[f"{100 * v:.0f}" for v in per_class])
    console.print(table)
    times = Table(title="time per stage (s)")
    times.add_column("stage")
    times.add_column("seconds", justify="right")
    for stage, s in report["timings_seconds"].items():
        times.add_row(stage, f"{s:.1f}")
    console.print(times)
    console.print(f"report: {out}/demo.json")

