"""Train an unconditional DDPM (diffusers UNet2DModel + DDPMScheduler) with EMA, resumably.

Determinism without saved RNG state: the batch, the noise and the timesteps of step s are drawn
from generators seeded by (seed, s), so a run resumed from its last checkpoint continues exactly
as an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel

from ..data.images import list_images, read_image
from ..data.procedural import render
from ..errors import DatasetDDPMError, InputError
from ..io import load_optimizer_tensors, load_tensors, optimizer_tensors, read_json, save_tensors, write_json
from ..progress import progress_bar
from .diffusion import save_checkpoint

PROCEDURAL_POOL_SEED0 = 3_000_000  # unlabelled seeds; disjoint from the labelled splits


@dataclass
class DDPMTrainConfig:
    data: str = "embedded"  # "embedded" (procedural pool) or an image folder
    pool_size: int = 10000  # images rendered for "embedded"
    resolution: int = 32
    unet: dict = field(default_factory=dict)  # UNet2DModel kwargs; empty = the embedded UNet
    scheduler: dict = field(default_factory=dict)  # DDPMScheduler kwargs; empty = linear 1000
    steps: int = 4000
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 250

    def resolved(self) -> "DDPMTrainConfig":
        from ..presets import EMBEDDED_SCHEDULER, EMBEDDED_UNET
        unet = dict(EMBEDDED_UNET, **self.unet, sample_size=self.resolution)
        return DDPMTrainConfig(**{**asdict(self), "unet": unet, "scheduler": dict(EMBEDDED_SCHEDULER, **self.scheduler)})

    def hash(self) -> str:
        d = asdict(self)
        d.pop("steps")  # extending a run is a resume, not a different config
        d.pop("checkpoint_every")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=list).encode()).hexdigest()[:16]


def _load_pool(cfg: DDPMTrainConfig) -> np.ndarray:
    """(N, H, W, 3) uint8 training images."""
    if cfg.data == "embedded":
        return np.stack([render(PROCEDURAL_POOL_SEED0 + i, cfg.resolution)[0] for i in range(cfg.pool_size)])
    paths = list_images(cfg.data)
    if not paths:
        raise InputError(cfg.data, "no .png/.jpg images found")
    images = []
    for p in paths:
        im = read_image(p)
        if im.shape[:2] != (cfg.resolution, cfg.resolution):
            raise InputError(p, f"image is {im.shape[1]}x{im.shape[0]}, expected {cfg.resolution}x{cfg.resolution} (--resolution)")
        images.append(im)
    return np.stack(images)


def _batch(pool: np.ndarray, cfg: DDPMTrainConfig, step: int) -> torch.Tensor:
    per_epoch = max(1, len(pool) // cfg.batch_size)
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(pool))
    idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
    if len(idx) < cfg.batch_size:  # tiny pools: wrap around
        idx = order[np.arange(k * cfg.batch_size, (k + 1) * cfg.batch_size) % len(pool)]
    x = torch.from_numpy(pool[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    flip = torch.from_numpy(np.random.default_rng([cfg.seed, epoch, k, 1]).random(len(idx)) < 0.5)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _state(unet, ema, opt, step) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v for k, v in unet.state_dict().items()}
    state.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    state.update(optimizer_tensors(opt))
    state["step"] = torch.tensor(step)
    return state


def _restore(state, unet, ema, opt) -> int:
    unet.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("ema.")})
    load_optimizer_tensors(opt, state)
    return int(state["step"])


def train_ddpm(out_dir: str | Path, cfg: DDPMTrainConfig, *, overwrite: bool = False, progress: bool = True,
               log=print) -> Path:
    """Train (or resume) into `out_dir`; returns the directory holding the EMA checkpoint."""
    out = Path(out_dir)
    cfg = cfg.resolved()
    run_file = out / "train_config.json"
    if run_file.exists() and not overwrite:
        previous = read_json(run_file)
        if previous.get("hash") != cfg.hash():
            raise DatasetDDPMError(f"{out}: holds a run with a different config (hash {previous.get('hash')} != "
                                   f"{cfg.hash()}); use --overwrite or another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(run_file, {"hash": cfg.hash(), "config": asdict(cfg)})

    torch.manual_seed(cfg.seed)
    unet = UNet2DModel(**cfg.unet)
    ema = UNet2DModel(**cfg.unet).requires_grad_(False)
    ema.load_state_dict(unet.state_dict())
    scheduler = DDPMScheduler(**cfg.scheduler)
    opt = torch.optim.Adam(unet.parameters(), lr=cfg.lr)
    step = 0
    state_file = out / "train_state.safetensors"
    if state_file.exists() and not overwrite:
        step = _restore(load_tensors(state_file), unet, ema, opt)
        log(f"resuming {out} at step {step}")
    pool = _load_pool(cfg)
    alphas = scheduler.alphas_cumprod
    log_file = out / "train_log.jsonl"
    losses: list[float] = []
    t0 = time.time()
    with progress_bar(progress) as bar:
        task = bar.add_task("train-ddpm", total=cfg.steps, completed=step, info="")
        while step < cfg.steps:
            unet.train()
            x0 = _batch(pool, cfg, step)
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            noise = torch.randn(x0.shape, generator=g)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=g)
            a = alphas[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            loss = torch.nn.functional.mse_loss(unet(xt, t).sample, noise)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), unet.parameters()):
                    pe.lerp_(p, 1 - decay)
            step += 1
            losses.append(loss.item())
            bar.update(task, completed=step, info=f"loss {np.mean(losses[-50:]):.4f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_tensors(state_file, _state(unet, ema, opt, step))
                save_checkpoint(out / "ema", ema, scheduler.config,
                                {"training": {"step": step, "config_hash": cfg.hash(), "seed": cfg.seed}})
                with open(log_file, "a") as f:
                    f.write(json.dumps({"step": step, "loss": float(np.mean(losses[-cfg.checkpoint_every:])),
                                        "seconds": round(time.time() - t0, 1)}) + "\n")
    return out / "ema"
