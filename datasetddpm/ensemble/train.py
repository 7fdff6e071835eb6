"""Training the pixel ensemble with a global pixel shuffle, as in the reference code.

Every member sees all labelled pixels of all images in its own random order each epoch, batch 64,
Adam 1e-3, cross-entropy. Early stopping follows the reference: after `min_epochs` epochs, a member
stops once `patience` consecutive batches fail to beat its best batch loss. Pixels are gathered
from a `FeatureBank` batch by batch, so no full-resolution feature tensor is ever built.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..features import FeatureBank, valid_pixels
from ..progress import progress_bar
from .model import EnsembleConfig, PixelEnsemble


@dataclass
class EnsembleTrainConfig:
    members: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    max_epochs: int = 100
    min_epochs: int = 4  # the reference checks early stopping from epoch index 4 ("epoch > 3")
    patience: int = 50  # consecutive batches without a new best loss
    seed: int = 0
    max_steps: int | None = None  # stop after this many optimisation steps (benchmarks, smoke runs)


def train_ensemble(bank: FeatureBank, cfg: EnsembleConfig, train: EnsembleTrainConfig, *,
                   progress: bool = True) -> tuple[PixelEnsemble, dict]:
    """Train `cfg.members` MLPs on the labelled pixels of `bank`; returns the ensemble and a log."""
    torch.manual_seed(train.seed)
    device = bank.stacked[0].device  # train where the features are; initial weights are drawn on the CPU
    ensemble = PixelEnsemble(cfg, seed=train.seed).to(device)
    opt = torch.optim.Adam(ensemble.parameters(), lr=train.lr, foreach=True)
    masks = bank.mask_tensor.to(device)
    pixels = valid_pixels(masks, cfg.ignore_label)  # (P, 3)
    P, M, B = len(pixels), cfg.members, train.batch_size
    per_epoch = P // B  # drop the last partial batch: BatchNorm needs > 1 sample
    if per_epoch < 1:
        raise ValueError(f"only {P} labelled pixels; need at least {B}")
    active = torch.ones(M, dtype=torch.bool, device=device)
    best = torch.full((M,), float("inf"), device=device)
    stale = torch.zeros(M, dtype=torch.long, device=device)
    stopped_at = [None] * M
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    t0, iterations = time.time(), 0
    with progress_bar(progress) as bar:
        # One bar per epoch: the number of epochs is not known in advance (members stop early).
        task = bar.add_task("train-ensemble epoch 0", total=min(per_epoch, train.max_steps or per_epoch), info="")
        for epoch in range(train.max_epochs):
            bar.update(task, completed=0, description=f"train-ensemble epoch {epoch}")
            orders = torch.empty(M, P, dtype=torch.long)  # each member its own global shuffle
            for m in range(M):  # filled row by row: one permutation's temporary at a time, not M
                orders[m] = torch.from_numpy(np.random.default_rng([train.seed, m, epoch]).permutation(P))
            orders = orders.to(device)
            for it in range(per_epoch):
                idx = pixels[orders[:, it * B:(it + 1) * B].reshape(-1)]  # (M*B, 3)
                x = bank.gather(idx[:, 0], idx[:, 1], idx[:, 2]).view(M, B, -1)
                y = masks[idx[:, 0], idx[:, 1], idx[:, 2]].view(M, B)
                ensemble.train()
                logits = ensemble(x)
                losses = F.cross_entropy(logits.reshape(M * B, -1), y.reshape(-1), reduction="none",
                                         ignore_index=cfg.ignore_label).view(M, B).mean(1)
                opt.zero_grad(set_to_none=True)
                (losses * active).sum().backward()
                opt.step()
                iterations += 1
                if epoch >= train.min_epochs:
                    improved = losses.detach() < best
                    best = torch.where(improved, losses.detach(), best)
                    stale = torch.where(improved, torch.zeros_like(stale), stale + 1)
                    for m in (active & (stale > train.patience)).nonzero().flatten().tolist():
                        active[m] = False
                        stopped_at[m] = (epoch, it)
                        snapshots[m] = {k: v[m].clone() for k, v in ensemble.state_dict().items()}
                bar.update(task, advance=1, info=f"members training {int(active.sum())}/{M}, patience "
                                                 f"{int(stale[active].max()) if active.any() else 0}/{train.patience}"
                           if epoch >= train.min_epochs
                           else f"members training {int(active.sum())}/{M}")
                if not active.any() or iterations == train.max_steps:
                    break
            if not active.any() or iterations == train.max_steps:
                bar.update(task, info=f"stopped early at epoch {epoch}: every member's loss stopped improving"
                           if not active.any() else f"stopped at the step limit ({iterations} steps)")
                break
    # Members that stopped early keep the parameters they had when they stopped (Adam moments
    # would otherwise keep moving them).
    with torch.no_grad():
        state = ensemble.state_dict()
        for m, snap in snapshots.items():
            for k, v in snap.items():
                state[k][m] = v
    ensemble.eval()
    log = {"pixels": P, "iterations": iterations, "epochs": epoch + 1, "seconds": round(time.time() - t0, 2),
           "stopped_at": stopped_at}
    return ensemble, log
