"""The typer app and the `command` decorator every command module registers with."""

from __future__ import annotations

import functools
import os

import typer

from ..errors import DatasetDDPMError

app = typer.Typer(name="datasetddpm", no_args_is_help=True, add_completion=False,
                  help="Label-efficient semantic segmentation with diffusion models (DatasetDDPM).")


def command(name: str, group: typer.Typer | None = None):
    """Register a command (on `app`, or on a sub-command `group`) whose user errors become one line on
    stderr and exit code 2."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except DatasetDDPMError as e:
                if os.environ.get("DATASETDDPM_DEBUG"):
                    raise
                typer.echo(f"Error: {e}", err=True)
                raise typer.Exit(2) from None
        return (group or app).command(name)(wrapper)
    return decorate


@app.callback()
def _root() -> None:
    """Label-efficient semantic segmentation with diffusion models (DatasetDDPM)."""
