"""Reading a finished generation run: a `torch.utils.data.Dataset` over its kept image-mask pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..errors import InputError
from ..io import read_json, read_jsonl

INDEX_KEYS = ("id", "image", "mask", "image_sha256", "mask_sha256", "kept")  # what readers of index.jsonl use


class GeneratedPairs(Dataset):
    """Kept (image, mask) pairs of a finalized run, as (H, W, 3) uint8 and (H, W) uint8 arrays."""

    def __init__(self, run_dir: str | Path, *, kept_only: bool = True):
        self.root = Path(run_dir)
        index = self.root / "index.jsonl"
        if not index.is_file():
            raise InputError(index, "no index; run `datasetddpm finalize` on this run first")
        rows = read_jsonl(index, INDEX_KEYS)
        self.rows = [r for r in rows if r["kept"] or not kept_only]
        self.card = read_json(self.root / "dataset_card.json")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        r = self.rows[i]
        return _decode(self.root / r["image"], "RGB"), _decode(self.root / r["mask"], None)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All kept pairs in memory (small runs)."""
        pairs = [self[i] for i in range(len(self))]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _decode(path: Path, mode: str | None) -> np.ndarray:
    """One stored PNG; a broken file is named itself (image or mask), with `verify` as the way out."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode) if mode else im)
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"unreadable ({e}); run `datasetddpm verify` on the run") from None


class MixedPairs(Dataset):
    """Generated pairs followed by the real labelled images repeated `repeat` times: the real images are
    in every epoch, at a share of repeat * R / (P + repeat * R) of its samples."""

    def __init__(self, generated, real_images: np.ndarray, real_masks: np.ndarray, repeat: int):
        self.generated, self.real_images, self.real_masks, self.repeat = generated, real_images, real_masks, repeat

    def __len__(self) -> int:
        return len(self.generated) + self.repeat * len(self.real_images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i < len(self.generated):
            return self.generated[i]
        k = (i - len(self.generated)) % len(self.real_images)
        return self.real_images[k], self.real_masks[k].astype(np.uint8)


def real_repeat(pairs: int, real: int, fraction: float) -> int:
    """Copies of the `real` images that make them `fraction` of an epoch of `pairs` generated pairs (>= 1)."""
    return max(1, round(fraction / (1 - fraction) * pairs / real))
