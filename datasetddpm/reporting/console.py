"""The tables the commands print on the terminal (rich). The numbers are those of the JSON files the
commands write; these functions only lay them out. One convention for what people read: mIoU and IoU in
percent with one decimal (60.4) here, in markdown and on figure axes; JSON files keep fractions (0.604)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from ..demo import DemoReport
    from ..direct import Evaluation


# Columns a table may use when output is not a terminal (a log, a pipe, CI): rich would assume 80 and cut
# every cell to fit; a file has no width, so tables get what they need (up to this).
PLAIN_WIDTH = 1000


def table_console() -> Console:
    """The console tables print on: the terminal's width on a terminal, otherwise wide enough for any table."""
    console = Console()
    return console if console.is_terminal else Console(width=PLAIN_WIDTH)


def print_compare(report: dict, console: Console | None = None) -> None:
    """`compare.compare`'s report: one row per method, mIoU, seconds per image and IoU per class."""
    methods = report["methods"]
    names = list(next(iter(methods.values()))["iou"])
    table = Table(title=f"compare on {report['test_images']} real test images (IoU in %, reference protocol)")
    for col in ("method", "mIoU (%)", "s/image", *names):
        table.add_column(col, justify="left" if col == "method" else "right")
    for m, r in methods.items():
        table.add_row(m, f"{100 * r['miou']:.1f}", f"{r['seconds_per_image']:.4f}",
                      *[f"{100 * r['iou'][c]:.0f}" for c in names])
    (console or table_console()).print(table)


def print_evaluation(ev: Evaluation, title: str, console: Console | None = None) -> None:
    """IoU per class and mIoU of one evaluation."""
    table = Table(title=title)
    table.add_column("class")
    table.add_column("IoU (%)", justify="right")
    for name, iou in ev.iou.items():
        table.add_row(name, f"{100 * iou:.1f}")
    table.add_row("[bold]mIoU", f"[bold]{100 * ev.miou:.1f}")
    (console or table_console()).print(table)


def print_demo(report: DemoReport, out: str | Path, console: Console | None = None) -> None:
    """The demo's tables: direct mode vs colour, DatasetDDPM vs direct mode, time per stage; then where
    its files are."""
    console = console or table_console()
    names = list(next(iter(report.direct.values())).runs[0].iou)
    table = Table(title=f"Direct mode: {report.train_images} labelled, {report.test_images} test images, "
                        f"{len(report.seeds)} seed(s)")
    for col in ("method", "mIoU (%)", *names):
        table.add_column(col, justify="left" if col == "method" else "right")
    for method, r in report.direct.items():
        per_class = r.class_iou_mean()
        table.add_row(method, f"{100 * r.miou_mean:.1f} ± {100 * r.miou_std:.1f}",
                      *[f"{100 * per_class[n]:.0f}" for n in names])
    console.print(table)
    d = report.datasetddpm
    if d is not None:
        print_compare({"test_images": report.test_images, "methods": d.compare}, console)
        from ..segmenters.model import ARCH_NAMES
        console.print(f"pairs: {d.pairs}; labeller: {d.labeller}; {ARCH_NAMES[d.deeplab.get('arch', 'deeplabv3')]} "
                      f"best epoch {d.deeplab['best_epoch']} "
                      f"(input x{d.deeplab['input_scale']}"
                      + (f", labelled images {d.deeplab['real_fraction']:.0%} of each epoch"
                         if d.deeplab.get("real_fraction") else "") + ")")
    times = Table(title=f"time per stage (total {report.total_seconds:.0f} s)")
    times.add_column("stage")
    times.add_column("seconds", justify="right")
    for stage, s in report.timings_seconds.items():
        times.add_row(stage, f"{s:.1f}")
    console.print(times)
    console.print(f"report: {out}/demo.json")
    if d is not None:
        console.print(f"HTML report (open in a browser): {out}/compare/compare.html")
