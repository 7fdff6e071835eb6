"""Train a small StyleGAN2 (non-saturating loss, lazy R1, generator EMA), resumably.

The recipe is StyleGAN2's minus style mixing and path-length regularisation (both matter little at
32 px and cost CPU time): logistic non-saturating loss, R1 on real images every `r1_every` steps
(scaled by r1_every, "lazy" regularisation), Adam(betas 0, 0.99), mapping lr x0.01 (built into the
network's equalised learning rate), tracked w_avg for truncation, EMA of the generator's weights.
Mirrors `train_ddpm`: the batch of step s comes from generators seeded by (seed, s) and the state is
written last (the commit point), so a resumed run continues as an uninterrupted one would.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OptionError
from ..io import (
    load_optimizer_tensors,
    load_tensors,
    optimizer_tensors,
    save_tensors,
    write_json,
)
from ..progress import progress_bar
from ..rundir import append_log, training_dir
from .stylegan2 import save_stylegan2
from .stylegan2_net import StyleGAN2, StyleGAN2Config
from .train_ddpm import _batch, _load_pool


@dataclass
class StyleGAN2TrainConfig:
    data: str = "embedded"  # "embedded" (procedural pool) or an image folder
    pool_size: int = 10000  # images rendered for "embedded"
    resolution: int = 32
    z_dim: int = 64
    w_dim: int = 64
    mapping_layers: int = 2
    channel_base: int = 2048  # channels at side r: min(channel_base // r, channel_max)
    channel_max: int = 64
    steps: int = 4800  # ~2 h on one busy CPU core at the default size (1.5 s/step measured)
    batch_size: int = 16
    lr: float = 0.0025
    r1_gamma: float = 0.05  # R1 weight (NVIDIA uses 0.01 for CIFAR-10 at 32 px)
    r1_every: int = 16  # lazy regularisation interval
    ema_decay: float = 0.999
    truncation_psi: float = 1.0  # written into the saved model (sampling only)
    seed: int = 0
    checkpoint_every: int = 250

    def validate(self) -> None:
        r = self.resolution
        checks = [("--steps", self.steps >= 1, f"must be >= 1, got {self.steps}"),
                  ("--batch-size", self.batch_size >= 2, f"must be >= 2, got {self.batch_size}"),
                  ("--lr", self.lr > 0, f"must be > 0, got {self.lr}"),
                  ("--r1-gamma", self.r1_gamma >= 0, f"must be >= 0, got {self.r1_gamma}"),
                  ("--r1-every", self.r1_every >= 1, f"must be >= 1, got {self.r1_every}"),
                  ("--ema-decay", 0 <= self.ema_decay < 1, f"must be in [0, 1), got {self.ema_decay}"),
                  ("--truncation-psi", 0 <= self.truncation_psi <= 1, f"must be in [0, 1], got {self.truncation_psi}"),
                  ("--checkpoint-every", self.checkpoint_every >= 1, f"must be >= 1, got {self.checkpoint_every}"),
                  ("--pool-size", self.pool_size >= 1, f"must be >= 1, got {self.pool_size}"),
                  ("--resolution", r >= 8 and r & (r - 1) == 0, f"must be a power of two >= 8, got {r}"),
                  ("--resolution", self.data != "embedded" or r >= 32, f"the embedded domain needs >= 32 px, got {r}"),
                  ("--channel-base", self.channel_base // r >= 1, f"gives no channels at {r} px"),
                  ("--z-dim/--w-dim", min(self.z_dim, self.w_dim) >= 1, "must be >= 1")]
        for option, ok, problem in checks:
            if not ok:
                raise OptionError(option, problem)

    def net_config(self) -> StyleGAN2Config:
        return StyleGAN2Config(resolution=self.resolution, z_dim=self.z_dim, w_dim=self.w_dim,
                               mapping_layers=self.mapping_layers, channel_base=self.channel_base,
                               channel_max=self.channel_max)

    def hash(self) -> str:
        d = asdict(self)
        for name in ("steps", "checkpoint_every", "truncation_psi"):  # extending / saving differently: a resume
            d.pop(name)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


class EqualConv2d(nn.Conv2d):
    """A convolution with StyleGAN's equalised learning rate: N(0, 1) weights scaled by 1/sqrt(fan_in) at run
    time, so Adam's step size means the same for D as for G (whose layers do the same)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.normal_(self.weight)
        nn.init.zeros_(self.bias)
        self.gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.gain, self.bias, padding=self.padding)


class EqualLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        nn.init.normal_(self.weight)
        nn.init.zeros_(self.bias)
        self.gain = 1 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.gain, self.bias)


class Discriminator(nn.Module):
    """fromRGB, then per resolution two 3x3 convs and 2x average-pool down to 4x4, minibatch std, two
    linear layers -> one logit per image (a plain-conv StyleGAN2-style discriminator, equalised lr)."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        sides = cfg.block_resolutions[::-1][:-1]  # R, R/2, ..., 8
        self.fromrgb = EqualConv2d(cfg.img_channels, cfg.channels(cfg.resolution), 1)
        self.blocks = nn.ModuleList(nn.Sequential(
            EqualConv2d(cfg.channels(r), cfg.channels(r), 3), nn.LeakyReLU(0.2),
            EqualConv2d(cfg.channels(r), cfg.channels(r // 2), 3), nn.LeakyReLU(0.2),
            nn.AvgPool2d(2)) for r in sides)
        c4 = cfg.channels(4)
        self.conv = EqualConv2d(c4 + 1, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4)
        self.out = EqualLinear(c4, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.fromrgb(img), 0.2)
        for block in self.blocks:
            x = block(x)
        group = math.gcd(4, x.shape[0])  # minibatch standard deviation over groups of up to 4 images
        std = x.reshape(group, -1, *x.shape[1:]).std(dim=0, unbiased=False).mean(dim=[1, 2, 3])
        x = torch.cat([x, std.repeat(group)[:, None, None, None].expand(-1, 1, 4, 4)], dim=1)
        x = F.leaky_relu(self.conv(x), 0.2)
        return self.out(F.leaky_relu(self.fc(x.flatten(1)), 0.2)).squeeze(1)


def train_stylegan2(out_dir: str | Path, cfg: StyleGAN2TrainConfig, *, overwrite: bool = False, progress: bool = True,
                    device: str | torch.device = "cpu", log=print) -> Path:
    """Train (or resume) into `out_dir`; returns the folder of the EMA generator (a `--model`)."""
    out = Path(out_dir)
    cfg.validate()
    pool = _load_pool(cfg)  # a bad image folder is refused before anything is written
    with training_dir(out, cfg.hash(), overwrite=overwrite, subdirs=("ema",)):
        return _train(out, cfg, pool, overwrite=overwrite, progress=progress, device=torch.device(device), log=log)


class _Models:
    """G, D, the EMA generator and both optimisers, with their flat (safetensors) state."""

    def __init__(self, cfg: StyleGAN2TrainConfig, device: torch.device):
        torch.manual_seed(cfg.seed)
        net_cfg = cfg.net_config()
        self.G, self.D = StyleGAN2(net_cfg).to(device), Discriminator(net_cfg).to(device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        c = cfg.r1_every / (cfg.r1_every + 1)  # lazy R1: StyleGAN2's Adam correction for D
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(0.0, 0.99), eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.lr * c, betas=(0.0, 0.99 ** c), eps=1e-8)

    def state(self, step: int) -> dict[str, torch.Tensor]:
        s = {f"{name}.{k}": v for name in ("G", "D", "G_ema") for k, v in getattr(self, name).state_dict().items()}
        s.update(optimizer_tensors(self.opt_G, "opt_G."))
        s.update(optimizer_tensors(self.opt_D, "opt_D."))
        s["step"] = torch.tensor(step)
        return s

    def restore(self, state: dict[str, torch.Tensor]) -> int:
        for name in ("G", "D", "G_ema"):
            getattr(self, name).load_state_dict({k[len(name) + 1:]: v for k, v in state.items()
                                                 if k.startswith(name + ".")})
        load_optimizer_tensors(self.opt_G, state, "opt_G.")
        load_optimizer_tensors(self.opt_D, state, "opt_D.")
        return int(state["step"])

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p, 1 - decay)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)  # w_avg is tracked in G itself


def _step(m: _Models, cfg: StyleGAN2TrainConfig, pool: np.ndarray, step: int, device: torch.device) -> dict:
    """One G and one D update (plus R1 every r1_every steps); all randomness seeded by (seed, step)."""
    real = _batch(pool, cfg, step).to(device)
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    z = torch.randn(2, len(real), cfg.z_dim, generator=g).to(device)
    torch.manual_seed(cfg.seed * 1_000_003 + step)  # the synthesis layers' random noise inputs
    # Generator: non-saturating logistic loss; tracks the mean w for truncation.
    ws = m.G.mapping(z[0])
    with torch.no_grad():
        m.G.mapping.w_avg.copy_(ws[:, 0].mean(0).lerp(m.G.mapping.w_avg, cfg.net_config().w_avg_beta))
    loss_G = F.softplus(-m.D(m.G.synthesis(ws, noise_mode="random"))).mean()
    m.opt_G.zero_grad(set_to_none=True)
    loss_G.backward()
    m.opt_G.step()
    # Discriminator: logistic loss on fakes and reals, lazy R1 on reals.
    with torch.no_grad():
        fake = m.G(z[1], noise_mode="random")
    loss_D = F.softplus(m.D(fake)).mean() + F.softplus(-m.D(real)).mean()
    r1 = torch.zeros((), device=device)
    if cfg.r1_gamma > 0 and step % cfg.r1_every == 0:
        x = real.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(m.D(x).sum(), x, create_graph=True)
        r1 = grad.square().sum(dim=[1, 2, 3]).mean()
    m.opt_D.zero_grad(set_to_none=True)
    (loss_D + r1 * (cfg.r1_gamma / 2) * cfg.r1_every).backward()
    m.opt_D.step()
    m.update_ema(cfg.ema_decay)
    return {"loss_G": loss_G.item(), "loss_D": loss_D.item(), "r1": r1.item()}


def _train(out: Path, cfg: StyleGAN2TrainConfig, pool: np.ndarray, *, overwrite: bool, progress: bool,
           device: torch.device, log) -> Path:
    state_file, log_file = out / "train_state.safetensors", out / "train_log.jsonl"
    m = _Models(cfg, device)
    step = 0
    if state_file.exists() and not overwrite:
        step = m.restore(load_tensors(state_file))
        log(f"resuming {out} at step {step}")
    elif overwrite:
        for stale in (state_file, log_file):
            stale.unlink(missing_ok=True)
    write_json(out / "train_config.json", {"hash": cfg.hash(), "config": asdict(cfg)})
    recent: list[dict] = []
    t0 = time.time()
    with progress_bar(progress) as bar:
        task = bar.add_task("train-stylegan2", total=cfg.steps, completed=step, info="")
        while step < cfg.steps:
            m.G.train(), m.D.train()
            recent.append(_step(m, cfg, pool, step, device))
            step += 1
            bar.update(task, completed=step, info=f"G {np.mean([r['loss_G'] for r in recent[-50:]]):.3f} "
                                                  f"D {np.mean([r['loss_D'] for r in recent[-50:]]):.3f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                window = recent[-cfg.checkpoint_every:]
                append_log(log_file, {"step": step, **{k: float(np.mean([r[k] for r in window])) for k in window[0]},
                                      "seconds": round(time.time() - t0, 1)}, "step")
                save_stylegan2(out / "ema", m.G_ema, truncation_psi=cfg.truncation_psi,
                               extra={"training": {"step": step, "images_seen": step * cfg.batch_size,
                                                   "config_hash": cfg.hash(), "seed": cfg.seed}})
                save_tensors(state_file, m.state(step))  # last: the commit point
    return out / "ema"
