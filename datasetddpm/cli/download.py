"""`datasetddpm download NAME`: the paper's checkpoints and datasets, resumable and checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as opt
from .app import command
from .runtime import runtime


@command("download")
def download_command(
    name: Annotated[str, typer.Argument(help="What to fetch: lsun_bedroom, lsun_cat, lsun_horse, ffhq (ADM "
                                        "checkpoints) or datasets (the reference datasets archive); 'list' shows "
                                        "each with its URLs and licence.")],
    directory: Annotated[Optional[Path], typer.Option("--dir", help="Where the file goes (default: checkpoints/ "
                                                      "for a checkpoint, datasets/ for the datasets).")] = None,
    url: Annotated[Optional[str], typer.Option("--url", help="Fetch from this URL instead (a local mirror: "
                                               "http://, https:// or file://); checked the same way.")] = None,
    retries: Annotated[int, typer.Option(help="Resumes after a dropped connection before giving up (a rerun "
                                         "resumes too).")] = 3,
    quiet: opt.Quiet = False,
) -> None:
    """Download an ADM checkpoint or the reference datasets from the registry's published URLs: resumable
    (HTTP range), atomic, checked; a checkpoint is then converted as `convert-adm` does, the datasets are
    unpacked and read as `train-ensemble` reads them. A rerun of a finished download does nothing."""
    from ..downloads.install import download
    from ..downloads.registry import REGISTRY
    if name == "list":
        for e in REGISTRY.values():
            typer.echo(f"{e.name} ({e.kind}, presets {', '.join(e.presets)}): {' | '.join(e.urls)}\n  licence: {e.licence}")
        return
    if retries < 0:
        raise opt.option_error("--retries", f"must be >= 0, got {retries}")
    from ..downloads.registry import get_entry
    entry = get_entry(name)
    directory = directory or Path("checkpoints" if entry.kind == "checkpoint" else "datasets")
    record = download(name, directory, url=url, retries=retries, progress=runtime(quiet=quiet).progress,
                      log=typer.echo)
    if record["already"]:
        typer.echo(f"{name}: already downloaded and checked in {directory} (sha256 {record['sha256'][:12]}): "
                   "nothing to do")
