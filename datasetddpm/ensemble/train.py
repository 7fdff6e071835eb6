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

from ..errors import DatasetDDPMError
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


class _EarlyStopping:
    """The reference's rule per member: from epoch `min_epochs` on, a member stops once `patience`
    consecutive batches fail to beat its best loss; it keeps the parameters it had then."""

    def __init__(self, members: int, train: EnsembleTrainConfig, device):
        self.train = train
        self.active = torch.ones(members, dtype=torch.bool, device=device)
        self.best = torch.full((members,), float("inf"), device=device)
        self.stale = torch.zeros(members, dtype=torch.long, device=device)
        self.stopped_at: list = [None] * members
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def update(self, epoch: int, it: int, losses: torch.Tensor, ensemble: PixelEnsemble) -> None:
        if epoch < self.train.min_epochs:
            return
        improved = losses < self.best
        self.best = torch.where(improved, losses, self.best)
        self.stale = torch.where(improved, torch.zeros_like(self.stale), self.stale + 1)
        for m in (self.active & (self.stale > self.train.patience)).nonzero().flatten().tolist():
            self.active[m] = False
            self.stopped_at[m] = (epoch, it)
            self.snapshots[m] = {k: v[m].clone() for k, v in ensemble.state_dict().items()}

    def status(self, epoch: int) -> str:
        text = f"members training {int(self.active.sum())}/{len(self.active)}"
        if epoch >= self.train.min_epochs:
            patience = int(self.stale[self.active].max()) if self.active.any() else 0
            text += f", patience {patience}/{self.train.patience}"
        return text


def _member_orders(seed: int, members: int, pixels: int, epoch: int, device) -> torch.Tensor:
    """(M, P): each member its own global shuffle of the pixels, filled row by row (one permutation's
    temporary at a time, not M)."""
    orders = torch.empty(members, pixels, dtype=torch.long)
    for m in range(members):
        orders[m] = torch.from_numpy(np.random.default_rng([seed, m, epoch]).permutation(pixels))
    return orders.to(device)


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
        raise DatasetDDPMError(f"only {P} labelled pixels (not the ignore label); the ensemble needs at least {B}")
    stopping = _EarlyStopping(M, train, device)
    t0, iterations = time.time(), 0
    epoch_losses: list[float] = []  # mean batch loss of the members still training, per epoch (the curve)
    with progress_bar(progress) as bar:
        # One bar per epoch: the number of epochs is not known in advance (members stop early).
        task = bar.add_task("train-ensemble epoch 0", total=min(per_epoch, train.max_steps or per_epoch), info="")
        for epoch in range(train.max_epochs):
            bar.update(task, completed=0, description=f"train-ensemble epoch {epoch}")
            orders = _member_orders(train.seed, M, P, epoch, device)
            loss_sum = torch.zeros((), device=device)  # summed on the device: one sync per epoch, not per batch
            for it in range(per_epoch):
                idx = pixels[orders[:, it * B:(it + 1) * B].reshape(-1)]  # (M*B, 3)
                x = bank.gather(idx[:, 0], idx[:, 1], idx[:, 2]).view(M, B, -1)
                y = masks[idx[:, 0], idx[:, 1], idx[:, 2]].view(M, B)
                ensemble.train()
                losses = F.cross_entropy(ensemble(x).reshape(M * B, -1), y.reshape(-1), reduction="none",
                                         ignore_index=cfg.ignore_label).view(M, B).mean(1)
                opt.zero_grad(set_to_none=True)
                (losses * stopping.active).sum().backward()
                opt.step()
                loss_sum += (losses.detach() * stopping.active).sum() / stopping.active.sum()
                iterations += 1
                stopping.update(epoch, it, losses.detach(), ensemble)
                bar.update(task, advance=1, info=stopping.status(epoch))
                if not stopping.active.any() or iterations == train.max_steps:
                    break
            epoch_losses.append(round(float(loss_sum) / (it + 1), 6))
            if not stopping.active.any() or iterations == train.max_steps:
                bar.update(task, info=f"stopped early at epoch {epoch}: every member's loss stopped improving"
                           if not stopping.active.any() else f"stopped at the step limit ({iterations} steps)")
                break
    stopped_at, snapshots = stopping.stopped_at, stopping.snapshots
    # Members that stopped early keep the parameters they had when they stopped (Adam moments
    # would otherwise keep moving them).
    with torch.no_grad():
        state = ensemble.state_dict()
        for m, snap in snapshots.items():
            for k, v in snap.items():
                state[k][m] = v
    ensemble.eval()
    log = {"pixels": P, "iterations": iterations, "epochs": epoch + 1, "seconds": round(time.time() - t0, 2),
           "stopped_at": stopped_at, "loss_per_epoch": epoch_losses}
    return ensemble, log
