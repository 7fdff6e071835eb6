"""What `annotate` and `suggest` write beside their images for the annotators' tools: Label Studio's
labelling config and tasks (with the model's masks and uncertainty as predictions, when there is a
model), and the same masks as a CVAT "Segmentation mask 1.1" zip to upload as annotations."""

from __future__ import annotations

from pathlib import Path

from ..data.images import palette_for
from .cvat import cvat_files, write_cvat_zip
from .label_studio import write_label_studio_import

CVAT_ZIP = "cvat_preannotations.zip"


def ensemble_classes(cfg) -> list[str]:
    """An ensemble's class names in id order (class_0.. when it was trained without names)."""
    return list(cfg.class_names) or [f"class_{k}" for k in range(cfg.num_classes)]


def write_preannotations(folder: str | Path, files: list[str], classes: list[str], *, masks=None, scores=None,
                         ignore_label: int = 255, model_version: str = "datasetddpm") -> list[str]:
    """Write the imports beside the images `files` in `folder`; returns the names of the files written."""
    folder, palette = Path(folder), palette_for(len(classes))
    write_label_studio_import(folder, files, classes, palette, masks=masks, scores=scores,
                              ignore_label=ignore_label, model_version=model_version)
    written = ["label_studio_config.xml", "label_studio_tasks.json"]
    if masks is not None:
        stems = [Path(f).stem for f in files]
        write_cvat_zip(folder / CVAT_ZIP, cvat_files(stems, masks, classes, palette, ignore_label))
        written.append(CVAT_ZIP)
    return written
