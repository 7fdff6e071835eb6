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
        raise InputError(directory, "not a directory" if directory.exists() else "directory not found")
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def read_image(path: str | Path, data: bytes | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB; from `data`, the file's bytes when the caller has read them already (errors
    still name `path`)."""
    import io
    path = Path(path)
    if data is None and not path.is_file():
        raise InputError(path, "image file not found")
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            im.load()
            return _to_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"unreadable image ({e.__class__.__name__}: {_first_line(e)})") from None


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode as 8-bit RGB. 16-bit and 32-bit grayscale are scaled to 8 bits (PIL's own conversion
    clips them, which turns a 16-bit photo white); the rest (L, P, LA, RGBA, CMYK, YCbCr, 1) convert as PIL
    converts them, transparency dropped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or values.max() > 255 else 255.0
        grey = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


NPY_MAGIC = b"\x93NUMPY"
# PIL modes whose pixel values are class ids: palette, 8-bit / 16-bit / 32-bit grayscale, bilevel.
INDEX_MODES = ("P", "L", "I", "I;16", "1")


def read_mask(path: str | Path, palette=None) -> np.ndarray:
    """(H, W) int64 class ids from `.npy` (integer array, never unpickled) or a palette / grayscale PNG.

    RGB colour masks carry colours, not ids: they are refused unless `palette` (a sequence of RGB
    triples, index = class id) says which colour is which class."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "mask file not found")
    mask = _read_npy(path) if path.suffix.lower() == ".npy" else _read_png_mask(path, palette)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise InputError(path, f"mask must be a 2-D integer array (H x W class ids), got shape {mask.shape} "
                               f"dtype {mask.dtype}")
    return mask.astype(np.int64)


def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise InputError(path, "not a .npy array file")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "pickled" in str(e):
            raise InputError(path, "mask holds Python objects, which would need unpickling (refused for safety); "
                                   "save a plain integer array") from None
        raise InputError(path, f"unreadable mask ({_first_line(e)})") from None
    except Exception as e:  # a damaged header reaches numpy's header parser: SyntaxError, TokenError, ...
        raise InputError(path, f"unreadable mask ({type(e).__name__}: {_first_line(e)})") from None


def _read_png_mask(path: Path, palette) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            pixels = np.asarray(im.convert("RGB") if mode in ("RGB", "RGBA") else im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"unreadable mask ({e.__class__.__name__}: {_first_line(e)})") from None
    if mode in INDEX_MODES:
        return pixels
    if mode in ("RGB", "RGBA"):
        if palette:
            return colours_to_ids(path, pixels, palette)
        raise InputError(path, f"mask PNG is an {mode} colour image, but masks hold class ids: save it as a palette (P) "
                               "or grayscale (L) index PNG, or as a .npy array")
    raise InputError(path, f"mask PNG must be a palette (P) or grayscale (L) index image, got mode {mode}")


def colours_to_ids(path: Path, rgb: np.ndarray, palette) -> np.ndarray:
    """Map an (H, W, 3) colour mask to class ids through `palette`; a colour not in it is an error."""
    table = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = (table[:, 0] << 16) | (table[:, 1] << 8) | table[:, 2]
    order = np.argsort(keys, kind="stable")
    pos = np.clip(np.searchsorted(keys[order], codes), 0, len(keys) - 1)
    found = keys[order][pos] == codes
    if not found.all():
        y, x = np.argwhere(~found)[0]
        raise InputError(path, f"colour {tuple(int(c) for c in rgb[y, x])} at pixel ({x}, {y}) is not in the palette")
    return order[pos]


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else e.__class__.__name__


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
