"""`datasetddpm export`: a finalized run's kept pairs as an HF imagefolder, mmsegmentation folders or
WebDataset tar shards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .app import command

# What to tell the user to type next, per format: the loading line the export was tested with.
LOAD_HINTS = {
    "hf": 'datasets.load_dataset("imagefolder", data_dir="{out}", split="train")',
    "mmseg": "data_root={out!r}, data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train') "
             "with the dataset class in {out}/datasetddpm_dataset.py",
    "webdataset": 'webdataset.WebDataset("{out}/{tars}", shardshuffle=False)',
}


@command("export")
def export_command(
    run: Annotated[Path, typer.Argument(help="A finalized generation run (`datasetddpm finalize`).")],
    fmt: Annotated[str, typer.Option("--format", help="hf (datasets imagefolder) | mmseg (img_dir/ann_dir) | "
                                                      "webdataset (tar shards).")],
    out: opt.Out,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a previous export at --out.")] = False,
    pairs_per_tar: Annotated[int | None, typer.Option("--pairs-per-tar", help="WebDataset only: pairs per tar "
                                                         "shard (default 1000).")] = None,
) -> None:
    """Export the kept pairs (their PNG bytes as stored, checked against the run's sha256s) for other tools."""
    from ..export import PAIRS_PER_TAR, export_run
    result = export_run(run, out, fmt, overwrite=overwrite, pairs_per_tar=pairs_per_tar)
    last = (result["pairs"] - 1) // (pairs_per_tar or PAIRS_PER_TAR)
    tars = "pairs-000000.tar" if last == 0 else f"pairs-{{000000..{last:06d}}}.tar"  # WebDataset's brace notation
    typer.echo(f"{out}: {result['pairs']} pairs, {len(result['classes'])} classes, as {fmt}")
    typer.echo("load with: " + LOAD_HINTS[fmt].format(out=str(out), tars=tars))
