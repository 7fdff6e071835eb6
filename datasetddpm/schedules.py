"""Learning-rate schedules of the trainers: `torch.optim.lr_scheduler.LambdaLR` driven by the step count.

A rate is base_lr x factor(step), with factor a pure function of the optimisation step, so a resumed run
sets exactly the rates of an uninterrupted one with no scheduler state in its saved training state: the
scheduler is rebuilt from the step count (`step_scheduler`). The shapes below keep each trainer's
arithmetic to the last bit (they were written inline before, and the runs made then must resume with
the same rates): train-ddpm's warm-up then constant or cosine to a floor, train-oracle's cosine to 0,
train-deeplab's constant / cosine / poly over the whole run. Foundation module: imports torch only.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_then_cosine(step: int, *, warmup: int, cosine: bool, decay_steps: int, floor: float) -> float:
    """train-ddpm: linear warm-up over `warmup` steps, then constant, or (`cosine`) a cosine from 1 down to
    `floor` by step `decay_steps`, where it stays."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    if not cosine or step < warmup:
        return warm
    progress = min(1.0, (step - warmup) / max(1, decay_steps - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def cosine_to_zero(step: int, total: int) -> float:
    """train-oracle: a cosine from 1 at step 0 to 0 at step `total` (its angle is pi x step / total)."""
    return 0.5 * (1 + math.cos(math.pi * step / total))


DECAYS = ("constant", "cosine", "poly")


def decay_over_run(kind: str, step: int, total: int) -> float:
    """train-deeplab: constant, or a cosine (to 0 at the last step) or DeepLab's poly decay (power 0.9) over
    the fraction of the run done, min(step / total, 1)."""
    done = min(step / max(total, 1), 1.0)
    if kind == "cosine":
        return 0.5 * (1.0 + float(np.cos(np.pi * done)))
    if kind == "poly":
        return (1.0 - done) ** 0.9
    return 1.0


def step_scheduler(opt: torch.optim.Optimizer, factor: Callable[[int], float], *, base_lr: float, step: int,
                   base_in_groups: bool = True) -> LambdaLR:
    """A LambdaLR setting every group's rate to base_lr x factor(s), already at step `step` (the optimiser's
    rate is factor(step)'s now). Call `.step()` after each optimisation step, or `set_step` before one.

    `base_in_groups` False takes torch's `initial_lr` back out of the param groups: the training states of
    trainers that saved their optimiser without a scheduler keep their bytes (the scheduler holds the base
    rate itself, and never needs it there again, being rebuilt from the step)."""
    had_base = ["initial_lr" in group for group in opt.param_groups]
    for group in opt.param_groups:
        group["initial_lr"] = base_lr  # not the current group rate: a restored optimiser holds a decayed one
    scheduler = LambdaLR(opt, factor)
    set_step(scheduler, step)
    if not base_in_groups:
        for group, had in zip(opt.param_groups, had_base):
            if not had:
                del group["initial_lr"]
    return scheduler


def set_step(scheduler: LambdaLR, step: int) -> None:
    """Move `scheduler` to step `step`: the optimiser's rate becomes base_lr x factor(step)."""
    with warnings.catch_warnings():  # torch warns of a step() before optimizer.step(): here it is a move
        warnings.simplefilter("ignore", UserWarning)
        scheduler.last_epoch = step - 1
        scheduler.step()
