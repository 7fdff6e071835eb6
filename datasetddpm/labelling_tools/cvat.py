"""CVAT's "Segmentation mask 1.1" (Pascal VOC's segmentation layout, as CVAT exports and imports it):

    labelmap.txt                         `# label:color_rgb:parts:actions`, then `name:r,g,b::` per label
    SegmentationClass/<stem>.png         RGB, each pixel the colour of its label
    ImageSets/Segmentation/default.txt   the stems, one a line
    JPEGImages/<stem>.png                the images (optional: CVAT writes them with "save images")

Class ids map to the toolkit's palette colours (class 0 black, as VOC's background). Ignored pixels
get a label of their own, `ignore` (white), unless the ignore label is one of the classes.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError

LABELMAP = "labelmap.txt"
IGNORE_NAME, IGNORE_COLOUR = "ignore", (255, 255, 255)
BACKGROUND = "background"  # CVAT's name for unlabelled pixels


def labelmap(classes: list[str], palette, ignore_label: int) -> list[tuple[str, tuple[int, int, int]]]:
    rows = [(name, tuple(int(c) for c in rgb)) for name, rgb in zip(classes, palette)]
    if ignore_label >= len(classes):
        rows.append((IGNORE_NAME, IGNORE_COLOUR))
    return rows


def labelmap_text(rows) -> str:
    return "# label:color_rgb:parts:actions\n" + "".join(f"{name}:{r},{g},{b}::\n" for name, (r, g, b) in rows)


def colour_mask_png(mask: np.ndarray, rows, ignore_label: int) -> bytes:
    """The RGB PNG of a class-id mask (ids index `rows`; the ignore label takes the ignore row's colour)."""
    colours = np.array([rgb for _, rgb in rows], dtype=np.uint8)
    ids = np.where(mask == ignore_label, len(rows) - 1, mask) if rows[-1][0] == IGNORE_NAME else mask
    buffer = io.BytesIO()
    Image.fromarray(colours[ids]).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed: the same masks give the same zip
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def cvat_files(stems: list[str], masks, classes: list[str], palette, ignore_label: int,
               images: list[bytes] | None = None) -> dict[str, bytes]:
    """Path -> bytes of a Segmentation mask 1.1 export of `masks` (class ids), optionally with images."""
    rows = labelmap(classes, palette, ignore_label)
    files = {LABELMAP: labelmap_text(rows).encode(),
             "ImageSets/Segmentation/default.txt": "".join(s + "\n" for s in stems).encode()}
    for i, stem in enumerate(stems):
        files[f"SegmentationClass/{stem}.png"] = colour_mask_png(np.asarray(masks[i]), rows, ignore_label)
        if images is not None:
            files[f"JPEGImages/{stem}.png"] = images[i]
    return files


def write_cvat_zip(path: str | Path, files: dict[str, bytes]) -> None:
    from ..io import atomic_path
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w") as archive:
            for name in sorted(files):
                _zip_member(archive, name, files[name])


# --- reading an export ---------------------------------------------------------------------------------

def read_cvat_export(path: Path) -> dict[str, bytes]:
    """Path -> bytes of a CVAT export given as its zip or its unpacked folder."""
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    try:
        with zipfile.ZipFile(path) as archive:
            return {n: archive.read(n) for n in archive.namelist() if not n.endswith("/")}
    except (OSError, zipfile.BadZipFile) as e:
        raise InputError(path, f"not a readable zip ({e})") from None


def parse_labelmap(text: str, where) -> dict[tuple[int, int, int], str]:
    colours = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            rgb = tuple(int(c) for c in rest.split(":")[0].split(","))
        except ValueError:
            rgb = ()
        if len(rgb) != 3:
            raise InputError(where, f"line {n}: expected name:r,g,b::, got {line!r}")
        colours[rgb] = name
    return colours


def cvat_masks(files: dict[str, bytes], classes: list[str], ignore_label: int, where) -> dict[str, np.ndarray]:
    """Stem -> class ids of every SegmentationClass PNG: colours through labelmap.txt to label names to ids
    (`background` and `ignore` are unlabelled unless they are classes). Unknown colours or names are refused."""
    if LABELMAP not in files:
        raise InputError(where, f"no {LABELMAP}: not a CVAT 'Segmentation mask 1.1' export")
    colours = parse_labelmap(files[LABELMAP].decode(errors="replace"), f"{where}/{LABELMAP}")
    masks = {}
    for name in sorted(n for n in files if n.startswith("SegmentationClass/") and n.endswith(".png")):
        try:
            rgb = np.asarray(Image.open(io.BytesIO(files[name])).convert("RGB"))
        except OSError as e:
            raise InputError(f"{where}/{name}", f"not a readable PNG ({e})") from None
        found, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
        ids = []
        for colour in map(tuple, found.tolist()):
            label = colours.get(colour)
            if label is None:
                raise InputError(f"{where}/{name}", f"colour {colour} is not in {LABELMAP}")
            if label in classes:
                ids.append(classes.index(label))
            elif label in (BACKGROUND, IGNORE_NAME):
                ids.append(ignore_label)
            else:
                raise InputError(f"{where}/{name}", f"label {label!r} is not one of the classes ({', '.join(classes)})")
        masks[Path(name).stem] = np.array(ids, dtype=np.int64)[inverse.ravel()].reshape(rgb.shape[:2])
    if not masks:
        raise InputError(where, "holds no SegmentationClass/*.png masks")
    return masks
