"""Reading a finished generation run: a `torch.utils.data.Dataset` over its kept image-mask pairs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DatasetDDPMError, InputError
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
        image, mask = checked_pair_bytes(self.root, r, self.card)
        return _decode(self.root / r["image"], "RGB", image), _decode(self.root / r["mask"], None, mask)

    def check_all(self) -> None:
        """Every kept pair passes the per-pair check (before a trainer writes anything)."""
        for r in self.rows:
            checked_pair_bytes(self.root, r, self.card)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All kept pairs in memory (small runs)."""
        pairs = [self[i] for i in range(len(self))]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _decode(path: Path, mode: str | None, data: bytes | None = None) -> np.ndarray:
    """One stored PNG (`data`: its bytes, already read); a broken file is named itself (image or mask), with
    `verify` as the way out."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            return np.asarray(im.convert(mode) if mode else im)
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"unreadable ({e}); run `datasetddpm verify` on the run") from None


def checked_pair_bytes(run: Path, row: dict, card: dict | None = None) -> tuple[bytes, bytes]:
    """A kept pair's stored PNG bytes (image, mask), through the one per-pair check of every reader of a run
    (`export`, `train-deeplab`): each file hashes to the sha256 the run's index records, and the mask holds
    only class ids below the card's class count, or its ignore label."""
    from .shards import sha256
    run = Path(run)
    card = card if card is not None else read_json(run / "dataset_card.json")
    found = []
    for key in ("image", "mask"):
        path = run / row[key]
        try:
            data = path.read_bytes()
        except OSError as e:
            raise InputError(path, f"cannot read ({e.strerror})") from None
        if sha256(data) != row[f"{key}_sha256"]:
            raise DatasetDDPMError(f"{path}: differs from the sha256 in the run's index; run `datasetddpm verify "
                                   f"{run}` (--repair fixes it)")
        found.append(data)
    classes, ignore = len(card["palette"]), card["ignore_label"]
    ids = np.unique(_decode(run / row["mask"], None, found[1]))
    bad = ids[(ids >= classes) & (ids != ignore)]
    if bad.size:
        raise InputError(run / row["mask"], f"holds class id {int(bad[0])}, outside 0..{classes - 1} (ignore label "
                                            f"{ignore}) of the run's card; run `datasetddpm verify {run}`")
    return found[0], found[1]


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
