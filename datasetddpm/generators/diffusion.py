"""Diffusion backend: a diffusers `UNet2DModel` + noise schedule, decoder-block features, sampling.

Decoder blocks are addressed in ADM's `output_blocks` numbering, deepest first: block k is the
output of the last module diffusers applies for that step of the up path — `up_blocks[i].resnets[j]`,
then `attentions[j]` if the level has attention, then `upsamplers[0]` when j is the level's last
resnet and the level upsamples. This makes the paper's block ids (e.g. {5, 6, 7, 8, 12} for the
256-px ADM models) mean the same thing on a converted checkpoint as in the reference code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

from ..errors import InputError, OptionError
from ..io import (load_state_dict_file, load_state_strict, read_json,
                  write_checkpoint)
from .base import FeatureSpec

CHECKPOINT_FORMAT = "datasetddpm.ddpm"
# --precision: the autocast dtype of UNet calls (None: float32). On a GPU fp32 keeps torch's defaults (cuDNN
# convolutions may use TensorFloat-32, matmuls do not); tf32 lets matmuls use it too. A CPU has no TF32.
PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
SAMPLERS = {
    "ddpm": DDPMScheduler,  # the paper's full ancestral sampler
    "ddim": DDIMScheduler,
    "dpm++": DPMSolverMultistepScheduler,
}


@dataclass(frozen=True)
class DecoderBlock:
    index: int  # ADM output_blocks id
    module: torch.nn.Module  # the module whose output is the block's output
    channels: int
    downscale: int  # image side / feature side


def decoder_blocks(unet: UNet2DModel) -> list[DecoderBlock]:
    """All decoder blocks of `unet` in ADM numbering, with the module to hook for each."""
    channels = list(reversed(unet.config.block_out_channels))
    levels = len(channels)
    blocks = []
    for i, up in enumerate(unet.up_blocks):
        downscale = 2 ** (levels - 1 - i)
        attentions = getattr(up, "attentions", None)
        upsamplers = getattr(up, "upsamplers", None)
        for j, resnet in enumerate(up.resnets):
            last = j == len(up.resnets) - 1
            if last and upsamplers:
                module, scale = upsamplers[0], downscale // 2
            elif attentions is not None and len(attentions) > j and attentions[j] is not None:
                module, scale = attentions[j], downscale
            else:
                module, scale = resnet, downscale
            blocks.append(DecoderBlock(len(blocks), module, channels[i], scale))
    return blocks


class _StopForward(Exception):
    """Raised by the hook of the last needed block: the rest of the UNet is not needed."""


class DiffusionGenerator:
    """A UNet2DModel with its training noise schedule; implements the `Generator` interface."""

    def __init__(self, unet: UNet2DModel, scheduler_config: dict, *, source: str = "<memory>"):
        self.unet = unet.eval().requires_grad_(False)
        self.scheduler_config = dict(scheduler_config)
        self.train_scheduler = DDPMScheduler.from_config(self.scheduler_config)
        self.source = source
        self.resolution = int(unet.config.sample_size)
        self.blocks = decoder_blocks(unet)
        self.num_train_timesteps = int(self.train_scheduler.config.num_train_timesteps)
        self._factor = 2 ** (len(unet.config.block_out_channels) - 1)
        # Rows per UNet call when featurising (images x steps); 0 = all steps of a batch in one call.
        self.max_forward_batch = 0
        self.autocast: torch.dtype | None = None  # e.g. torch.bfloat16: UNet calls under autocast
        self._sampling_unet = self.unet  # torch.compile'd by `optimize(compile=True)`

    def optimize(self, *, precision: str = "fp32", channels_last: bool = False, compile: bool = False) -> None:
        """Speed options for GPUs: bf16 autocast, channels-last memory format, torch.compile of the sampling
        UNet (feature extraction stays eager: its hooks stop the forward early)."""
        if precision not in PRECISIONS:
            raise OptionError("--precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.autocast = PRECISIONS[precision]
        if self.device.type == "cuda":  # fp32 keeps torch's defaults (runs made before --precision existed)
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
            torch.backends.cudnn.allow_tf32 = True
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        self._sampling_unet = torch.compile(self.unet) if compile else self.unet

    def _unet(self, unet, x: torch.Tensor, t: torch.Tensor):
        if self.autocast is None:
            return unet(x, t)
        with torch.autocast(x.device.type, dtype=self.autocast):
            return unet(x, t)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    # ---- validation -------------------------------------------------------------------------
    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    def check_spec(self, spec: FeatureSpec) -> None:
        n = len(self.blocks)
        for b in spec.blocks:
            if not 0 <= b < n:
                raise OptionError("--blocks", f"unknown decoder block {b}; this model has blocks 0..{n - 1}")
        for t in spec.steps:
            if not 0 <= t < self.num_train_timesteps:
                raise OptionError("--steps", f"step {t} is outside [0, {self.num_train_timesteps})")
        if not spec.blocks or not spec.steps:
            raise OptionError("--blocks/--steps", "need at least one block and one step")

    def check_image_size(self, height: int, width: int) -> str | None:
        """None when the UNet can take an image of this size, else the reason it cannot."""
        if height % self._factor or width % self._factor:
            return f"image size {width}x{height} is not supported by this model: sides must be multiples of {self._factor}"
        return None

    # ---- features ---------------------------------------------------------------------------
    def feature_channels(self, spec: FeatureSpec) -> list[int]:
        self.check_spec(spec)
        return [self.blocks[b].channels for _ in spec.steps for b in spec.blocks]

    def feature_downscales(self, spec: FeatureSpec) -> list[int]:
        return [self.blocks[b].downscale for _ in spec.steps for b in spec.blocks]

    def fixed_noise(self, spec: FeatureSpec, height: int, width: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(spec.noise_seed)
        return torch.randn(1, 3, height, width, generator=g)

    @torch.no_grad()
    def feature_maps(self, images: torch.Tensor, spec: FeatureSpec) -> list[torch.Tensor]:
        """Native-resolution decoder maps of (B, 3, H, W) uint8 images, step-major then block order.

        The noised copies for several steps go through the UNet as one batch (B x steps rows, at most
        `max_forward_batch` per call), instead of one call per step: fewer, larger kernels."""
        self.check_spec(spec)
        B, _, H, W = images.shape
        reason = self.check_image_size(H, W)
        if reason:
            raise ValueError(reason)
        device = self.device
        x0 = images.to(device, torch.float32) / 127.5 - 1.0
        eps = self.fixed_noise(spec, H, W).to(device)
        per_call = max(1, self.max_forward_batch // B) if self.max_forward_batch else len(spec.steps)
        maps: list[torch.Tensor] = []
        for first in range(0, len(spec.steps), per_call):
            steps = list(spec.steps[first:first + per_call])
            captured = self._decoder_outputs(x0, eps, steps, spec.blocks)
            for k in range(len(steps)):  # rows k*B .. (k+1)*B are step k's
                maps.extend(captured[b][k * B:(k + 1) * B].float() for b in spec.blocks)
        return maps

    def _decoder_outputs(self, x0: torch.Tensor, eps: torch.Tensor, steps: list[int],
                         blocks: Sequence[int]) -> dict[int, torch.Tensor]:
        """One UNet call on q(x_t | x_0) for every t in `steps` (shared eps), stopped after the last needed
        block; returns {block: (len(steps) * B, C, h, w)}."""
        B, device = x0.shape[0], x0.device
        t = torch.tensor(steps, device=device, dtype=torch.long).repeat_interleave(B)
        xt = self.train_scheduler.add_noise(x0.repeat(len(steps), 1, 1, 1), eps.expand(len(t), -1, -1, -1), t)
        captured: dict[int, torch.Tensor] = {}
        deepest_needed = max(blocks)

        def make_hook(index: int):
            def hook(_module, _inputs, output):
                captured[index] = output
                if index == deepest_needed:
                    raise _StopForward
            return hook

        handles = [self.blocks[b].module.register_forward_hook(make_hook(b)) for b in set(blocks)]
        try:
            self._unet(self.unet, xt, t)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return captured

    # ---- sampling ---------------------------------------------------------------------------
    def make_sampler(self, name: str, num_steps: int):
        if name not in SAMPLERS:
            raise OptionError("--sampler", f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
        if not 1 <= num_steps <= self.num_train_timesteps:
            raise OptionError("--sampling-steps", f"{num_steps} is outside [1, {self.num_train_timesteps}]")
        config = dict(self.scheduler_config)
        if name == "dpm++" and config.get("clip_sample", True):
            # Pixel-space DDPMs clip x0 to [-1, 1]; DPM-Solver++ has no clip, and without (dynamic)
            # thresholding its early x0 predictions blow up (measured: saturated, structureless samples).
            config.update(thresholding=True, sample_max_value=float(config.get("clip_sample_range", 1.0)))
        sampler = SAMPLERS[name].from_config(config)
        sampler.set_timesteps(num_steps)
        return sampler

    def sample(self, seeds: Sequence[int], *, sampler: str = "ddim", num_steps: int = 50) -> torch.Tensor:
        """(N, 3, R, R) uint8 samples on the CPU; sample i depends only on seeds[i] (one generator per sample)."""
        return self.sample_on_device(seeds, sampler=sampler, num_steps=num_steps).cpu()

    def visited_steps(self, sampler: str, num_steps: int) -> list[int]:
        """The timesteps a sampler runs the UNet at, ascending: the steps trajectory features can use."""
        return sorted({int(t) for t in self.make_sampler(sampler, num_steps).timesteps})

    def check_trajectory_spec(self, spec: FeatureSpec, sampler: str, num_steps: int) -> None:
        """Trajectory features exist only at the timesteps the sampler visits: one line otherwise."""
        self.check_spec(spec)
        visited = self.visited_steps(sampler, num_steps)
        missing = [t for t in spec.steps if t not in visited]
        if missing:
            nearest = sorted({min(visited, key=lambda v: abs(v - t)) for t in spec.steps})
            shown = ", ".join(map(str, visited[:6])) + (", ..." if len(visited) > 6 else "")
            raise OptionError("--trajectory-features",
                              f"the ensemble's steps {list(spec.steps)} are not all visited by {sampler} with "
                              f"{num_steps} steps (it visits {shown}); train an ensemble on visited steps, e.g. "
                              f"--steps {','.join(map(str, nearest))}")

    @torch.no_grad()
    def sample_with_features(self, seeds: Sequence[int], spec: FeatureSpec, *, sampler: str = "ddim",
                             num_steps: int = 50) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Samples (as `sample`) and, for free, the decoder maps the sampler's own UNet calls made at
        `spec.steps` (step-major then block order, as `feature_maps` returns them). These are activations of
        the trajectory's x_t, not of q(x_t | x_0) with the fixed feature noise: an ensemble meant for them is
        trained on the same steps. The eager UNet runs (a compiled one may not call the hooks)."""
        self.check_trajectory_spec(spec, sampler, num_steps)
        captured: dict[tuple[int, int], torch.Tensor] = {}
        current = {"t": -1}

        def make_hook(b: int):
            def hook(_module, _inputs, output):
                if current["t"] in spec.steps:
                    captured[current["t"], b] = output.float()
            return hook

        handles = [self.blocks[b].module.register_forward_hook(make_hook(b)) for b in set(spec.blocks)]
        try:
            images = self._sample_loop(seeds, sampler, num_steps, self.unet, on_step=lambda t: current.update(t=t))
        finally:
            for h in handles:
                h.remove()
        return images.cpu(), [captured[t, b] for t in spec.steps for b in spec.blocks]

    @torch.no_grad()
    def sample_on_device(self, seeds: Sequence[int], *, sampler: str = "ddim", num_steps: int = 50) -> torch.Tensor:
        """`sample`, left on the model's device. The initial noise and every ancestral step's noise come from
        CPU generators seeded per sample, so seeds mean the same images on any device (up to kernel rounding)."""
        return self._sample_loop(seeds, sampler, num_steps, self._sampling_unet)

    def _sample_loop(self, seeds: Sequence[int], sampler: str, num_steps: int, unet, on_step=None) -> torch.Tensor:
        scheduler = self.make_sampler(sampler, num_steps)
        device = self.device
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        R = self.resolution
        x = torch.stack([torch.randn(3, R, R, generator=g) for g in gens]).to(device)
        x = x * scheduler.init_noise_sigma
        # A learned-variance model (ADM learn_sigma) outputs eps and the variance; the DDPM step uses both.
        keep_variance = isinstance(scheduler, DDPMScheduler) and scheduler.config.variance_type in ("learned",
                                                                                                  "learned_range")
        for t in scheduler.timesteps:
            if on_step is not None:
                on_step(int(t))
            model_in = scheduler.scale_model_input(x, t)
            out = self._unet(unet, model_in, t.to(device).expand(len(seeds))).sample.float()
            x = scheduler.step(out if keep_variance else out[:, :3], t, x, generator=gens).prev_sample
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


