"""`datasetddpm export RUN --format FORMAT --out DIR`: a finalized run's kept pairs in the layouts other
training code and tools already read. Each format's layout is in its module's docstring:

    hf, mmseg, webdataset           base.py      datasets imagefolder, mmsegmentation, WebDataset tars
    coco-panoptic, coco-semantic    coco.py      COCO panoptic PNGs + segments_info; COCO RLE JSON
    cvat, datumaro, fiftyone        tools.py     CVAT Segmentation mask 1.1; Datumaro common semantic
                                                 segmentation; FiftyOne segmentation dataset
    hub                             hub.py       imagefolder + README dataset card for the HF Hub

Only the kept pairs are exported, their bytes checked against the run's sha256s; every format also gets
the run's card (datasetddpm_card.json); the folder appears whole at the end or not at all.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import OptionError
from .base import (CARD_NAME, PAIRS_PER_TAR, check_export_out, class_names, export_hf, export_mmseg,  # noqa: F401
                   export_webdataset, finalized_pairs, staged_folder)
from .coco import export_coco_panoptic, export_coco_semantic
from .hub import check_repo, export_hub
from .hub import push_to_hub as upload
from .tools import export_cvat, export_datumaro, export_fiftyone

WRITERS = {"hf": export_hf, "mmseg": export_mmseg, "webdataset": export_webdataset,
           "coco-panoptic": export_coco_panoptic, "coco-semantic": export_coco_semantic, "cvat": export_cvat,
           "datumaro": export_datumaro, "fiftyone": export_fiftyone, "hub": export_hub}
FORMATS = tuple(WRITERS)


def export_run(run: str | Path, out: str | Path, fmt: str, *, overwrite: bool = False,
               pairs_per_tar: int | None = None, push_to_hub: str | None = None) -> dict:
    """Export a finalized run's kept pairs as `fmt` into `out`; everything is checked before anything is written."""
    run, out = Path(run), Path(out)
    if fmt not in FORMATS:
        raise OptionError("--format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if pairs_per_tar is not None and fmt != "webdataset":
        raise OptionError("--pairs-per-tar", f"only applies to --format webdataset, not {fmt}")
    if pairs_per_tar is not None and pairs_per_tar < 1:
        raise OptionError("--pairs-per-tar", f"must be >= 1, got {pairs_per_tar}")
    if push_to_hub is not None:
        if fmt != "hub":
            raise OptionError("--push-to-hub", f"only applies to --format hub, not {fmt}")
        check_repo(push_to_hub)
    pairs = finalized_pairs(run)
    check_export_out(out, run, overwrite)
    with staged_folder(out) as dest:
        if fmt == "webdataset":
            export_webdataset(pairs, dest, pairs_per_tar or PAIRS_PER_TAR)
        else:
            WRITERS[fmt](pairs, dest)
    result = {"format": fmt, "pairs": len(pairs), "out": str(out), "classes": class_names(pairs.card)}
    if push_to_hub is not None:
        result["url"] = upload(out, push_to_hub)
    return result
