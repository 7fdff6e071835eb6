"""`datasetddpm import-annotations`: a Label Studio or CVAT export back into a labelled folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as opt
from .app import command


@command("import-annotations")
def import_annotations_command(
    export: Annotated[Path, typer.Argument(help="A Label Studio JSON export (.json: brush RLE or polygons), or a "
                                                "CVAT 'Segmentation mask 1.1' export (.zip or its unpacked folder).")],
    out: opt.Out,
    images: Annotated[Optional[Path], typer.Option("--images", help="Folder of the annotated images (default: "
                                                   "the folder EXPORT is in).")] = None,
    classes: Annotated[Optional[str], typer.Option("--classes", help="Class names in id order, comma-separated "
                                                   "(default: from label_studio_config.xml in --images).")] = None,
    ignore_label: Annotated[int, typer.Option("--ignore-label", help="Id of unlabelled pixels.")] = 255,
) -> None:
    """Turn a labelling tool's export into a labelled folder (`<stem>.png` + `<stem>_mask.png`) that
    `train-ensemble --data` reads, checked as every labelled folder is; nothing is written if anything is wrong."""
    from ..labelling_tools.importing import import_annotations
    result = import_annotations(export, out, images=images, classes=classes, ignore_label=ignore_label)
    typer.echo(f"{out}: {result['pairs']} labelled images from the {result['format']} export, "
               f"{len(result['classes'])} classes")
