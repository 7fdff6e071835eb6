"""The first export formats and what every format shares: reading a finalized run's kept pairs (bytes
checked), writing files, the run's card, and the staged folder that is renamed into place at the end.

    hf          DIR/train/metadata.jsonl, DIR/train/images/*.png, DIR/train/masks/*.png, DIR/id2label.json
                `datasets.load_dataset("imagefolder", data_dir=DIR)`: columns image, label (the mask), id,
                seed, uncertainty
    mmseg       DIR/img_dir/train/*.png, DIR/ann_dir/train/*.png (same basenames), DIR/classes.json and
                DIR/datasetddpm_dataset.py (a BaseSegDataset with the classes and palette)
    webdataset  DIR/pairs-000000.tar, ...: <key>.png, <key>.mask.png, <key>.json per pair; DIR/id2label.json

Only the kept pairs (those `train-deeplab` trains on) are exported. Their PNG bytes are copied from the
shards, never re-encoded, and checked against the sha256 the run recorded: an export holds exactly the
run's pairs. Masks are palette PNGs whose pixel values are the class ids (the ignore label as is):
`datasets` and mmseg's LoadAnnotations read them as ids; webdataset's image decoders convert to RGB, so
a mask is decoded with `np.array(PIL.Image.open(...))` (a `handle_extension("mask.png", ...)` handler).
Every format also gets the run's dataset card (datasetddpm_card.json).
The export is written into a hidden sibling folder and renamed into place at the end, so a killed
export leaves no half-written DIR.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from ..data.generated import GeneratedPairs
from ..errors import DatasetDDPMError, InputError, OptionError
from ..io import check_output_dir, check_unlocked, staged_folder  # noqa: F401  (staged_folder re-exported)
from ..io import write_synced as _write  # every format writes through it (fsynced)
from ..data.shards import sample_name
from ..pipeline.verify import cheap_check

CARD_NAME = "datasetddpm_card.json"  # the run's card, in every export (also marks a folder as one)
PAIRS_PER_TAR = 1000  # ~100-300 MB tars at 256 px: the shard size WebDataset recommends


def finalized_pairs(run: Path) -> GeneratedPairs:
    """The kept pairs of a finalized run that passes the cheap checks, read as `train-deeplab` reads them."""
    if not (run / "manifest.json").is_file():
        raise InputError(run, "not a generation run (no manifest.json)" if run.is_dir() else "not found")
    for name in ("index.jsonl", "dataset_card.json"):
        if not (run / name).is_file():
            raise InputError(run / name, f"missing: the run is not finalized; run `datasetddpm finalize --out {run}`")
    cheap_check(run, index=True)
    pairs = GeneratedPairs(run)
    if not pairs.rows:
        raise DatasetDDPMError(f"{run}: keeps no pairs; finalize it again with a smaller --drop-fraction")
    return pairs


def class_names(card: dict) -> list[str]:
    """The card's class names in id order (class_0.. when the labeller had none, as --num-classes names them)."""
    return list(card["classes"]) or [f"class_{k}" for k in range(len(card["palette"]))]


def pair_bytes(run: Path, row: dict) -> tuple[bytes, bytes]:
    """A kept pair's stored PNG bytes (image, mask), through the per-pair check `train-deeplab` reads with:
    the sha256 that the run's index records, and the mask's class ids."""
    from ..data.generated import checked_pair_bytes
    return checked_pair_bytes(run, row)


def _write_json(path: Path, data) -> None:
    _write(path, (json.dumps(data, indent=2) + "\n").encode())


def _write_common(pairs: GeneratedPairs, dest: Path) -> None:
    """id2label.json (the HF segmentation convention) and the run's card, for provenance and the ignore label."""
    _write_json(dest / "id2label.json", {str(k): name for k, name in enumerate(class_names(pairs.card))})
    _write(dest / CARD_NAME, (pairs.root / "dataset_card.json").read_bytes())


def export_hf(pairs: GeneratedPairs, dest: Path) -> None:
    """An imagefolder dataset: metadata.jsonl's `file_name` and `label_file_name` become the Image columns
    `image` and `label`; id, seed and uncertainty become plain columns."""
    split, lines = dest / "train", []
    for row in pairs.rows:
        image, mask = pair_bytes(pairs.root, row)
        name = sample_name(row["id"])
        _write(split / "images" / name, image)
        _write(split / "masks" / name, mask)
        lines.append(json.dumps({"file_name": f"images/{name}", "label_file_name": f"masks/{name}", "id": row["id"],
                                 "seed": row["seed"], "uncertainty": row["uncertainty"]}))
    _write(split / "metadata.jsonl", "".join(line + "\n" for line in lines).encode())
    _write_common(pairs, dest)