# ---- checkpoints ------------------------------------------------------------------------------
def unet_config_dict(unet: UNet2DModel) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in unet.config.items() if not k.startswith("_")}


def save_checkpoint(directory: str | Path, unet: UNet2DModel, scheduler_config: dict, extra: dict | None = None) -> None:
    """Write `config.json` + `model.safetensors` (the weights given, usually the EMA)."""
    sched = {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")}
    write_checkpoint(directory, unet.state_dict(), meta_file="config.json", weights_file="model.safetensors",
                     fmt=CHECKPOINT_FORMAT, body={"unet": unet_config_dict(unet), "scheduler": sched, **(extra or {})})


DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# Attention names of diffusers folders saved before 0.14 (e.g. the google/ddpm-* family).
_DEPRECATED_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def build_unet(config: dict, state: dict[str, torch.Tensor], source, config_source=None) -> UNet2DModel:
    """A UNet2DModel from its config and a strictly checked state dict (built on the meta device:
    no random init of weights that are overwritten anyway)."""
    try:
        with torch.device("meta"):
            unet = UNet2DModel.from_config(config)
    except Exception as e:
        raise InputError(config_source or source, f"invalid UNet config ({e})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    load_state_strict(unet, state, source, assign=True)
    return unet


def _diffusers_weights(unet_dir: Path, meta: bool = False) -> tuple[dict[str, torch.Tensor], Path]:
    """The UNet's weights (safetensors, else a weights-only .bin) with current attention names."""
    found = [unet_dir / n for n in DIFFUSERS_WEIGHTS if (unet_dir / n).is_file()]
    if not found:
        raise InputError(unet_dir, f"no weights found (expected {' or '.join(DIFFUSERS_WEIGHTS)})")
    renamed = {}
    for key, value in load_state_dict_file(found[0], meta).items():
        parts = key.split(".")
        if "attentions" in parts and parts[-2] in _DEPRECATED_ATTENTION:
            parts[-2] = _DEPRECATED_ATTENTION[parts[-2]]
        renamed[".".join(parts)] = value
    return renamed, found[0]


def _load_diffusers(directory: Path, device) -> DiffusionGenerator:
    """A diffusers UNet2DModel folder with scheduler_config.json, or a pipeline folder (unet/, scheduler/)."""
    pipeline = (directory / "unet").is_dir()
    unet_dir = directory / "unet" if pipeline else directory
    scheduler_file = (directory / "scheduler" if pipeline else directory) / "scheduler_config.json"
    config = read_json(unet_dir / "config.json")
    if config.get("_class_name") != "UNet2DModel":
        raise InputError(unet_dir / "config.json", f"not a diffusers UNet2DModel (_class_name="
                                                   f"{config.get('_class_name')!r}); only UNet2DModel is supported")
    if not scheduler_file.is_file():
        raise InputError(scheduler_file, "file not found: a diffusers model needs its training noise schedule")
    scheduler = read_json(scheduler_file)
    state, weights = _diffusers_weights(unet_dir, torch.device(device).type == "meta")
    unet = build_unet(config, state, weights, unet_dir / "config.json")
    return DiffusionGenerator(unet.to(device), scheduler, source=str(directory.resolve()))
