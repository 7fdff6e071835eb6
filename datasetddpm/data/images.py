"""Reading and writing images and masks, with one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from ..io import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_images(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(directory, "directory not found")
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"unreadable image ({e.__class__.__name__}: {e})") from None


def read_mask(path: str | Path) -> np.ndarray:
    """(H, W) integer mask from `.npy` (integer array, no pickles) or a palette / grayscale PNG."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "mask file not found")
    if path.suffix.lower() == ".npy":
        try:
            mask = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(path, f"unreadable mask ({e})") from None
    else:
        try:
            with Image.open(path) as im:
                im.load()
                if im.mode not in ("P", "L", "I", "I;16"):
                    raise InputError(path, f"mask PNG must be a palette or grayscale index image, got mode {im.mode}")
                mask = np.asarray(im)
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise InputError(path, f"unreadable mask ({e.__class__.__name__}: {e})") from None
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise InputError(path, f"mask must be a 2-D integer array, got shape {mask.shape} dtype {mask.dtype}")
    return mask.astype(np.int64)


def write_image(path: str | Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def palette_for(num_classes: int) -> list[tuple[int, int, int]]:
    """A fixed, readable palette (VOC-style bit interleaving); index 255 is white for ignore."""
    colours = []
    for i in range(num_classes):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours.append((r, g, b))
    return colours


def mask_image(mask: np.ndarray, num_classes: int) -> Image.Image:
    """A palette image: pixel values are class ids, colours make it readable (255 = white)."""
    flat = [0, 0, 0] * 256
    for i, c in enumerate(palette_for(min(num_classes, 255))):
        flat[3 * i: 3 * i + 3] = c
    flat[3 * 255: 3 * 256] = [255, 255, 255]
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette(flat)
    return im


def write_mask_png(path: str | Path, mask: np.ndarray, num_classes: int) -> None:
    with atomic_path(path) as tmp:
        mask_image(mask, num_classes).save(tmp, format="PNG")