MMSEG_DATASET = '''\
"""mmsegmentation 1.x dataset class for this export (written by `datasetddpm export --format mmseg`).

Put this folder on PYTHONPATH and in the config:
    custom_imports = dict(imports=["datasetddpm_dataset"], allow_failed_imports=False)
    train_dataloader = dict(dataset=dict(type="DatasetDDPMDataset", data_root="<this folder>",
        data_prefix=dict(img_path="img_dir/train", seg_map_path="ann_dir/train"), pipeline=train_pipeline))
Masks are palette PNGs whose pixel values are the class ids; mmseg's LoadAnnotations (pillow backend)
reads them as ids.
"""
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS


@DATASETS.register_module()
class DatasetDDPMDataset(BaseSegDataset):
    METAINFO = dict(classes={classes!r}, palette={palette!r})

    def __init__(self, img_suffix=".png", seg_map_suffix=".png", reduce_zero_label=False, ignore_index={ignore},
                 **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, reduce_zero_label=reduce_zero_label,
                         ignore_index=ignore_index, **kwargs)
'''


def export_mmseg(pairs: GeneratedPairs, dest: Path) -> None:
    """mmsegmentation's layout: img_dir/train and ann_dir/train with the same basenames, class ids in the masks."""
    for row in pairs.rows:
        image, mask = pair_bytes(pairs.root, row)
        name = sample_name(row["id"])
        _write(dest / "img_dir" / "train" / name, image)
        _write(dest / "ann_dir" / "train" / name, mask)
    classes, palette = tuple(class_names(pairs.card)), [list(c) for c in pairs.card["palette"]]
    ignore = pairs.card["ignore_label"]
    _write_json(dest / "classes.json", {"classes": list(classes), "palette": palette, "ignore_index": ignore,
                                        "img_suffix": ".png", "seg_map_suffix": ".png", "reduce_zero_label": False})
    _write(dest / "datasetddpm_dataset.py", MMSEG_DATASET.format(classes=classes, palette=palette,
                                                                 ignore=ignore).encode())
    _write_common(pairs, dest)


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed metadata: the same run gives the same tars
    tar.addfile(info, io.BytesIO(data))


def export_webdataset(pairs: GeneratedPairs, dest: Path, pairs_per_tar: int = PAIRS_PER_TAR) -> None:
    """Tar shards of `pairs_per_tar` pairs; a pair's members share the key (its 7-digit id), as WebDataset
    groups them: <key>.png (image), <key>.mask.png (mask), <key>.json (id, seed, uncertainty, sha256s)."""
    rows = pairs.rows
    for start in range(0, len(rows), pairs_per_tar):
        with open(dest / f"pairs-{start // pairs_per_tar:06d}.tar", "wb") as f:
            with tarfile.open(fileobj=f, mode="w") as tar:
                for row in rows[start:start + pairs_per_tar]:
                    image, mask = pair_bytes(pairs.root, row)
                    key = f"{row['id']:07d}"
                    meta = {k: row[k] for k in ("id", "seed", "uncertainty", "image_sha256", "mask_sha256")}
                    for suffix, data in (("png", image), ("mask.png", mask), ("json", json.dumps(meta).encode())):
                        _tar_member(tar, f"{key}.{suffix}", data)
            f.flush()
            os.fsync(f.fileno())
    _write_common(pairs, dest)


def check_export_out(out: Path, run: Path, overwrite: bool) -> None:
    check_output_dir(out)
    check_unlocked(out)  # another command writes there: nothing is replaced under it
    r, o = run.resolve(), out.resolve()
    if o == r or o in r.parents or r in o.parents:
        raise OptionError("--out", f"{out} overlaps the run {run}; export to a folder outside it")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OptionError("--out", f"{out} exists and is not empty; pass --overwrite to replace it")
        if not (out / CARD_NAME).is_file():  # --overwrite deletes the folder: only ever a previous export
            raise OptionError("--overwrite", f"{out} is not a previous export (no {CARD_NAME}); it is not deleted, "
                                             f"choose another --out")
