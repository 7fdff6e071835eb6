"""Labelled image folders: the reference layout and users' own PNG masks.

A labelled folder holds images (`<stem>.png|jpg|jpeg`) and, for each, a mask: `<stem>.npy` (H x W
array of any integer dtype, the reference layout; never unpickled) or `<stem>_mask.png` (palette or
grayscale index image). A dataset root in the reference layout, `<root>/real/{train,test}/`, is
accepted wherever a split is meant; annotated generated samples (`<root>/ddpm/`) are a folder too.
Everything is validated before any output is written; each problem is one line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, OptionError
from ..io import atomic_path, check_output_dir
from .images import list_images, read_image, read_mask, write_image
from .procedural import PROCEDURAL_POOL_SEED0, render

MASK_SUFFIX_PNG = "_mask.png"


@dataclass
class LabelledSet:
    images: np.ndarray  # (N, H, W, 3) uint8
    masks: np.ndarray  # (N, H, W) int64
    paths: list[Path]

    def __len__(self) -> int:
        return len(self.images)


def resolve_split(directory: str | Path, split: str) -> Path:
    """Accept a dataset root (`<root>/real/<split>`) or the split folder itself."""
    directory = Path(directory)
    for candidate in (directory / "real" / split, directory / split):
        if candidate.is_dir():
            return candidate
    return directory


def _image_paths(directory: Path) -> list[Path]:
    return [p for p in list_images(directory) if not p.name.endswith(MASK_SUFFIX_PNG)]


def mask_path_for(image: Path) -> Path | None:
    for candidate in (image.with_suffix(".npy"), image.with_name(image.stem + MASK_SUFFIX_PNG)):
        if candidate.is_file():
            return candidate
    return None


def read_images(directory: str | Path, limit: int | None = None, *,
                resolution: int | None = None) -> tuple[np.ndarray, list[Path]]:
    """Unlabelled images of one size: (N, H, W, 3) uint8 and their paths. With `resolution`, every
    image must be resolution x resolution (a diffusion model's features are only meaningful at the
    size it was trained at, so a mismatch is refused rather than silently resized)."""
    if limit is not None and limit < 1:
        raise OptionError("--limit", f"must be >= 1 image, got {limit}")
    paths = _image_paths(Path(directory))[:limit]
    if not paths:
        raise InputError(directory, "no .png/.jpg images found")
    images = []
    for p in paths:
        im = read_image(p)
        if resolution is not None and im.shape[:2] != (resolution, resolution):
            raise InputError(p, f"image is {im.shape[1]}x{im.shape[0]} but this run expects {resolution}x{resolution} "
                                f"(set by the preset, the ensemble or --resolution): resize the data")
        if images and im.shape != images[0].shape:
            raise InputError(p, f"image is {im.shape[1]}x{im.shape[0]} but {paths[0].name} is "
                                f"{images[0].shape[1]}x{images[0].shape[0]}; all images of a set must have one size")
        images.append(im)
    return np.stack(images), paths


def _refuse_orphan_masks(directory: Path) -> None:
    """A mask whose image is missing means a pair the user expects to train on is not there: say so."""
    stems = {p.stem for p in _image_paths(directory)}
    for mask in sorted(directory.glob("*.npy")) + sorted(directory.glob(f"*{MASK_SUFFIX_PNG}")):
        stem = mask.name[:-len(MASK_SUFFIX_PNG)] if mask.name.endswith(MASK_SUFFIX_PNG) else mask.stem
        if stem not in stems:
            raise InputError(mask, f"mask with no image: expected {stem}.png or {stem}.jpg beside it")


def read_labelled(directory: str | Path, num_classes: int, ignore_label: int = 255,
                  limit: int | None = None, *, resolution: int | None = None, palette=None) -> LabelledSet:
    """Read and validate a labelled folder: every image (of `resolution`, when given) has a mask of its
    size with ids < K or the ignore label. `palette` (RGB per class id) admits RGB colour masks."""
    directory = Path(directory)
    if not _image_paths(directory):
        raise InputError(directory, "no .png/.jpg images found: expected <stem>.png|jpg with <stem>.npy or "
                                    f"<stem>{MASK_SUFFIX_PNG}, or a dataset root holding real/train and real/test")
    _refuse_orphan_masks(directory)
    images, paths = read_images(directory, limit, resolution=resolution)
    masks = []
    for p, im in zip(paths, images):
        mp = mask_path_for(p)
        if mp is None:
            raise InputError(p, f"no mask found (expected {p.stem}.npy or {p.stem}{MASK_SUFFIX_PNG})")
        mask = read_mask(mp, palette)
        if mask.shape != im.shape[:2]:
            raise InputError(mp, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is {im.shape[1]}x{im.shape[0]}")
        bad = (mask != ignore_label) & ((mask < 0) | (mask >= num_classes))
        if bad.any():
            value = int(mask[bad][0])
            raise InputError(mp, f"class id {value} is out of range: ids must be in [0, {num_classes}) "
                                 f"or the ignore label {ignore_label}")
        masks.append(mask)
    masks = np.stack(masks)
    if not (masks != ignore_label).any():
        raise InputError(directory, f"every mask pixel is the ignore label {ignore_label}: there is nothing to "
                                    "learn from (check the masks or --ignore-label)")
    return LabelledSet(images, masks, paths)


# Seed ranges of the embedded domain's splits (disjoint from the DDPM's and the oracle's).
SPLIT_SEED0 = {"train": 1_000_000, "test": 2_000_000}


def write_procedural_dataset(out: str | Path, *, train: int = 20, test: int = 200, unlabelled: int = 0,
                             resolution: int = 32, seed: int = 0) -> dict:
    """Write the embedded domain in the reference layout: real/{train,test}/<stem>.png + .npy."""
    out = Path(out)
    counts = {"train": train, "test": test}
    for option, n in (("--train", train), ("--test", test), ("--unlabelled", unlabelled)):
        if n < 0:
            raise OptionError(option, f"must be >= 0, got {n}")
    if not (0 <= seed < 100 and max(train, test) <= 10_000):
        raise OptionError("--seed/--train/--test", "need 0 <= seed < 100 and at most 10000 images per split")
    check_output_dir(out)
    for split, n in counts.items():
        for i in range(n):
            s = SPLIT_SEED0[split] + seed * 10_000 + i
            image, mask = render(s, resolution)
            stem = f"{split}_{i:05d}"
            write_image(out / "real" / split / f"{stem}.png", image)
            with atomic_path(out / "real" / split / f"{stem}.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, mask.astype(np.uint8))
    for i in range(unlabelled):
        write_image(out / "unlabelled" / f"{i:06d}.png", render(PROCEDURAL_POOL_SEED0 + i, resolution)[0])
    return {**counts, "unlabelled": unlabelled, "resolution": resolution}
