"""Supervised training of a `Segmenter` on image-mask arrays (Adam, cross-entropy with ignore)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..progress import progress_bar
from .model import Segmenter, save_segmenter


@dataclass
class SegTrainConfig:
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    cosine: bool = True  # cosine decay to 0 over `steps`
    seed: int = 0
    flip: bool = True  # random horizontal flips


def train_segmenter(model: Segmenter, images: np.ndarray, masks: np.ndarray, cfg: SegTrainConfig, *,
                    out_dir: str | Path | None = None, progress: bool = True,
                    evaluate: Callable[[Segmenter], float] | None = None, eval_every: int = 0) -> dict:
    """Train on (N, H, W, 3) uint8 images and (N, H, W) masks; returns a small log dict."""
    torch.manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n = len(images)
    log: dict = {"loss": [], "eval": []}
    t0 = time.time()
    with progress_bar(progress) as bar:
        task = bar.add_task("train-segmenter", total=cfg.steps, info="")
        for step in range(cfg.steps):
            model.train()
            rng = np.random.default_rng([cfg.seed, step])
            idx = rng.integers(0, n, cfg.batch_size)
            x = torch.from_numpy(images[idx]).permute(0, 3, 1, 2)
            y = torch.from_numpy(masks[idx].astype(np.int64))
            if cfg.flip:
                flip = torch.from_numpy(rng.random(cfg.batch_size) < 0.5)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                y = torch.where(flip[:, None, None], y.flip(-1), y)
            if cfg.cosine:
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
            loss = F.cross_entropy(model(x), y, ignore_index=model.cfg.ignore_label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log["loss"].append(loss.item())
            bar.update(task, completed=step + 1, info=f"loss {np.mean(log['loss'][-50:]):.3f}")
            if evaluate and eval_every and (step + 1) % eval_every == 0:
                log["eval"].append({"step": step + 1, "score": evaluate(model)})
    log["seconds"] = round(time.time() - t0, 1)
    if out_dir is not None:
        save_segmenter(out_dir, model, {"training": {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
                                                     "seed": cfg.seed, "seconds": log["seconds"]}})
    return log
