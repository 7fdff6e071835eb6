"""Option definitions shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Model = Annotated[str, typer.Option("--model", help="Diffusion checkpoint directory, or 'embedded' for the shipped model.")]
Out = Annotated[Path, typer.Option("--out", help="Output directory.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same result.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing run with a different config.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
Threads = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch (default: all cores).")]
Preset = Annotated[str, typer.Option("--preset", help="Named preset (classes, blocks, steps, resolution).")]
Blocks = Annotated[Optional[str], typer.Option("--blocks", help="Decoder blocks, ADM numbering, e.g. '5,6,7,8,12' (default: preset).")]
Steps = Annotated[Optional[str], typer.Option("--steps", help="Diffusion steps t, e.g. '50,150,250' (default: preset).")]
IgnoreLabel = Annotated[Optional[int], typer.Option("--ignore-label", help="Label id that marks unlabelled pixels (default: preset, usually 255).")]


def parse_ints(option: str, text: str | None) -> tuple[int, ...] | None:
    from ..errors import OptionError
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v != "")
    except ValueError:
        raise OptionError(option, f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise OptionError(option, "expected at least one integer")
    return values


def set_threads(threads: int | None) -> None:
    if threads:
        import torch
        torch.set_num_threads(threads)
