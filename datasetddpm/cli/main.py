"""The `datasetddpm` command: a typer app whose commands are thin wrappers over library functions."""

from __future__ import annotations

import os

import typer

from .app import app, command  # noqa: F401  (re-exported for embedding)


def get_app() -> typer.Typer:
    """The app with every command registered (for CliRunner tests and embedding)."""
    # Importing a command module adds its commands to `app`.
    from . import convert, data, ddpm, deeplab, demo, ensemble, export, pipeline, presets, probe, show, study  # noqa: F401
    from . import stylegan2  # noqa: F401
    from . import labelling  # noqa: F401
    from . import download, reproduce  # noqa: F401
    return app


def main() -> None:
    """Entry point. User mistakes print one line and exit 2; DATASETDDPM_DEBUG=1 shows tracebacks."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    # OpenMP threads that spin while waiting take the cores their partners need when other jobs share
    # the machine (ensemble training was measured 28x slower so); passive waiting costs little when the
    # machine is idle. Set before torch is imported; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    get_app()()
