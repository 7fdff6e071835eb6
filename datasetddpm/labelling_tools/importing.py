"""`datasetddpm import-annotations EXPORT --out FOLDER`: a labelling tool's export as a labelled folder.

EXPORT is a Label Studio JSON export (brush RLE or polygons) or a CVAT "Segmentation mask 1.1" export
(its zip or unpacked folder). Images are found by name in --images (default: the folder EXPORT is in,
where `annotate`/`suggest` put them), class names in its label_studio_config.xml or --classes. The
folder gets `<stem>.<ext>` (the image's bytes) and `<stem>_mask.png` (class ids) per annotated image,
is checked as every labelled folder is (`read_labelled`, as `train-ensemble` reads it) and appears
whole or not at all.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..data.folders import MASK_SUFFIX_PNG, read_labelled
from ..data.images import mask_image, read_image
from ..errors import InputError, OptionError
from ..io import check_output_dir, staged_folder, write_json, write_synced
from .cvat import cvat_masks, read_cvat_export
from .label_studio import CONFIG_FILE, annotation_mask, classes_from_config, final_annotation, image_name, read_export

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
RECORD = "import_annotations.json"


def resolve_classes(classes: str | None, images: Path) -> list[str]:
    if classes is not None:
        names = [c.strip() for c in classes.split(",")]
        if not all(names) or len(set(names)) != len(names):
            raise OptionError("--classes", f"expected distinct comma-separated names, got {classes!r}")
        return names
    config = images / CONFIG_FILE
    if not config.is_file():
        raise OptionError("--classes", f"not given and {config} is missing; pass the class names in id order")
    return classes_from_config(config)


def _find_image(images: Path, name: str, where: str) -> Path:
    path = images / name
    if Path(name).name != name or not path.is_file():
        raise InputError(where, f"image {name!r} not found in {images} (pass --images FOLDER)")
    return path


def label_studio_pairs(export: Path, images: Path, classes: list[str], ignore_label: int):
    """(image path, mask) for every task with a submitted annotation."""
    pairs, seen = [], set()
    for n, task in enumerate(read_export(export)):
        annotation = final_annotation(task)
        if annotation is None:
            continue
        name = image_name(task)
        where = f"{export} (task {task.get('id', n)}, {name})"
        if name in seen:
            raise InputError(where, "a second task for the same image")
        seen.add(name)
        path = _find_image(images, name, where)
        size = read_image(path).shape[:2]
        pairs.append((path, annotation_mask(annotation, size, classes, ignore_label, where)))
    if not pairs:
        raise InputError(export, "no task has a submitted annotation")
    return pairs


def cvat_pairs(export: Path, images: Path, classes: list[str], ignore_label: int):
    files = read_cvat_export(export)
    pairs = []
    for stem, mask in cvat_masks(files, classes, ignore_label, export).items():
        candidates = [images / (stem + s) for s in IMAGE_SUFFIXES if (images / (stem + s)).is_file()]
        if not candidates:
            raise InputError(f"{export}/SegmentationClass/{stem}.png", f"image {stem}.png|jpg not found in {images} "
                                                                       "(pass --images FOLDER)")
        image, where = read_image(candidates[0]), f"{export}/SegmentationClass/{stem}.png"
        if image.shape[:2] != mask.shape:
            raise InputError(where, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                                    f"{image.shape[1]}x{image.shape[0]}")
        if (mask == ignore_label).all():
            raise InputError(where, "the mask labels no pixel (an empty mask)")
        pairs.append((candidates[0], mask))
    return pairs


def _write_folder(dest: Path, pairs, num_classes: int) -> None:
    for path, mask in pairs:
        write_synced(dest / path.name, path.read_bytes())  # the rename into place publishes only synced files
        png = io.BytesIO()
        mask_image(mask.astype(np.uint8), num_classes).save(png, format="PNG")
        write_synced(dest / f"{path.stem}{MASK_SUFFIX_PNG}", png.getvalue())


def import_annotations(export: str | Path, out: str | Path, *, images: str | Path | None = None,
                       classes: str | None = None, ignore_label: int = 255) -> dict:
    """Read, check and write; returns what was imported. Nothing is written when anything is refused."""
    export, out = Path(export), Path(out)
    if not export.exists():
        raise InputError(export, "not found")
    images = Path(images) if images is not None else export.resolve().parent
    if not images.is_dir():
        raise OptionError("--images", f"{images} is not a folder")
    if not 0 <= ignore_label <= 255:
        raise OptionError("--ignore-label", f"must be in [0, 255], got {ignore_label}")
    names = resolve_classes(classes, images)
    fmt = "cvat" if export.is_dir() or export.suffix.lower() == ".zip" else "label-studio"
    pairs = (cvat_pairs if fmt == "cvat" else label_studio_pairs)(export, images, names, ignore_label)
    check_output_dir(out)
    if out.is_dir() and any(out.iterdir()):
        raise OptionError("--out", f"{out} exists and is not empty; choose a new folder")
    with staged_folder(out) as dest:
        _write_folder(dest, pairs, len(names))
        try:
            read_labelled(dest, len(names), ignore_label)  # as train-ensemble will read it
        except InputError as e:
            raise InputError(str(e.path).replace(str(dest), str(out)), e.problem) from None
        write_json(dest / RECORD, {"export": str(export), "format": fmt, "images": str(images), "classes": names,
                                   "ignore_label": ignore_label, "files": [p.name for p, _ in pairs]})
    return {"format": fmt, "pairs": len(pairs), "classes": names, "out": str(out)}
