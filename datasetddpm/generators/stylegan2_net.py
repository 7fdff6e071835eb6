"""StyleGAN2 generator in plain PyTorch (no CUDA extensions), NVIDIA-compatible parameter names.

The module tree and every parameter / buffer name follow stylegan2-ada-pytorch's `Generator`
(`mapping.fc{i}`, `mapping.w_avg`, `synthesis.b{res}.{const,conv0,conv1,torgb}`, `affine`,
`noise_const`, `noise_strength`, `resample_filter`), so the `G_ema` of a NVIDIA snapshot loads with
`load_state_dict(strict=True)`. The arithmetic follows the StyleGAN2 paper: equalised learning rate
(weights scaled by 1/sqrt(fan_in) at run time), modulated / demodulated 3x3 convolutions, upsampling
by a transposed convolution followed by a [1, 3, 3, 1] low-pass filter, constant or random per-pixel
noise, and a "skip" generator whose ToRGB outputs are upsampled and summed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2)  # keeps activations' second moment through leaky ReLU (slope 0.2)


@dataclass(frozen=True)
class StyleGAN2Config:
    """The architecture; NVIDIA's `G.init_kwargs` map onto it one to one (see stylegan2_pickle)."""

    resolution: int = 32  # output side, a power of two >= 4
    z_dim: int = 512  # input latent size
    w_dim: int = 512  # intermediate latent size
    mapping_layers: int = 8  # fully connected layers of the mapping network
    channel_base: int = 32768  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512
    conv_clamp: float | None = None  # clamp synthesis activations to +-X (NVIDIA: 256 in most configs)
    lr_multiplier: float = 0.01  # mapping network's learning-rate multiplier
    w_avg_beta: float = 0.995  # decay of the tracked mean of w (used by truncation)
    img_channels: int = 3

    def to_dict(self) -> dict:
        return asdict(self)

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, int(math.log2(self.resolution)) + 1)]


def setup_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """The 2-D separable low-pass filter, normalised to sum 1 (NVIDIA's `resample_filter` buffer)."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def filter2d(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int, int, int], gain: float) -> torch.Tensor:
    """Pad (left, right, top, bottom) then convolve every channel with `f` * gain (true convolution)."""
    C = x.shape[1]
    kernel = (f * gain).flip([0, 1]).to(x.dtype)[None, None].repeat(C, 1, 1, 1)
    return F.conv2d(F.pad(x, list(pad)), kernel, groups=C)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x upsampling: zero insertion, then the low-pass filter (gain 4 keeps the mean)."""
    B, C, H, W = x.shape
    x = F.pad(x.reshape(B, C, H, 1, W, 1), [0, 1, 0, 0, 0, 1]).reshape(B, C, 2 * H, 2 * W)
    return filter2d(x, f, (2, 1, 2, 1), gain=4)


def _conv(x: torch.Tensor, w: torch.Tensor, up: bool, resample_filter, groups: int = 1) -> torch.Tensor:
    """3x3 (or 1x1) convolution with `w` (O, I / groups, k, k); with `up`, a stride-2 transposed convolution
    (2H + 1 px) followed by the low-pass filter with 1 px padding (2H px)."""
    k = w.shape[-1]
    if not up:
        return F.conv2d(x, w, padding=k // 2, groups=groups)
    O = w.shape[0] // groups
    wt = w.reshape(groups, O, -1, k, k).transpose(1, 2).reshape(-1, O, k, k)
    return filter2d(F.conv_transpose2d(x, wt, stride=2, groups=groups), resample_filter, (1, 1, 1, 1), gain=4)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                     up: bool = False, resample_filter: torch.Tensor | None = None, fused: bool = True) -> torch.Tensor:
    """Per-sample weights weight * style (input channels), optionally demodulated to unit norm per
    output channel. `fused`: one grouped convolution with per-sample weights (NVIDIA's inference path);
    else the same product as activations x style -> shared-weight conv -> x demodulation coefficient
    (NVIDIA's training path, several times faster on a CPU for a backward pass)."""
    B, I, H, W = x.shape
    O, _, kh, kw = weight.shape
    w = weight[None] * styles[:, None, :, None, None]  # (B, O, I, kh, kw)
    dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt() if demodulate else None  # (B, O)
    if not fused:
        x = _conv(x * styles[:, :, None, None], weight, up, resample_filter)
        return x * dcoefs[:, :, None, None] if demodulate else x
    if demodulate:
        w = w * dcoefs[:, :, None, None, None]
    x = _conv(x.reshape(1, B * I, H, W), w.reshape(B * O, I, kh, kw), up, resample_filter, groups=B)
    return x.reshape(B, O, *x.shape[2:])


