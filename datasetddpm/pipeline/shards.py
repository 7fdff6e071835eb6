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
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.images import mask_image
from ..io import read_json, write_json


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
    """Write `files` (name -> bytes) into `final_dir` via a `.partial` sibling and one rename."""
    partial = final_dir.with_name("." + final_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name, data in files.items():
        with open(partial / name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    _fsync_dir(partial)
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

    def committed(self, k: int, labels: bool = False) -> bool:
        return self.sidecar(k, labels).is_file()

    def write_samples(self, k: int, ids: list[int], seeds: list[int], images: np.ndarray, config_hash: str) -> None:
        files = {sample_name(i): png_bytes(im) for i, im in zip(ids, images)}
        write_files_atomically(self.images_dir(k), files)
        write_json(self.sidecar(k), {"shard": k, "config_hash": config_hash, "samples": [
            {"id": i, "seed": s, "image_sha256": sha256(files[sample_name(i)])} for i, s in zip(ids, seeds)]})

    def write_labels(self, k: int, ids: list[int], masks: np.ndarray, uncertainty: np.ndarray, num_classes: int,
                     labels_hash: str) -> None:
        files = {sample_name(i): png_bytes(m, num_classes) for i, m in zip(ids, masks)}
        write_files_atomically(self.masks_dir(k), files)
        write_json(self.sidecar(k, labels=True), {"shard": k, "labels_hash": labels_hash, "samples": [
            {"id": i, "mask_sha256": sha256(files[sample_name(i)]), "uncertainty": float(u)}
            for i, u in zip(ids, uncertainty)]})

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

    def clean_partials(self) -> None:
        """Delete leftovers of interrupted writes (hidden .partial folders, temporary sidecars)."""
        if not self.root.exists():
            return
        for p in self.root.rglob(".*"):
            if p.is_dir() and p.name.endswith(".partial"):
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_file() and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
