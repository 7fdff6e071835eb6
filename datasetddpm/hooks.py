"""What the layers below the presentation layer draw through: a small `Figures` interface that trainers,
finalize, compare and the studies call at the points where a picture belongs, implemented by
`datasetddpm.reporting.hooks.FigureWriter`.

No layer below `reporting` imports `reporting`. A command line command installs the writer for its run
(`cli.app.command` wraps every command in `drawing(FigureWriter())`); a library call draws nothing
unless its caller installs one the same way. The calls get data, never files to read: log rows, index
rows, arrays, reports (finalize's preview still opens the few PNGs its rows name)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Protocol


class Figures(Protocol):
    def training_curves(self, rows: list[dict], out_png: Path, title: str) -> None:
        """A trainer's log rows (one per step or epoch) -> out_png (loss, learning rate or validation mIoU)."""

    def ensemble_curves(self, training: dict, out_png: Path) -> None:
        """An ensemble's training record (ensemble.json "training") -> out_png."""

    def finalize_pictures(self, run: Path, rows: list[dict], keep: set[int], *, class_names, num_classes: int,
                          drop_fraction: float) -> None:
        """RUN/preview.png and RUN/uncertainty.png from finalize's index rows and the kept ids."""

    def compare_page(self, out: Path, report: dict, config: dict, images, columns: dict, *, class_names,
                     num_classes: int) -> None:
        """OUT/compare.html and OUT/compare_grid.png from a compare report, the test images and each
        method's masks (`columns`: title -> (N, H, W) masks)."""

    def study_picture(self, view: str, report: dict, out_png: Path) -> None:
        """A study's picture (study.png) from its report; `view` names the study as `reporting.results` does."""


class NoFigures:
    """Draws nothing: what a library call gets unless its caller installs a writer."""

    def training_curves(self, rows, out_png, title) -> None:
        pass

    def ensemble_curves(self, training, out_png) -> None:
        pass

    def finalize_pictures(self, run, rows, keep, *, class_names, num_classes, drop_fraction) -> None:
        pass

    def compare_page(self, out, report, config, images, columns, *, class_names, num_classes) -> None:
        pass

    def study_picture(self, view, report, out_png) -> None:
        pass


NO_FIGURES = NoFigures()
_installed: list[Figures] = []


def current_figures() -> Figures:
    """The writer installed by the innermost `drawing` block, else NO_FIGURES."""
    return _installed[-1] if _installed else NO_FIGURES


@contextmanager
def drawing(figures: Figures) -> Iterator[Figures]:
    """Draw through `figures` inside the block (nested blocks: the innermost wins)."""
    _installed.append(figures)
    try:
        yield figures
    finally:
        _installed.pop()
