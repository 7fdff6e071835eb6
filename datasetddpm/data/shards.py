"""Shards: fixed ranges of global sample ids, written atomically, committed by a sidecar.

    RUN/shards/00003/images/0001500.png     samples (RGB PNG)
    RUN/shards/00003.json                   commit marker: ids, seeds, sha256 of every image
    RUN/shards/00003/masks/0001500.png      ensemble labels (palette PNG)
    RUN/shards/00003.labels.json            commit marker: sha256 of every mask, JS uncertainty

A shard's files are written into a hidden `.partial` folder, fsynced and renamed into place; only
then is its sidecar written (atomically). A shard without its sidecar is incomplete and is redone.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from .images import mask_image
from ..io import _maybe_killed, is_stale_temporary, read_json, remove_stale_temporaries, write_error, write_json


def shard_name(k: int) -> str:
    return f"{k:05d}"


def sample_name(i: int) -> str:
    return f"{i:07d}.png"


def png_bytes(array: np.ndarray, palette_classes: int | None = None) -> bytes:
    im = Image.fromarray(array) if palette_classes is None else mask_image(array, palette_classes)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_files_atomically(final_dir: Path, files: dict[str, bytes]) -> None:
    """Write `files` (name -> bytes) into `final_dir` via a `.partial` sibling and one rename.
    An OS error (disk full, read-only) removes the partial folder and is one line naming the shard."""
    partial = final_dir.with_name("." + final_dir.name + ".partial")
    try:
        _write_partial(partial, final_dir, files)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise write_error(final_dir, e) from None


def _write_partial(partial: Path, final_dir: Path, files: dict[str, bytes]) -> None:
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name, data in files.items():
        with open(partial / name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    _fsync_dir(partial)
    _maybe_killed()
    shutil.rmtree(final_dir, ignore_errors=True)
    os.replace(partial, final_dir)
    _fsync_dir(final_dir.parent)


class ShardStore:
    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir) / "shards"

    def sidecar(self, k: int, labels: bool = False) -> Path:
        return self.root / (shard_name(k) + (".labels.json" if labels else ".json"))

    def images_dir(self, k: int) -> Path:
        return self.root / shard_name(k) / "images"

    def masks_dir(self, k: int) -> Path:
        return self.root / shard_name(k) / "masks"

    def committed(self, k: int, labels: bool = False, run_hash: str | None = None) -> bool:
        """The shard's sidecar exists (and, with `run_hash`, records that config / ensemble hash: a shard
        left by a run whose manifest was replaced is not this run's, and is redone)."""
        path = self.sidecar(k, labels)
        if not path.is_file():
            return False
        if run_hash is None:
            return True
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return meta.get("labels_hash" if labels else "config_hash") == run_hash

    def write_samples(self, k: int, ids: list[int], seeds: list[int | None], images: np.ndarray, config_hash: str,
                      sources: list[str] | None = None) -> None:
        """`sources`: for real images (`label-images`), the file each came from (their seed is None)."""
        files = {sample_name(i): png_bytes(im) for i, im in zip(ids, images)}
        write_files_atomically(self.images_dir(k), files)
        rows = [{"id": i, "seed": s, "image_sha256": sha256(files[sample_name(i)])} for i, s in zip(ids, seeds)]
        for row, source in zip(rows, sources or ()):
            row["source"] = source
        write_json(self.sidecar(k), {"shard": k, "config_hash": config_hash, "samples": rows})

    def write_labels(self, k: int, ids: list[int], masks: np.ndarray, uncertainty: np.ndarray, num_classes: int,
                     labels_hash: str) -> None:
        files = {sample_name(i): png_bytes(m, num_classes) for i, m in zip(ids, masks)}
        write_files_atomically(self.masks_dir(k), files)
        write_json(self.sidecar(k, labels=True), {"shard": k, "labels_hash": labels_hash, "samples": [
            {"id": i, "mask_sha256": sha256(files[sample_name(i)]), "uncertainty": float(u),
             "class_pixels": np.bincount(m.ravel(), minlength=num_classes)[:num_classes].tolist()}
            for i, u, m in zip(ids, uncertainty, masks)]})

    def read_sidecar(self, k: int, labels: bool = False) -> dict:
        return read_json(self.sidecar(k, labels))

    def read_images(self, k: int) -> tuple[list[int], np.ndarray]:
        meta = self.read_sidecar(k)
        ids = [s["id"] for s in meta["samples"]]
        images = [np.asarray(Image.open(self.images_dir(k) / sample_name(i)).convert("RGB")) for i in ids]
        return ids, np.stack(images)

    def discard(self, k: int, labels_only: bool = False) -> None:
        """Remove a shard's (or only its labels') files and sidecars."""
        self.sidecar(k, labels=True).unlink(missing_ok=True)
        shutil.rmtree(self.masks_dir(k), ignore_errors=True)
        if not labels_only:
            self.sidecar(k).unlink(missing_ok=True)
            shutil.rmtree(self.root / shard_name(k), ignore_errors=True)

    def clean_partials(self, shards: list[int] | None = None) -> None:
        """Delete leftovers of interrupted writes (hidden .partial folders, temporary files) in the shards
        and beside them (manifests, index, card); with `shards`, only those of these shards (other
        processes may be writing theirs)."""
        if shards is not None:
            for k in shards:
                for p in [*self.root.glob(f".{shard_name(k)}.*.tmp"), *(self.root / shard_name(k)).glob(".*.partial")]:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            return
        remove_stale_temporaries(self.root.parent)
        if not self.root.exists():
            return
        for p in self.root.rglob(".*"):
            if p.is_dir() and p.name.endswith(".partial"):
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_file() and is_stale_temporary(p.name):
                p.unlink(missing_ok=True)
