"""The small interface every generator backend implements (diffusion, and StyleGAN2 for DatasetGAN mode).

A generator makes images from integer seeds and exposes pixel features of images as a list of
feature maps at their native resolutions; `datasetddpm.features` upsamples and stacks them.
A latent-based backend (`latent_based = True`, StyleGAN2) computes features from latents: its
`feature_maps` serves only images whose latents it knows (see `generators/stylegan2.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch


@dataclass(frozen=True)
class FeatureSpec:
    """Which activations make a pixel's feature vector."""

    blocks: tuple[int, ...]  # decoder blocks, ADM `output_blocks` numbering (0 = deepest); StyleGAN2: synthesis layers
    steps: tuple[int, ...]  # diffusion steps t in [0, T) the image is noised to; StyleGAN2: (0,)
    noise_seed: int = 0  # seed of the ONE noise tensor shared by all images and steps

    def to_dict(self) -> dict:
        return {"blocks": list(self.blocks), "steps": list(self.steps), "noise_seed": self.noise_seed}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(tuple(int(b) for b in d["blocks"]), tuple(int(s) for s in d["steps"]), int(d.get("noise_seed", 0)))


class Generator(Protocol):
    resolution: int

    def sample(self, seeds: Sequence[int], **kwargs) -> torch.Tensor:
        """(N, 3, H, W) uint8 images, sample i a function of seeds[i] only."""

    def feature_maps(self, images: torch.Tensor, spec: FeatureSpec) -> list[torch.Tensor]:
        """Feature maps (B, C_k, h_k, w_k) of (B, 3, H, W) uint8 images, ordered step-major."""

    def feature_channels(self, spec: FeatureSpec) -> list[int]:
        """Channel count of each map `feature_maps` returns, without running the model."""
