"""Formats of labelling and dataset tools.

    cvat      CVAT's "Segmentation mask 1.1", unpacked (zip DIR's contents to upload it): labelmap.txt,
              SegmentationClass/<stem>.png (RGB, the card's palette), ImageSets/Segmentation/default.txt,
              JPEGImages/<stem>.png
    datumaro  Datumaro's "common semantic segmentation": dataset_meta.json (label_map and
              segmentation_colors), images/<stem>.png, masks/<stem>.png (RGB, the same colours)
    fiftyone  FiftyOne's ImageSegmentationDirectory (data/<stem>.png, labels/<stem>.png: class ids,
              greyscale, as OpenCV reads them) and
              fiftyone.json: mask_targets and each sample's uncertainty, for `load_fiftyone.py` beside
              it, which builds the dataset (a Segmentation field `ground_truth`, the mask_targets, an
              `uncertainty` field to sort by in the app)
"""

from __future__ import annotations

import io

from PIL import Image

from ..labelling_tools.cvat import colour_mask_png, cvat_files, labelmap
from .base import _write, _write_common, _write_json, class_names, pair_bytes, sample_name
from .coco import mask_array


def _stems_images_masks(pairs):
    stems, images, masks = [], [], []
    for row in pairs.rows:
        image, mask = pair_bytes(pairs.root, row)
        stems.append(sample_name(row["id"])[:-len(".png")])
        images.append(image)
        masks.append(mask)
    return stems, images, masks


def export_cvat(pairs, dest) -> None:
    stems, images, masks = _stems_images_masks(pairs)
    card = pairs.card
    files = cvat_files(stems, [mask_array(m) for m in masks], class_names(card), card["palette"],
                       card["ignore_label"], images)
    for name, data in files.items():
        _write(dest / name, data)
    _write_common(pairs, dest)


def export_datumaro(pairs, dest) -> None:
    card, (stems, images, masks) = pairs.card, _stems_images_masks(pairs)
    rows = labelmap(class_names(card), card["palette"], card["ignore_label"])
    for stem, image, mask in zip(stems, images, masks):
        _write(dest / "images" / f"{stem}.png", image)
        _write(dest / "masks" / f"{stem}.png", colour_mask_png(mask_array(mask), rows, card["ignore_label"]))
    _write_json(dest / "dataset_meta.json", {"label_map": {str(i): name for i, (name, _) in enumerate(rows)},
                                             "segmentation_colors": [list(rgb) for _, rgb in rows]})
    _write_common(pairs, dest)


FIFTYONE_LOADER = '''\
"""Load this folder (`datasetddpm export --format fiftyone`) as a FiftyOne dataset:

    python load_fiftyone.py [NAME]     then   fiftyone app launch NAME

Each sample has the Segmentation field `ground_truth` (masks of class ids; the dataset's mask_targets
name them) and `uncertainty` (the ensemble's score: sort by it in the app to see the least sure first).
"""
import json
import sys
from pathlib import Path

import fiftyone as fo

here = Path(__file__).resolve().parent
meta = json.loads((here / "fiftyone.json").read_text())
dataset = fo.Dataset.from_dir(dataset_dir=str(here), dataset_type=fo.types.ImageSegmentationDirectory,
                              data_path="data", labels_path="labels", label_field="ground_truth",
                              name=sys.argv[1] if len(sys.argv) > 1 else None)
dataset.mask_targets = {"ground_truth": {int(k): v for k, v in meta["mask_targets"].items()}}
for sample in dataset.iter_samples(autosave=True):
    sample["uncertainty"] = meta["uncertainty"][Path(sample.filepath).name]
print(dataset)
'''


def export_fiftyone(pairs, dest) -> None:
    card, uncertainty = pairs.card, {}
    for row in pairs.rows:
        image, mask = pair_bytes(pairs.root, row)
        name = sample_name(row["id"])
        _write(dest / "data" / name, image)
        buffer = io.BytesIO()  # greyscale: FiftyOne reads masks with OpenCV, which turns palette PNGs into colours
        Image.fromarray(mask_array(mask)).convert("L").save(buffer, format="PNG")
        _write(dest / "labels" / name, buffer.getvalue())
        uncertainty[name] = row["uncertainty"]
    targets = {str(k): n for k, n in enumerate(class_names(card)) if k != card["ignore_label"]}
    _write_json(dest / "fiftyone.json", {"mask_targets": targets, "uncertainty": uncertainty})
    _write(dest / "load_fiftyone.py", FIFTYONE_LOADER.encode())
    _write_common(pairs, dest)

