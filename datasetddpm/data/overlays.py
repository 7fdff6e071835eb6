"""Pictures for people: image grids and mask overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .images import palette_for
from ..io import atomic_path


def colour_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) ids -> (H, W, 3) uint8 colours; ids outside the palette (e.g. ignore) are white."""
    lut = np.full((256, 3), 255, dtype=np.uint8)
    lut[:num_classes] = np.array(palette_for(num_classes), dtype=np.uint8)
    return lut[np.clip(mask, 0, 255).astype(np.int64)]


def overlay(image: np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.55) -> np.ndarray:
    return (image * (1 - alpha) + colour_mask(mask, num_classes) * alpha).astype(np.uint8)


def image_grid(tiles: list[np.ndarray], columns: int, scale: int = 1, pad: int = 1) -> np.ndarray:
    """Tiles of one size -> one (H, W, 3) uint8 grid (torchvision's make_grid), white padding,
    nearest-neighbour upscaling (small images stay crisp)."""
    import torch
    from torchvision.utils import make_grid
    batch = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2)
    grid = make_grid(batch, nrow=columns, padding=pad, pad_value=255).permute(1, 2, 0).numpy()
    if scale > 1:
        grid = grid.repeat(scale, 0).repeat(scale, 1)
    return np.ascontiguousarray(grid)


def save_png(path: str | Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
