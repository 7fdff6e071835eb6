"""COCO's two JSON layouts for semantic masks (each class present in an image is one segment).

    coco-panoptic  DIR/images/train/<stem>.png; DIR/annotations/panoptic_train/<stem>.png (RGB: segment
                   id = R + 256 G + 256^2 B, 0 = unlabelled, i.e. the ignore label); DIR/annotations/
                   panoptic_train.json (images, annotations with segments_info, categories: all stuff)
    coco-semantic  DIR/images/train/<stem>.png; DIR/annotations/semantic_train.json: one annotation per
                   (image, class) whose segmentation is compressed COCO RLE (`pycocotools.mask.decode`)

Category ids are class ids + 1 (COCO keeps 0 for "no category"); a segment's id is its category id.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .base import _write, _write_common, _write_json, class_names, pair_bytes, sample_name


def mask_array(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def categories(card: dict) -> list[dict]:
    """One stuff category per class that is not the ignore label, with the card's colour."""
    return [{"id": k + 1, "name": name, "supercategory": name, "isthing": 0, "color": list(card["palette"][k])}
            for k, name in enumerate(class_names(card)) if k != card["ignore_label"]]


def coco_rle(region: np.ndarray) -> dict:
    """A boolean H x W region as COCO's compressed RLE: run lengths in column-major order starting with a
    run of zeros, each stored as its difference to the run two before (from the third on) in 5-bit
    groups, low first, offset by 48 into printable characters (pycocotools' rleToString)."""
    flat = np.asarray(region, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.r_[0, changes, flat.size]).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    chars = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c, x = x & 0x1F, x >> 5
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr((c | 0x20 if more else c) + 48))
    return {"size": list(region.shape), "counts": "".join(chars)}


def bbox(region: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(region)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _present(mask: np.ndarray, ignore: int):
    for k in np.unique(mask).tolist():
        if k != ignore:
            yield k, mask == k


def _image_entry(row: dict, mask: np.ndarray) -> dict:
    return {"id": row["id"], "file_name": sample_name(row["id"]), "height": int(mask.shape[0]),
            "width": int(mask.shape[1]), "seed": row["seed"], "uncertainty": row["uncertainty"]}


def export_coco_panoptic(pairs, dest) -> None:
    images, annotations, ignore = [], [], pairs.card["ignore_label"]
    for row in pairs.rows:
        image, mask_png = pair_bytes(pairs.root, row)
        mask, name = mask_array(mask_png), sample_name(row["id"])
        _write(dest / "images" / "train" / name, image)
        segment_ids = np.where(mask == ignore, 0, mask.astype(np.int64) + 1)
        rgb = np.stack([segment_ids % 256, segment_ids // 256 % 256, segment_ids // 65536], -1).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG")
        _write(dest / "annotations" / "panoptic_train" / name, buffer.getvalue())
        segments = [{"id": k + 1, "category_id": k + 1, "area": int(region.sum()), "bbox": bbox(region),
                     "iscrowd": 0} for k, region in _present(mask, ignore)]
        images.append(_image_entry(row, mask))
        annotations.append({"image_id": row["id"], "file_name": name, "segments_info": segments})
    _write_json(dest / "annotations" / "panoptic_train.json", {
        "info": {"description": "datasetddpm export (semantic masks as stuff segments)"}, "licenses": [],
        "images": images, "annotations": annotations, "categories": categories(pairs.card)})
    _write_common(pairs, dest)


def export_coco_semantic(pairs, dest) -> None:
    images, annotations, ignore = [], [], pairs.card["ignore_label"]
    for row in pairs.rows:
        image, mask_png = pair_bytes(pairs.root, row)
        mask = mask_array(mask_png)
        _write(dest / "images" / "train" / sample_name(row["id"]), image)
        images.append(_image_entry(row, mask))
        for k, region in _present(mask, ignore):
            annotations.append({"id": len(annotations) + 1, "image_id": row["id"], "category_id": k + 1,
                                "segmentation": coco_rle(region), "area": int(region.sum()),
                                "bbox": bbox(region), "iscrowd": 0})
    _write_json(dest / "annotations" / "semantic_train.json", {
        "info": {"description": "datasetddpm export (one RLE annotation per image and class)"}, "licenses": [],
        "images": images, "annotations": annotations, "categories": categories(pairs.card)})
    _write_common(pairs, dest)