class FullyConnectedLayer(nn.Module):
    def __init__(self, in_features: int, out_features: int, *, activation: bool = False, lr_multiplier: float = 1.0,
                 bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.activation = activation
        self.weight_gain = lr_multiplier / math.sqrt(in_features)  # equalised learning rate
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activation else x


class MappingNetwork(nn.Module):
    def __init__(self, cfg: StyleGAN2Config, num_ws: int):
        super().__init__()
        self.num_ws, self.num_layers = num_ws, cfg.mapping_layers
        sizes = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(sizes[i], sizes[i + 1], activation=True,
                                                         lr_multiplier=cfg.lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        """(B, z_dim) -> (B, num_ws, w_dim); truncation pulls the first `cutoff` (all) ws towards w_avg."""
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cut] = self.w_avg.lerp(ws[:, :cut], truncation_psi)
        return ws


class SynthesisLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: bool = False,
                 conv_clamp: float | None = None):
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.register_buffer("resample_filter", setup_filter())
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)  # styles start at 1
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w), up=self.up, resample_filter=self.resample_filter,
                             fused=not self.training)
        if noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device) * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        x = F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * LRELU_GAIN
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class ToRGBLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False,
                             fused=not self.training)
        x = x + self.bias[None, :, None, None]
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class SynthesisBlock(nn.Module):
    """One resolution: (const | conv0 with 2x up), conv1, ToRGB; `num_conv` ws plus one for ToRGB,
    which shares its w with the next block's conv0 (NVIDIA's w indexing)."""

    def __init__(self, in_channels: int, out_channels: int, cfg: StyleGAN2Config, resolution: int):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.register_buffer("resample_filter", setup_filter())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, cfg.w_dim, resolution, up=True,
                                        conv_clamp=cfg.conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, cfg.w_dim, resolution, conv_clamp=cfg.conv_clamp)
        self.torgb = ToRGBLayer(out_channels, cfg.img_channels, cfg.w_dim, conv_clamp=cfg.conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2

    def layers(self) -> list[SynthesisLayer]:
        return [self.conv1] if self.in_channels == 0 else [self.conv0, self.conv1]

    def forward(self, x, img, ws: torch.Tensor, noise_mode: str = "const", outputs: list | None = None):
        """ws: (B, num_conv + 1, w_dim). Appends each conv layer's output to `outputs` when given."""
        if self.in_channels == 0:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        for k, layer in enumerate(self.layers()):
            x = layer(x, ws[:, k], noise_mode)
            if outputs is not None:
                outputs.append(x)
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        self.block_resolutions = cfg.block_resolutions
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(cfg.channels(res // 2) if res > 4 else 0, cfg.channels(res), cfg, res)
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last ToRGB's w

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", outputs: list | None = None,
                stop_after_layer: int | None = None) -> torch.Tensor | None:
        """Image (B, C, R, R) in about [-1, 1]; with `stop_after_layer`, only the layers up to that index
        run (their outputs collected in `outputs`) and None is returned."""
        x = img = None
        w_idx, done = 0, 0
        for block in self.blocks():
            x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], noise_mode, outputs)
            w_idx += block.num_conv
            done += block.num_conv
            if stop_after_layer is not None and done > stop_after_layer:
                return None
        return img


class StyleGAN2(nn.Module):
    """mapping + synthesis, as NVIDIA's `Generator` (unconditional: c_dim = 0)."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        if cfg.resolution < 4 or cfg.resolution & (cfg.resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 4, got {cfg.resolution}")
        self.cfg = cfg
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg, self.num_ws)

    def layer_info(self) -> list[tuple[int, int]]:
        """(channels, resolution) of every synthesis conv layer, in feature-layer order."""
        return [(layer.bias.shape[0], layer.resolution) for b in self.synthesis.blocks() for layer in b.layers()]

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, noise_mode: str = "const") -> torch.Tensor:
        return self.synthesis(self.mapping(z, truncation_psi), noise_mode)
