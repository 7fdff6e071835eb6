"""Train an unconditional DDPM (diffusers UNet2DModel + DDPMScheduler) with EMA, resumably.

Determinism without saved RNG state: the batch, the noise and the timesteps of step s are drawn
from generators seeded by (seed, s), so a run resumed from its last checkpoint continues exactly
as an uninterrupted run would. EMA is diffusers' `EMAModel`, q(x_t | x_0) is `DDPMScheduler.add_noise`,
the learning-rate schedule a `torch.optim.lr_scheduler.LambdaLR`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel

from ..data.images import list_images, read_image
from ..data.procedural import PROCEDURAL_POOL_SEED0, render
from ..errors import InputError, OptionError
from ..hooks import Figures, current_figures
from ..io import (load_optimizer_tensors, load_tensors, optimizer_tensors, read_jsonl, save_tensors, write_json)
from ..progress import progress_bar
from ..rundir import append_log, training_dir
from ..schedules import step_scheduler, warmup_then_cosine
from .diffusion import save_checkpoint



@dataclass
class DDPMTrainConfig:
    data: str = "embedded"  # "embedded" (procedural pool) or an image folder
    pool_size: int = 10000  # images rendered for "embedded"
    resolution: int = 32
    unet: dict = field(default_factory=dict)  # UNet2DModel kwargs; empty = the embedded UNet
    scheduler: dict = field(default_factory=dict)  # DDPMScheduler kwargs; empty = linear 1000
    attention_resolutions: tuple[int, ...] = ()  # feature-map sides with self-attention (ADM style), e.g. (8,)
    steps: int = 4000
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 200
    lr_schedule: str = "constant"  # "constant" after warm-up, or "cosine" down to lr * min_lr_ratio
    schedule_steps: int = 0  # length of the cosine decay (the planned run); past it the lr stays at the floor
    min_lr_ratio: float = 0.1
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 250
    init_from: str = ""  # a diffusion model (--model syntax) whose weights start the model and the EMA
    init_digest: str = ""  # sha256 of those weights (set by `with_init`): a resume checks it, not the path

    def resolved(self) -> "DDPMTrainConfig":
        from .embedded import EMBEDDED_SCHEDULER, EMBEDDED_UNET
        unet = dict(EMBEDDED_UNET, **{**self.unet, "sample_size": self.resolution})
        levels = len(unet["block_out_channels"])
        for key, block in (("down_block_types", "DownBlock2D"), ("up_block_types", "UpBlock2D")):
            if key not in self.unet and len(unet[key]) != levels:  # --channels with another number of levels
                unet[key] = (block,) * levels
        if self.attention_resolutions:
            unet.update(_attention_blocks(len(unet["block_out_channels"]), self.resolution,
                                          self.attention_resolutions))
        return DDPMTrainConfig(**{**asdict(self), "unet": unet, "attention_resolutions": tuple(self.attention_resolutions),
                                  "scheduler": dict(EMBEDDED_SCHEDULER, **self.scheduler)})

    def validate(self) -> None:
        """Every option checked before anything is written."""
        checks = [("--steps", self.steps >= 1, f"must be >= 1, got {self.steps}"),
                  ("--batch-size", self.batch_size >= 1, f"must be >= 1, got {self.batch_size}"),
                  ("--lr", self.lr > 0, f"must be > 0, got {self.lr}"),
                  ("--warmup", self.warmup >= 0, f"must be >= 0, got {self.warmup}"),
                  ("--checkpoint-every", self.checkpoint_every >= 1, f"must be >= 1, got {self.checkpoint_every}"),
                  ("--pool-size", self.pool_size >= 1, f"must be >= 1, got {self.pool_size}"),
                  ("--resolution", self.resolution >= 8 and self.resolution % 8 == 0,
                   f"must be a multiple of 8 (>= 8), got {self.resolution}"),
                  ("--ema-decay", 0 <= self.ema_decay < 1, f"must be in [0, 1), got {self.ema_decay}"),
                  ("--lr-schedule", self.lr_schedule in LR_SCHEDULES,
                   f"must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"),
                  ("--schedule-steps", self.lr_schedule != "cosine" or self.schedule_steps > self.warmup,
                   f"a cosine schedule needs --schedule-steps > --warmup ({self.warmup}), got {self.schedule_steps}"),
                  ("--min-lr-ratio", 0 <= self.min_lr_ratio <= 1, f"must be in [0, 1], got {self.min_lr_ratio}")]
        for option, ok, problem in checks:
            if not ok:
                raise OptionError(option, problem)
        groups = self.unet.get("norm_num_groups", 32)
        if any(c % groups for c in self.unet["block_out_channels"]):
            raise OptionError("--channels", f"each width must be a multiple of {groups} (the UNet's GroupNorm groups), "
                                            f"got {list(self.unet['block_out_channels'])}")
        levels = [self.resolution >> i for i in range(len(self.unet["block_out_channels"]))]
        bad = [r for r in self.attention_resolutions if r not in levels]
        if bad:
            raise OptionError("--attention-res", f"{bad} are not feature-map sides of this UNet ({levels})")

    def hash(self) -> str:
        d = asdict(self)
        d.pop("steps")  # extending a run is a resume, not a different config
        d.pop("checkpoint_every")
        if not d["attention_resolutions"]:
            d.pop("attention_resolutions")  # runs made before the option existed keep their hash
        d.pop("init_from")  # the weights' digest names the start; the folder may move between resumes
        for name, default in (("lr_schedule", "constant"), ("schedule_steps", 0), ("min_lr_ratio", 0.1),
                              ("init_digest", "")):
            if d[name] == default:
                d.pop(name)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=list).encode()).hexdigest()[:16]


LR_SCHEDULES = ("constant", "cosine")


def with_init(cfg: DDPMTrainConfig) -> tuple[DDPMTrainConfig, dict[str, torch.Tensor] | None]:
    """The config with the UNet and noise schedule of `cfg.init_from` (and its weights' digest), and those
    weights; `(cfg, None)` without --init-from. Fine-tuning keeps the starting model's shape and schedule, so
    options that would change them are refused rather than silently ignored."""
    if not cfg.init_from:
        return cfg, None
    from .diffusion import DiffusionGenerator, unet_config_dict
    from .loading import load_generator
    if cfg.unet.get("block_out_channels") or cfg.attention_resolutions:
        option = "--channels" if cfg.unet.get("block_out_channels") else "--attention-res"
        raise OptionError(option, f"the UNet's shape comes from --init-from {cfg.init_from}; drop {option}")
    gen = load_generator(cfg.init_from)
    if not isinstance(gen, DiffusionGenerator):
        raise OptionError("--init-from", f"{cfg.init_from} is not a diffusion model")
    unet = unet_config_dict(gen.unet)
    if unet.get("sample_size") != cfg.resolution:
        raise OptionError("--resolution", f"--init-from {cfg.init_from} is a {unet.get('sample_size')} px model, "
                                          f"got --resolution {cfg.resolution}")
    # The training loss here is epsilon MSE on the image channels: a model trained otherwise would be pulled
    # toward a different target, silently, so it is refused.
    if unet.get("out_channels") != unet.get("in_channels"):
        raise OptionError("--init-from", f"{cfg.init_from} outputs {unet.get('out_channels')} channels for "
                                         f"{unet.get('in_channels')} in (a learned variance?); train-ddpm fine-tunes "
                                         f"epsilon-only models")
    prediction = dict(gen.scheduler_config).get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise OptionError("--init-from", f"{cfg.init_from} predicts {prediction!r}; train-ddpm fine-tunes "
                                         f"epsilon-prediction models")
    state = gen.unet.state_dict()  # detached already; the generator itself is dropped here
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].float().contiguous().numpy().tobytes())
    known = inspect.signature(DDPMScheduler.__init__).parameters  # a folder may carry another scheduler's keys
    scheduler = {k: v for k, v in dict(gen.scheduler_config).items() if k in known}
    return DDPMTrainConfig(**{**asdict(cfg), "unet": unet, "scheduler": scheduler,
                              "init_digest": h.hexdigest()[:16]}), state


def _attention_blocks(levels: int, resolution: int, attention: tuple[int, ...]) -> dict:
    """UNet2DModel block types with self-attention at the levels whose side is in `attention`."""
    sides = [resolution >> i for i in range(levels)]
    down = tuple("AttnDownBlock2D" if s in attention else "DownBlock2D" for s in sides)
    return {"down_block_types": down, "up_block_types": tuple(b.replace("Down", "Up") for b in reversed(down))}


def lr_factor(cfg: DDPMTrainConfig, step: int) -> float:
    """Learning-rate multiplier at optimisation step `step` (0-based): linear warm-up, then constant or cosine."""
    return warmup_then_cosine(step, warmup=cfg.warmup, cosine=cfg.lr_schedule == "cosine",
                              decay_steps=cfg.schedule_steps, floor=cfg.min_lr_ratio)


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


def _state(unet, ema: EMAModel, opt, step) -> dict[str, torch.Tensor]:
    names = [n for n, _ in unet.named_parameters()]
    state = {f"model.{k}": v for k, v in unet.state_dict().items()}
    state.update({f"ema.{n}": p for n, p in zip(names, ema.shadow_params)})
    state.update(optimizer_tensors(opt))
    state["step"] = torch.tensor(step)
    state["ema_step"] = torch.tensor(ema.optimization_step)
    return state


def _restore(state, unet, ema: EMAModel, opt, device) -> int:
    unet.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    names = [n for n, _ in unet.named_parameters()]
    ema_state = ema.state_dict()
    ema_state["shadow_params"] = [state[f"ema.{n}"].to(device) for n in names]
    ema_state["optimization_step"] = int(state["ema_step"])
    ema.load_state_dict(ema_state)
    load_optimizer_tensors(opt, state)
    return int(state["step"])


def train_ddpm(out_dir: str | Path, cfg: DDPMTrainConfig, *, overwrite: bool = False, progress: bool = True,
               device: str | torch.device = "cpu", log=print, figures: Figures | None = None) -> Path:
    """Train (or resume) into `out_dir`; returns the directory holding the EMA checkpoint. `figures` draws
    the loss and learning-rate curves at each checkpoint (default: the command's, `hooks.current_figures`).

    The batch, noise and timesteps of step s are drawn on the CPU from generators seeded by (seed, s), so a
    resumed run continues exactly as an uninterrupted one would, and a GPU run sees the same data."""
    out = Path(out_dir)
    cfg, init = with_init(cfg)
    cfg = cfg.resolved()
    cfg.validate()
    device = torch.device(device)
    pool = _load_pool(cfg)  # a bad image folder is refused before anything is written
    with training_dir(out, cfg.hash(), overwrite=overwrite, subdirs=("ema",)):
        return _train(out, cfg, pool, init, overwrite=overwrite, progress=progress, device=device, log=log,
                      figures=figures or current_figures())


def _sampling_config(cfg: DDPMTrainConfig, scheduler_config) -> dict:
    """The scheduler config a trained model is saved with. Training never reads the timestep spacing;
    sampling does: unless the run's scheduler names one (a fine-tuned model keeps its own), DDIM and
    DPM-Solver++ start at t = T - 1 ("trailing"), which measured better than diffusers' "leading"
    default on the embedded model's samples (its TRAINING.md)."""
    config = dict(scheduler_config)
    if "timestep_spacing" not in cfg.scheduler:
        config["timestep_spacing"] = "trailing"
    return config


def _start_unet(cfg: DDPMTrainConfig, init: dict[str, torch.Tensor] | None, device: torch.device) -> UNet2DModel:
    """The UNet at step 0: seeded random weights, or (fine-tuning) the given ones, which the EMA then starts from."""
    torch.manual_seed(cfg.seed)
    unet = UNet2DModel(**cfg.unet)
    if init is not None:
        unet.load_state_dict(init)
    return unet.to(device)


def _train(out: Path, cfg: DDPMTrainConfig, pool: np.ndarray, init: dict[str, torch.Tensor] | None, *,
           overwrite: bool, progress: bool, device: torch.device, log, figures: Figures) -> Path:
    state_file = out / "train_state.safetensors"
    unet = _start_unet(cfg, init, device)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay)
    scheduler = DDPMScheduler(**cfg.scheduler)
    opt = torch.optim.Adam(unet.parameters(), lr=cfg.lr)
    step = 0
    if state_file.exists() and not overwrite:
        step = _restore(load_tensors(state_file), unet, ema, opt, device)
        log(f"resuming {out} at step {step}")
    elif overwrite and out.exists():
        for stale in (state_file, out / "train_log.jsonl"):
            stale.unlink(missing_ok=True)
    lr_sched = step_scheduler(opt, lambda s: lr_factor(cfg, s), base_lr=cfg.lr, step=step)
    write_json(out / "train_config.json", {"hash": cfg.hash(), "config": asdict(cfg)})
    ema_unet = UNet2DModel(**cfg.unet).requires_grad_(False)
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
            x0, noise, t = x0.to(device), noise.to(device), t.to(device)
            xt = scheduler.add_noise(x0, noise, t)
            loss = torch.nn.functional.mse_loss(unet(xt, t).sample, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            lr_sched.step()
            ema.step(unet.parameters())
            step += 1
            losses.append(loss.item())
            bar.update(task, completed=step, info=f"loss {np.mean(losses[-50:]):.4f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                # The state is written last: it is the commit point. A kill before it redoes these steps
                # from the previous state, and the log line and EMA weights are rewritten the same.
                append_log(log_file, {"step": step, "loss": float(np.mean(losses[-cfg.checkpoint_every:])),
                                      "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 1)}, "step")
                figures.training_curves(read_jsonl(log_file), out / "training_curves.png",
                                        f"train-ddpm: {Path(cfg.data).name}, batch {cfg.batch_size}")
                ema.copy_to(ema_unet.parameters())
                save_checkpoint(out / "ema", ema_unet, _sampling_config(cfg, scheduler.config),
                                {"training": {"step": step, "config_hash": cfg.hash(), "seed": cfg.seed}})
                save_tensors(state_file, _state(unet, ema, opt, step))
    return out / "ema"
