"""`datasetddpm show-config DIR` (the arguments the commands that wrote DIR ran with) and
`datasetddpm report` (result JSON as markdown tables)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import command
from .config_file import resolved_args_in


@command("show-config")
def show_config_command(
    directory: Annotated[Path, typer.Argument(help="An output folder (a run, an ensemble, a DeepLab folder, ...).")],
) -> None:
    """Print the resolved arguments (`<command>.args.yaml`) of every command that wrote DIR; each file
    can be passed back as `--config` to repeat the command."""
    for path in resolved_args_in(directory):
        typer.echo(f"# {path}")
        typer.echo(path.read_text().rstrip())


@command("report")
def report_command(
    result: Annotated[Optional[Path], typer.Argument(help="A result JSON (demo.json, study.json, sample_report.json).")] = None,
    view: Annotated[Optional[str], typer.Option(help="Which table: demo-compare, demo-stages, demo-direct, "
                                                "samples-vs-real, budget, compare, or a study's name (main, "
                                                "samplers, filter, ...).")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Also draw a study result's picture (the study.png its "
                                                 "study writes) to this PNG file.")] = None,
    readme: Annotated[Optional[Path], typer.Option(help="Re-render every `<!-- result FILE VIEW -->` block of this "
                                                  "markdown file from its JSON, in place, and redraw the "
                                                  "study.png beside each study's JSON.")] = None,
) -> None:
    """Render result JSON as markdown tables (and study pictures): one result, or every result block of a
    document."""
    from ..errors import OptionError
    from ..io import atomic_path
    from ..reporting.results import draw, render, update_blocks
    if readme is not None:
        typer.echo(f"{readme}: {'updated' if update_blocks(readme) else 'up to date'}")
        return
    if result is None or view is None:
        raise OptionError("RESULT/--view", "give a result JSON and --view, or --readme FILE")
    table = render(result, view)
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise OptionError("--plot", f"{plot}: give a .png file name")
        if not plot.parent.is_dir():
            raise OptionError("--plot", f"{plot.parent}: no such folder")
        picture = draw(result, view)
        with atomic_path(plot) as tmp:
            tmp.write_bytes(picture)
    typer.echo(table)
