"""The `datasetddpm` command: a typer app whose commands are thin wrappers over library functions."""

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


def _register() -> None:
    # Importing a command module adds its commands to `app`.
    from . import convert, data, ddpm, deeplab, demo, ensemble, pipeline, presets, probe, study  # noqa: F401


def get_app() -> typer.Typer:
    """The app with every command registered (for CliRunner tests and embedding)."""
    _register()
    return app


def main() -> None:
    """Entry point. User mistakes print one line and exit 2; DATASETDDPM_DEBUG=1 shows tracebacks."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    get_app()()
