"""Reading a finished generation run: a `torch.utils.data.Dataset` over its kept image-mask pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..errors import InputError


class GeneratedPairs(Dataset):
    """Kept (image, mask) pairs of a finalized run, as (H, W, 3) uint8 and (H, W) uint8 arrays."""

    def __init__(self, run_dir: str | Path, *, kept_only: bool = True):
        self.root = Path(run_dir)
        index = self.root / "index.jsonl"
        if not index.is_file():
            raise InputError(index, "no index; run `datasetddpm finalize` on this run first")
        rows = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
        self.rows = [r for r in rows if r["kept"] or not kept_only]
        self.card = json.loads((self.root / "dataset_card.json").read_text())

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        r = self.rows[i]
        try:
            with Image.open(self.root / r["image"]) as im:
                image = np.asarray(im.convert("RGB"))
            with Image.open(self.root / r["mask"]) as m:
                mask = np.asarray(m)
        except (OSError, SyntaxError) as e:
            raise InputError(self.root / r["image"], f"unreadable pair ({e})") from None
        return image, mask

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All kept pairs in memory (small runs)."""
        pairs = [self[i] for i in range(len(self))]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
