"""Supervised training of a `Segmenter` on image-mask arrays (Adam, cross-entropy with ignore)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..io import load_tensors, save_tensors
from ..progress import progress_bar
from ..rundir import STATE_FILE, model_state, restore_model_state
from ..schedules import cosine_to_zero, set_step, step_scheduler
from .model import Segmenter, SegmenterConfig, save_segmenter


@dataclass
class SegTrainConfig:
    """Step-based supervised training on in-memory arrays with exact masks (the embedded oracle,
    `train-oracle`): a fixed number of steps, cosine decay, flips, no validation.

    It stays apart from `train_deeplab.DeepLabTrainConfig`, the other segmenter trainer's config, on
    purpose: that one is epoch-based on streamed generated pairs (albumentations, DDP, best epoch on
    real images, `--real` mixing) and its field set is its resume hash, so taking this one's fields
    (steps, cosine, flip, checkpoint_every) would change the hash of every existing DeepLab run. They
    share batch size, learning rate and seed; both build the model from a `SegmenterConfig` (DeepLab's
    arch, encoder and input scale are flat fields there: they are train-deeplab options and in its hash)."""

    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    cosine: bool = True  # cosine decay to 0 over `steps`
    seed: int = 0
    flip: bool = True  # random horizontal flips
    checkpoint_every: int = 0  # with out_dir: save the training state every N steps; a rerun resumes there

    def hash(self, model: SegmenterConfig, data_key: str) -> str:
        """Resume key of a run in a folder (`rundir`): everything but the step count, so rerunning with
        more `steps` extends a run."""
        d = {**asdict(self), "model": asdict(model), "data": data_key}
        d.pop("steps"), d.pop("checkpoint_every")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=list).encode()).hexdigest()[:16]


def lr_factor(cfg: SegTrainConfig) -> Callable[[int], float]:
    """The learning-rate multiplier of each step: cosine decay to 0 over `steps`, or constant."""
    if cfg.cosine:
        return lambda step: cosine_to_zero(step, cfg.steps)
    return lambda step: 1.0


def flipped(images: np.ndarray, masks: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) images and (N, H, W) masks with the `chosen` (N,) ones mirrored left-right by albumentations'
    HorizontalFlip. The choice stays with the caller's generator seeded by (seed, step): the same draws the
    hand-written flips made, so a run keeps its bytes, resumed or not."""
    import albumentations as A  # imported here: the GPU machines' suite trains without augmentation
    mirror = A.HorizontalFlip(p=1.0)
    images, masks = images.copy(), masks.copy()
    for i in np.flatnonzero(chosen):
        out = mirror(image=images[i], mask=masks[i])
        images[i], masks[i] = out["image"], out["mask"]
    return images, masks


def _save_state(path: Path, model, opt, step: int, losses: list[float]) -> None:
    save_tensors(path, model_state(model, opt, step=step, losses=torch.tensor(losses, dtype=torch.float64)))


def _restore_state(path: Path, model, opt) -> tuple[int, list[float]]:
    state = load_tensors(path)
    restore_model_state(state, model, opt)
    return int(state["step"]), state["losses"].tolist()


def train_segmenter(model: Segmenter, images: np.ndarray, masks: np.ndarray, cfg: SegTrainConfig, *,
                    out_dir: str | Path | None = None, progress: bool = True,
                    evaluate: Callable[[Segmenter], float] | None = None, eval_every: int = 0) -> dict:
    """Train on (N, H, W, 3) uint8 images and (N, H, W) masks; returns a small log dict.

    Step s's batch and flips come from a generator seeded by (seed, s) and its learning rate from s,
    so a run resumed from its saved state (`checkpoint_every`) ends with the same weights."""
    torch.manual_seed(cfg.seed)
    device = next(model.parameters()).device  # train where the model is; batches are drawn on the CPU
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n = len(images)
    log: dict = {"loss": [], "eval": []}
    state_file = Path(out_dir) / STATE_FILE if out_dir is not None and cfg.checkpoint_every else None
    start = 0
    if state_file is not None and state_file.exists():
        start, log["loss"] = _restore_state(state_file, model, opt)
    schedule = step_scheduler(opt, lr_factor(cfg), base_lr=cfg.lr, step=start, base_in_groups=False)
    t0 = time.time()
    with progress_bar(progress) as bar:
        task = bar.add_task("train-segmenter", total=cfg.steps, completed=start, info="")
        for step in range(start, cfg.steps):
            model.train()
            rng = np.random.default_rng([cfg.seed, step])
            idx = rng.integers(0, n, cfg.batch_size)
            batch_images, batch_masks = images[idx], masks[idx]
            if cfg.flip:
                batch_images, batch_masks = flipped(batch_images, batch_masks, rng.random(cfg.batch_size) < 0.5)
            x = torch.from_numpy(batch_images).permute(0, 3, 1, 2)
            y = torch.from_numpy(batch_masks.astype(np.int64))
            set_step(schedule, step)
            loss = F.cross_entropy(model(x.to(device)), y.to(device), ignore_index=model.cfg.ignore_label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log["loss"].append(loss.item())
            bar.update(task, completed=step + 1, info=f"loss {np.mean(log['loss'][-50:]):.3f}")
            if evaluate and eval_every and (step + 1) % eval_every == 0:
                log["eval"].append({"step": step + 1, "score": evaluate(model)})
            if state_file is not None and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
                _save_state(state_file, model, opt, step + 1, log["loss"])
    log["seconds"] = round(time.time() - t0, 1)
    if out_dir is not None:
        save_segmenter(out_dir, model, {"training": {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
                                                     "seed": cfg.seed, "seconds": log["seconds"]}})
    return log
