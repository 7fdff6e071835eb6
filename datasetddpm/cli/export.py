"""`datasetddpm export`: a finalized run's kept pairs as an HF imagefolder, mmsegmentation folders,
WebDataset tar shards, COCO (panoptic, RLE), CVAT, Datumaro, FiftyOne or a Hub-ready dataset folder."""

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
    "coco-panoptic": "{out}/annotations/panoptic_train.json with the PNGs in {out}/annotations/panoptic_train",
    "coco-semantic": 'pycocotools.coco.COCO("{out}/annotations/semantic_train.json")',
    "cvat": "zip the contents of {out} and upload it to CVAT as 'Segmentation mask 1.1'",
    "datumaro": 'datumaro.Dataset.import_from("{out}", "common_semantic_segmentation")',
    "fiftyone": "python {out}/load_fiftyone.py",
    "hub": 'datasets.load_dataset("{out}", split="train")',
}


@command("export")
def export_command(
    run: Annotated[Path, typer.Argument(help="A finalized generation run (`datasetddpm finalize`).")],
    fmt: Annotated[str, typer.Option("--format", help="hf (datasets imagefolder) | mmseg (img_dir/ann_dir) | "
                                                      "webdataset (tar shards) | coco-panoptic | coco-semantic "
                                                      "(RLE JSON) | cvat (Segmentation mask 1.1) | datumaro | "
                                                      "fiftyone | hub (imagefolder + dataset card README).")],
    out: opt.Out,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a previous export at --out.")] = False,
    pairs_per_tar: Annotated[int | None, typer.Option("--pairs-per-tar", help="WebDataset only: pairs per tar "
                                                         "shard (default 1000).")] = None,
    push_to_hub: Annotated[str | None, typer.Option("--push-to-hub", help="hub only: upload the folder to this "
                                                    "Hub dataset repository (OWNER/NAME; needs a login).")] = None,
) -> None:
    """Export the kept pairs (their PNG bytes as stored, checked against the run's sha256s) for other tools."""
    from ..export import PAIRS_PER_TAR, export_run
    result = export_run(run, out, fmt, overwrite=overwrite, pairs_per_tar=pairs_per_tar, push_to_hub=push_to_hub)
    last = (result["pairs"] - 1) // (pairs_per_tar or PAIRS_PER_TAR)
    tars = "pairs-000000.tar" if last == 0 else f"pairs-{{000000..{last:06d}}}.tar"  # WebDataset's brace notation
    typer.echo(f"{out}: {result['pairs']} pairs, {len(result['classes'])} classes, as {fmt}")
    typer.echo("load with: " + LOAD_HINTS[fmt].format(out=str(out), tars=tars))
    if "url" in result:
        typer.echo(f"pushed to {result['url']}")
