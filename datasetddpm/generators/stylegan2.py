"""StyleGAN2 backend (DatasetGAN mode): the second implementation of the `Generator` interface.

Features are DatasetGAN's: the outputs of the synthesis conv layers, upsampled to the image size and
concatenated per pixel. `FeatureSpec.blocks` are synthesis-layer indices (0 = the 4x4 block's conv1,
then conv0, conv1 of each larger block, so 2 * log2(R) - 3 layers); a GAN has no diffusion step, so
a StyleGAN2 spec has `steps == (0,)` and `noise_seed` 0 (the ensemble JSON keeps its format).

Features come from latents, not from pixels: nothing maps a real image to a latent (that needs GAN
inversion, which is not supported). To keep the image-in pipeline (`FeatureSource`, `segment`,
`build_bank`) unchanged, the generator remembers the latent of every image it made, and of every
image it is told about (`remember_seeds`, `remember_latents`: shard sidecars, annotation exports),
keyed by the image's bytes; `feature_maps` of an image it has no latent for is refused in one line
(two latents that make the very same uint8 image share one entry: the latest one).
Seeds map to z by a CPU `torch.Generator` per seed, so a seed means the same image on any device;
noise inputs are the model's constant noise buffers (NVIDIA's `noise_mode='const'`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import DatasetDDPMError, InputError, OptionError
from ..features import upsample_concat
from ..io import (
    load_state_dict_file,
    load_state_strict,
    load_tensors,
    read_checkpoint_meta,
    write_checkpoint,
)
from .base import FeatureSpec
from .stylegan2_net import StyleGAN2, StyleGAN2Config

CHECKPOINT_FORMAT = "datasetddpm.stylegan2"
NO_LATENT = ("StyleGAN2 features come from latents, and this image has none: real images cannot be featurised "
             "without GAN inversion, which is not supported; annotate generated samples instead "
             "(sample --for-annotation K exports them with their latents)")


def image_key(image: torch.Tensor) -> bytes:
    """The registry key of one (3, H, W) uint8 image: a digest of its bytes."""
    return hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=16).digest()


class StyleGAN2Generator:
    """A StyleGAN2 (EMA) generator with truncation; implements the `Generator` interface."""

    latent_based = True  # features need latents; real images cannot be featurised

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def __init__(self, net: StyleGAN2, *, truncation_psi: float = 1.0, source: str = "<memory>"):
        self.net = net.eval().requires_grad_(False)
        self.truncation_psi = float(truncation_psi)
        self.source = source
        self.resolution = net.cfg.resolution
        self.layers = net.layer_info()  # (channels, resolution) per feature layer
        self.blocks = self.layers  # probe's "all blocks" = every synthesis layer
        self._latents: dict[bytes, int | torch.Tensor] = {}  # image key -> seed, or w (num_ws, w_dim)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    # ---- the Generator interface ----------------------------------------------------------------
    def check_spec(self, spec: FeatureSpec) -> None:
        n = len(self.layers)
        if not spec.blocks:
            raise OptionError("--blocks", "need at least one synthesis layer")
        bad = [b for b in spec.blocks if not 0 <= b < n]
        if bad:
            raise OptionError("--blocks", f"unknown synthesis layer {bad[0]}; this StyleGAN2 has layers 0..{n - 1}")
        if tuple(spec.steps) != (0,):
            raise OptionError("--steps", f"a StyleGAN2 has no diffusion steps (got {list(spec.steps)}); leave "
                                         "--steps out")

    def check_image_size(self, height: int, width: int) -> str | None:
        if (height, width) != (self.resolution, self.resolution):
            return f"image size {width}x{height}: this StyleGAN2 makes {self.resolution}x{self.resolution} images"
        return None

    def default_spec(self) -> FeatureSpec:
        """DatasetGAN's choice: every synthesis layer."""
        return FeatureSpec(tuple(range(len(self.layers))), (0,), 0)

    def feature_channels(self, spec: FeatureSpec) -> list[int]:
        self.check_spec(spec)
        return [self.layers[b][0] for b in spec.blocks]

    def feature_downscales(self, spec: FeatureSpec) -> list[int]:
        return [self.resolution // self.layers[b][1] for b in spec.blocks]

    def make_sampler(self, name: str, num_steps: int) -> None:
        """A GAN samples in one pass: --sampler / --sampling-steps do not apply and are ignored."""
        return

    def sample(self, seeds: Sequence[int], **_ignored) -> torch.Tensor:
        """(N, 3, R, R) uint8 on the CPU, sample i a function of seeds[i] only; each image's seed is
        remembered so its features can be computed later from the image alone."""
        images = self.synthesize(self.latents(seeds)).cpu()
        for image, seed in zip(images, seeds):
            self._latents[image_key(image)] = int(seed)
        return images

    def feature_maps(self, images: torch.Tensor, spec: FeatureSpec) -> list[torch.Tensor]:
        """Native-resolution layer outputs of images this generator knows the latents of."""
        return self.feature_maps_from_latents(self.lookup(images), spec)

    # ---- latents ------------------------------------------------------------------------------------
    def z(self, seeds: Sequence[int]) -> torch.Tensor:
        """(N, z_dim) on the CPU, one generator per seed."""
        return torch.stack([torch.randn(self.net.cfg.z_dim, generator=torch.Generator().manual_seed(int(s)))
                            for s in seeds])

    @torch.no_grad()
    def latents(self, seeds: Sequence[int]) -> torch.Tensor:
        """(N, num_ws, w_dim) truncated w of each seed, on the model's device."""
        return self.net.mapping(self.z(seeds).to(self.device), self.truncation_psi)

    @torch.no_grad()
    def synthesize(self, ws: torch.Tensor) -> torch.Tensor:
        img = self.net.synthesis(ws.to(self.device))
        return ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)

    @torch.no_grad()
    def feature_maps_from_latents(self, ws: torch.Tensor, spec: FeatureSpec) -> list[torch.Tensor]:
        """(B, C_l, r_l, r_l) outputs of the spec's synthesis layers, in spec order; the synthesis stops
        after the deepest layer needed."""
        self.check_spec(spec)
        outputs: list[torch.Tensor] = []
        self.net.synthesis(ws.to(self.device), outputs=outputs, stop_after_layer=max(spec.blocks))
        return [outputs[b].float() for b in spec.blocks]

    def feature_maps_from_seeds(self, seeds: Sequence[int], spec: FeatureSpec) -> list[torch.Tensor]:
        return self.feature_maps_from_latents(self.latents(seeds), spec)

    def pixel_features(self, seeds: Sequence[int], spec: FeatureSpec) -> torch.Tensor:
        """(N, sum C, R, R): DatasetGAN's upsampled, concatenated per-pixel features of seeds."""
        return upsample_concat(self.feature_maps_from_seeds(seeds, spec), (self.resolution, self.resolution))

    def remember_seeds(self, images: torch.Tensor, seeds: Sequence[int]) -> None:
        """Tell the generator which seeds made (N, 3, H, W) uint8 images (e.g. from a run's shard records)."""
        for image, seed in zip(images, seeds):
            self._latents[image_key(image)] = int(seed)

    def remember_latents(self, images: torch.Tensor, ws: torch.Tensor) -> None:
        for image, w in zip(images, ws):
            self._latents[image_key(image)] = w.detach().cpu()

    def knows(self, image: torch.Tensor) -> bool:
        return image_key(image) in self._latents

    def lookup(self, images: torch.Tensor) -> torch.Tensor:
        """(B, num_ws, w_dim) latents of (B, 3, H, W) uint8 images; one line for an unknown image."""
        found = [self._latents.get(image_key(im.cpu())) for im in images]
        if any(f is None for f in found):
            raise DatasetDDPMError(NO_LATENT)
        ws = [None] * len(found)
        seeded = [i for i, f in enumerate(found) if isinstance(f, int)]
        if seeded:
            for i, w in zip(seeded, self.latents([found[i] for i in seeded])):
                ws[i] = w
        for i, f in enumerate(found):
            if ws[i] is None:
                ws[i] = f.to(self.device)
        return torch.stack(ws)


