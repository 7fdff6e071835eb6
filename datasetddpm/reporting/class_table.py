"""The console table of a per-class report (`segmenters.class_report`): `evaluate`/`probe --class-report`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .console import table_console


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def print_class_report(report: dict, title: str, console: Console | None = None) -> None:
    """One row per class (IoU %, training pixels and share, test and predicted pixels, small/large), then the
    mIoU of all, small and large classes; a class never predicted is marked."""
    table = Table(title=title)
    for col in ("class", "IoU", "train pixels", "train share %", "test pixels", "predicted pixels", "group"):
        table.add_column(col, justify="left" if col in ("class", "group") else "right")
    for name, row in report["classes"].items():
        never = row["predicted_pixels"] == 0 and row["test_pixels"] > 0
        table.add_row(name, _pct(row["iou"]), str(row["train_pixels"]), f"{100 * row['train_share']:.2f}",
                      str(row["test_pixels"]), str(row["predicted_pixels"]) + (" (never predicted)" if never else ""),
                      row["group"])
    miou = report["miou"]
    table.add_row("[bold]mIoU", f"[bold]{_pct(miou['all'])}", "", "", "", "",
                  f"small {_pct(miou['small'])} / large {_pct(miou['large'])}")
    console = console or table_console()
    console.print(table)
    console.print(f"small classes: share of {report['split_by']} below the median "
                  f"({100 * report['median_share']:.2f} %)")
