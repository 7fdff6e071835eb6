"""The typer app and the `command` decorator every command module registers with."""

from __future__ import annotations

import functools
import inspect
import os
import sys
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

try:  # typer >= 0.24 carries its own copy of click; earlier versions use click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_errors

from ..errors import DatasetDDPMError, printable
from .config_file import apply_config_file, save_resolved_args


class OneLineErrors(TyperGroup):
    """Usage mistakes (an unknown option, a value of the wrong type, a missing option) print one line,
    `Error: ...`, and exit 2, like the toolkit's own checks, instead of click's boxed usage panel."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click_errors.ClickException as e:
            if not standalone_mode:
                raise
            if type(e).__name__ == "NoArgsIsHelpError":  # the help was printed while parsing
                sys.exit(e.exit_code)
            message = " ".join(e.format_message().split())
            if isinstance(e, click_errors.UsageError) and e.ctx is not None:
                message = f"{e.ctx.command_path}: {message}"
            typer.echo(f"Error: {message}", err=True)
            sys.exit(e.exit_code)
        except DatasetDDPMError as e:  # from a parse-time callback (a bad --config file)
            if not standalone_mode or os.environ.get("DATASETDDPM_DEBUG"):
                raise
            typer.echo(f"Error: {e}", err=True)
            sys.exit(2)
        except typer.Abort:
            if not standalone_mode:
                raise
            typer.echo("Aborted.", err=True)
            sys.exit(1)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


app = typer.Typer(name="datasetddpm", cls=OneLineErrors, no_args_is_help=True, add_completion=False,
                  help="Label-efficient semantic segmentation with diffusion models (DatasetDDPM).")


ConfigFile = Annotated[Optional[Path], typer.Option(
    "--config", is_eager=True, callback=apply_config_file,
    help="YAML file of option values (flat, or one section per command); flags override it.")]


def command(name: str, group: typer.Typer | None = None):
    """Register a command (on `app`, or on a sub-command `group`) whose user errors become one line on
    stderr and exit code 2. Every command also takes `--config FILE`, saves its resolved arguments as
    `<out>/<name>.args.yaml` when it succeeds, and draws the pictures of the library calls it makes
    (training curves, previews, compare page, study pictures) through `reporting.hooks.FigureWriter`."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, config: Optional[Path] = None, **kwargs):
            from ..hooks import drawing
            from ..reporting.hooks import FigureWriter
            try:
                with drawing(FigureWriter()):  # a command writes its pictures; the library alone draws none
                    result = fn(*args, **kwargs)
                save_resolved_args(name, {**kwargs, "config": config})  # an OS error here is one line too
            except DatasetDDPMError as e:
                if os.environ.get("DATASETDDPM_DEBUG"):
                    raise
                typer.echo(f"Error: {printable(e)}", err=True)  # a file name that is not UTF-8 as \xNN
                raise typer.Exit(2) from None
            return result
        signature = inspect.signature(fn, eval_str=True)
        extra = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigFile)
        wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), extra])
        wrapper.__annotations__ = {**typing.get_type_hints(fn, include_extras=True), "config": ConfigFile}
        return (group or app).command(name)(wrapper)
    return decorate


@app.callback()
def _root() -> None:
    """Label-efficient semantic segmentation with diffusion models (DatasetDDPM)."""
