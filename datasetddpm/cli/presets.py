"""`datasetddpm presets`: what each named preset sets (classes, size, features, ignore label, ADM flags)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .app import command


@command("presets")
def presets_command(
    name: Annotated[Optional[str], typer.Argument(help="Show one preset in full: class ids, names and colours.")] = None,
) -> None:
    """List the presets (embedded + the paper's six datasets), or show one in full."""
    from ..presets import get_preset, preset_details, preset_listing
    typer.echo("\n".join(preset_details(get_preset(name)) if name is not None else preset_listing()))


@command("env")
def env_command() -> None:
    """Versions, devices, torch threads and the OpenMP wait policy in use (paste it into bug reports)."""
    from ..environment import describe
    for key, value in describe().items():
        typer.echo(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