# ---- checkpoints ------------------------------------------------------------------------------------
def save_stylegan2(directory: str | Path, net: StyleGAN2, *, truncation_psi: float = 1.0,
                   extra: dict | None = None) -> None:
    """The toolkit's folder format: `config.json` (format datasetddpm.stylegan2) + `model.safetensors`."""
    write_checkpoint(directory, net.state_dict(), meta_file="config.json", weights_file="model.safetensors",
                     fmt=CHECKPOINT_FORMAT, body={"generator": "stylegan2", "stylegan2": net.cfg.to_dict(),
                                                  "truncation_psi": truncation_psi, **(extra or {})})


def build_stylegan2(config: dict, state: dict[str, torch.Tensor], source, config_source=None) -> StyleGAN2:
    """A StyleGAN2 from its config and a strictly checked state dict with NVIDIA's names."""
    try:
        cfg = StyleGAN2Config(**config)
        with torch.device("meta"):
            net = StyleGAN2(cfg)
    except (TypeError, ValueError) as e:
        raise InputError(config_source or source, f"invalid StyleGAN2 config ({e})") from None
    state = {k: v.float() for k, v in state.items()}
    load_state_strict(net, state, source, assign=True)
    return net


def load_stylegan2(directory: str | Path, device: str | torch.device = "cpu") -> StyleGAN2Generator:
    directory = Path(directory)
    meta = read_checkpoint_meta(directory, "config.json", CHECKPOINT_FORMAT, "StyleGAN2 checkpoint")
    weights = directory / "model.safetensors"
    net = build_stylegan2(meta["stylegan2"], load_tensors(weights), weights, directory / "config.json")
    return StyleGAN2Generator(net.to(device), truncation_psi=meta.get("truncation_psi", 1.0),
                              source=str(directory.resolve()))


