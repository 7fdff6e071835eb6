"""Pixel features from native-resolution feature maps.

Two ways to get the same numbers: `upsample_concat` materialises one image's (D, H, W) tensor
(bilinear, align_corners=False, as the reference code does); `FeatureBank.gather` computes the
features of arbitrary pixels straight from the native-resolution maps, so an ensemble can be trained
with a global pixel shuffle over many images without ever holding their full-resolution features.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def upsample_concat(maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """(B, C_k, h_k, w_k) maps -> (B, sum C_k, H, W), bilinear upsampling then concatenation."""
    return torch.cat([m if m.shape[-2:] == size else
                      F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps], dim=1)


def _bilinear_taps(dst: torch.Tensor, src_size: int, dst_size: int):
    """Source indices and (float64) weights that F.interpolate(bilinear, align_corners=False) uses
    along one axis: dst -> (1 - lam) * src[i0] + lam * src[i1]."""
    scale = src_size / dst_size
    src = ((dst.to(torch.float64) + 0.5) * scale - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=src_size - 1)
    i1 = (i0 + 1).clamp(max=src_size - 1)
    return i0, i1, src - i0.to(torch.float64)


class FeatureBank:
    """Feature maps of many images kept at native resolution, plus their full-resolution masks.

    Each map is stored as rows of (N * h_k * w_k, C_k), so gathering pixels is one index_select per
    bilinear tap. With `capacity` (the number of images, when known) every map is allocated once and
    batches are written in place; without it, batches are kept apart until `finalize` concatenates
    them, which briefly needs a second copy (and the allocator may keep the pieces' memory).
    """

    def __init__(self, height: int, width: int, dtype: torch.dtype = torch.float32, capacity: int | None = None):
        self.height, self.width, self.dtype, self.capacity = height, width, dtype, capacity
        self.stacked: list[torch.Tensor] = []  # per map index: (N * h * w, C) rows
        self.pieces: list[list[torch.Tensor]] = []  # without capacity: per map index, one piece per batch
        self.masks: list[torch.Tensor] = []
        self.count = 0

    def add(self, maps: list[torch.Tensor], masks: torch.Tensor | None = None) -> None:
        """Add a batch: maps (B, C_k, h_k, w_k) and masks (B, H, W)."""
        B = maps[0].shape[0]
        if self.count == 0:
            self.sizes = [tuple(m.shape[-2:]) for m in maps]
            if self.capacity is None:
                self.pieces = [[] for _ in maps]
            else:
                self.stacked = [torch.empty(self.capacity * h * w, m.shape[1], dtype=self.dtype, device=m.device)
                                for m, (h, w) in zip(maps, self.sizes)]
        if self.capacity is not None and self.count + B > self.capacity:
            raise ValueError(f"FeatureBank capacity is {self.capacity} images")
        for k, m in enumerate(maps):
            _, C, h, w = m.shape
            if self.capacity is None:
                rows = torch.empty(B * h * w, C, dtype=self.dtype, device=m.device)
                self.pieces[k].append(rows)
            else:
                rows = self.stacked[k][self.count * h * w:(self.count + B) * h * w]
            rows.view(B, h, w, C).copy_(m.detach().permute(0, 2, 3, 1))  # layout and dtype in one copy
        self.count += B
        if masks is not None:
            self.masks.extend(masks.long().unbind(0))

    def finalize(self) -> "FeatureBank":
        if self.capacity is None:
            for store in self.pieces:
                self.stacked.append(torch.cat(store) if len(store) > 1 else store[0])
                store.clear()  # free each map's pieces before the next concatenation
        else:
            self.stacked = [s[:self.count * h * w] for s, (h, w) in zip(self.stacked, self.sizes)]
        self.mask_tensor = torch.stack(self.masks) if self.masks else None
        self.pieces, self.masks = [], []
        return self

    @property
    def dim(self) -> int:
        return sum(m.shape[1] for m in self.stacked)

    def __len__(self) -> int:
        h, w = self.sizes[0]
        return self.stacked[0].shape[0] // (h * w)

    def nbytes(self) -> int:
        return sum(m.numel() * m.element_size() for m in self.stacked)

    def gather(self, n: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(P,) image, row, column indices -> (P, D) features, equal to upsample_concat's; computed
        in `dtype` (float32 for training; float64 gives reference values in tests)."""
        out = []
        for m, (h, w) in zip(self.stacked, self.sizes):
            def rows(yy, xx):
                return m.index_select(0, (n * h + yy) * w + xx).to(dtype)
            if (h, w) == (self.height, self.width):
                out.append(rows(y, x))
                continue
            y0, y1, ly = _bilinear_taps(y, h, self.height)
            x0, x1, lx = _bilinear_taps(x, w, self.width)
            ly, lx = ly[:, None].to(dtype), lx[:, None].to(dtype)
            top = rows(y0, x0) * (1 - lx) + rows(y0, x1) * lx
            bottom = rows(y1, x0) * (1 - lx) + rows(y1, x1) * lx
            out.append(top * (1 - ly) + bottom * ly)
        return torch.cat(out, dim=1)


def colour_maps(images: torch.Tensor) -> list[torch.Tensor]:
    """The colour baseline's features: RGB of each pixel's 3x3 neighbourhood (27 channels)."""
    x = images.float() / 127.5 - 1.0
    B, C, H, W = x.shape
    patches = F.unfold(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel_size=3)  # (B, 27, H*W)
    return [patches.view(B, C * 9, H, W)]


def valid_pixels(masks: torch.Tensor, ignore_label: int) -> torch.Tensor:
    """(P, 3) [image, row, col] of every labelled pixel."""
    return (masks != ignore_label).nonzero()


def drop_tiny_regions(mask: np.ndarray, ignore_label: int, min_pixels_256: int = 20) -> np.ndarray:
    """Annotation hygiene: classes covering fewer than 20 px of a 256^2 image (scaled by area) -> ignore."""
    threshold = min_pixels_256 * mask.size / (256 * 256)
    out = mask.copy()
    ids, counts = np.unique(mask, return_counts=True)
    for k, c in zip(ids, counts):
        if k != ignore_label and c < threshold:
            out[mask == k] = ignore_label
    return out
