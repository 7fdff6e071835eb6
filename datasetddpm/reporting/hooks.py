"""`FigureWriter`: the `hooks.Figures` the command line installs, so that trainers, finalize, compare and
the studies write the same pictures as when they drew them themselves (matplotlib is imported when a
picture is drawn, not when a command starts)."""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_path


class FigureWriter:
    """Draws every picture a command writes, to the path it is given."""

    def training_curves(self, rows: list[dict], out_png: Path, title: str) -> None:
        from .figures import plot_training_rows
        plot_training_rows(rows, out_png, title)

    def ensemble_curves(self, training: dict, out_png: Path) -> None:
        from .figures import plot_ensemble_log
        plot_ensemble_log(training, out_png)

    def finalize_pictures(self, run: Path, rows: list[dict], keep: set[int], *, class_names, num_classes: int,
                          drop_fraction: float) -> None:
        from .figures import write_finalize_figures
        write_finalize_figures(run, rows, keep, class_names=class_names, num_classes=num_classes,
                               drop_fraction=drop_fraction)

    def compare_page(self, out: Path, report: dict, config: dict, images, columns: dict, *, class_names,
                     num_classes: int) -> None:
        """compare.html beside compare.md / compare.json: tables, per-class bars, speed, overlays, config; and
        compare_grid.png, the page's overlay picture itself (column titles and class legend included)."""
        from .figures import figure_png, iou_bars_figure, overlay_grid_figure, speed_figure
        from .html import write_compare_html
        figures = {"speed": figure_png(speed_figure(report["methods"])),
                   "iou": figure_png(iou_bars_figure(report["methods"])),
                   "overlays": figure_png(overlay_grid_figure(images, columns, class_names, num_classes))}
        with atomic_path(Path(out) / "compare_grid.png") as tmp:
            tmp.write_bytes(figures["overlays"])
        write_compare_html(Path(out) / "compare.html", report, figures, config)

    def study_picture(self, view: str, report: dict, out_png: Path) -> None:
        from .figures import save_figure
        from .results import study_figure
        save_figure(study_figure(view, report), out_png)