# ---- NVIDIA weights ---------------------------------------------------------------------------------
def infer_config(state: dict[str, torch.Tensor], source, *, conv_clamp: float | None = None) -> dict:
    """`StyleGAN2Config` fields of a bare state dict with NVIDIA's names (shapes fix all but conv_clamp
    and the mapping's lr multiplier, left at NVIDIA's defaults)."""
    try:
        fc = sorted(int(k.split(".")[1][2:]) for k in state if k.startswith("mapping.fc") and k.endswith(".weight"))
        res = sorted({int(k.split(".")[1][1:]) for k in state if k.startswith("synthesis.b")})
        channels = {r: int(state[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in res}
        z_dim, w_dim = int(state["mapping.fc0.weight"].shape[1]), int(state["mapping.fc0.weight"].shape[0])
        img_channels = int(state[f"synthesis.b{res[-1]}.torgb.weight"].shape[0])
    except (KeyError, ValueError, IndexError):
        raise InputError(source, "not a StyleGAN2 generator state dict (expected NVIDIA names mapping.fc0.weight, "
                                 "synthesis.b4.conv1.weight, ...)") from None
    channel_max = max(channels.values())
    below = [r for r in res if channels[r] < channel_max]
    channel_base = channels[below[0]] * below[0] if below else channel_max * res[-1]
    if any(min(channel_base // r, channel_max) != c for r, c in channels.items()):
        raise InputError(source, f"channel widths {channels} do not follow min(channel_base // res, channel_max)")
    return {"resolution": res[-1], "z_dim": z_dim, "w_dim": w_dim, "mapping_layers": len(fc),
            "channel_base": channel_base, "channel_max": channel_max, "conv_clamp": conv_clamp,
            "img_channels": img_channels}


def read_nvidia_weights(path: str | Path, *, conv_clamp: float | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, state dict) of a NVIDIA `.pkl` snapshot (its G_ema, read without running its code), or of a
    G_ema state dict saved as `.safetensors` / weights-only `.pt`."""
    from .stylegan2_pickle import load_snapshot
    path = Path(path)
    if path.suffix == ".pkl":
        return load_snapshot(path)
    state = load_state_dict_file(path)
    return infer_config(state, path, conv_clamp=conv_clamp), state


def convert_stylegan2(path: str | Path, out_dir: str | Path, *, truncation_psi: float = 1.0,
                      conv_clamp: float | None = None, overwrite: bool = False) -> StyleGAN2Generator:
    """NVIDIA weights -> the toolkit's folder (checked strictly); returns the loaded generator."""
    if (Path(out_dir) / "config.json").exists() and not overwrite:
        raise OptionError("--out", f"{out_dir} already holds a model; pass --overwrite to replace it")
    if not 0 <= truncation_psi <= 1:
        raise OptionError("--truncation-psi", f"must be in [0, 1], got {truncation_psi}")
    config, state = read_nvidia_weights(path, conv_clamp=conv_clamp)
    net = build_stylegan2(config, state, path)
    save_stylegan2(out_dir, net, truncation_psi=truncation_psi, extra={"converted_from": str(Path(path).resolve())})
    return load_stylegan2(out_dir)
