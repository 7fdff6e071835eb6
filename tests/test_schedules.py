"""One learning-rate schedule helper (datasetddpm.schedules, LambdaLR from the step count) for train-ddpm,
train-oracle and train-deeplab: the same rates, to the last bit, as the formulas each trainer wrote inline
before (copied below as the fixed reference), at every step and from any resumed step."""

import math

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from datasetddpm.generators.train_ddpm import DDPMTrainConfig, lr_factor
from datasetddpm.io import load_tensors, tensor_json
from datasetddpm.schedules import set_step, step_scheduler
from datasetddpm.segmenters import train as oracle
from datasetddpm.segmenters import train_deeplab as td


# --- the formulas as the trainers wrote them before the helper (reference; do not "simplify") ---
def old_ddpm_factor(cfg, step):
    warm = min(1.0, (step + 1) / max(1, cfg.warmup))
    if cfg.lr_schedule == "constant" or step < cfg.warmup:
        return warm
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.schedule_steps - cfg.warmup))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def old_oracle_lr(cfg, step):
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)) if cfg.cosine else cfg.lr


def old_deeplab_lr(cfg, step, total_steps):
    done = min(step / max(total_steps, 1), 1.0)
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + float(np.cos(np.pi * done)))
    if cfg.lr_schedule == "poly":
        return cfg.lr * (1.0 - done) ** 0.9
    return cfg.lr


def _optimizer(lr):
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)


DDPM_SETTINGS = [dict(), dict(warmup=0), dict(lr=3e-4, warmup=50, lr_schedule="cosine", schedule_steps=700),
                 dict(lr=1e-4, warmup=10, lr_schedule="cosine", schedule_steps=333, min_lr_ratio=0.0)]


@pytest.mark.parametrize("settings", DDPM_SETTINGS)
def test_ddpm_rates_equal_the_old_formula_at_every_step_and_after_a_resume(settings):
    cfg = DDPMTrainConfig(**settings)
    steps = 800
    expected = [cfg.lr * old_ddpm_factor(cfg, s) for s in range(steps)]
    for start in (0, 1, 137, 499):  # train-ddpm's convention: built at the step to run, stepped after each
        opt = _optimizer(cfg.lr)
        opt.param_groups[0]["lr"] = 123.0  # a restored optimiser holds the last rate, not the base rate
        scheduler = step_scheduler(opt, lambda s: lr_factor(cfg, s), base_lr=cfg.lr, step=start)
        seen = []
        for _ in range(start, steps):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            scheduler.step()
        assert seen == expected[start:]  # exact equality, not approx
        assert opt.param_groups[0]["initial_lr"] == cfg.lr  # train-ddpm's states held it before: still there


@pytest.mark.parametrize("settings", [dict(), dict(steps=37, lr=3e-3), dict(cosine=False), dict(steps=2000)])
def test_oracle_rates_equal_the_old_formula(settings):
    cfg = oracle.SegTrainConfig(**settings)
    for start in (0, 5, cfg.steps // 2):
        opt = _optimizer(cfg.lr)
        scheduler = step_scheduler(opt, oracle.lr_factor(cfg), base_lr=cfg.lr, step=start, base_in_groups=False)
        seen = []
        for step in range(start, cfg.steps):
            set_step(scheduler, step)  # train-oracle's convention: set before the step
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
        assert seen == [old_oracle_lr(cfg, s) for s in range(start, cfg.steps)]
        assert "initial_lr" not in opt.param_groups[0]  # its saved states keep their keys


@pytest.mark.parametrize("schedule", ["constant", "cosine", "poly"])
@pytest.mark.parametrize("epochs,per_epoch", [(20, 126), (3, 7), (24, 250)])
def test_deeplab_rates_equal_the_old_formula(schedule, epochs, per_epoch):
    cfg = td.DeepLabTrainConfig(lr_schedule=schedule, epochs=epochs)
    total = epochs * per_epoch
    for start_epoch in (0, 1, epochs - 1):
        opt = _optimizer(cfg.lr)
        scheduler = td.lr_scheduler(opt, cfg, per_epoch, start_epoch)
        seen = []
        for step in range(start_epoch * per_epoch, total):
            set_step(scheduler, step)
            seen.append(opt.param_groups[0]["lr"])
        assert seen == [old_deeplab_lr(cfg, s, total) for s in range(start_epoch * per_epoch, total)]
        assert seen == [td.lr_at(cfg, s, total) for s in range(start_epoch * per_epoch, total)]
        assert "initial_lr" not in opt.param_groups[0]


@pytest.fixture()
def rates_of_every_step():
    """The rate each optimiser step actually ran with, recorded by a global pre-step hook."""
    seen = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    yield seen
    handle.remove()


def _arrays(n=12, side=32, classes=3):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8),
            rng.integers(0, classes, (n, side, side)).astype(np.int64))


@pytest.mark.parametrize("schedule", ["cosine", "poly"])
def test_train_deeplab_steps_at_the_old_rates_and_saves_the_old_keys(schedule, tmp_path, rates_of_every_step):
    images, masks = _arrays()
    cfg = td.DeepLabTrainConfig(epochs=2, batch_size=4, lr_schedule=schedule, loader_workers=0, augment=False)
    td.train_deeplab([(images[i], masks[i]) for i in range(12)], images[:4], masks[:4], tmp_path, cfg,
                     num_classes=3, progress=False)
    total = 2 * (12 // 4)
    assert rates_of_every_step == [old_deeplab_lr(cfg, s, total) for s in range(total)]
    groups = tensor_json(load_tensors(tmp_path / "train_state.safetensors")["opt.meta"])["param_groups"]
    assert "initial_lr" not in groups[0] and groups[0]["lr"] == old_deeplab_lr(cfg, total - 1, total)


def test_train_oracle_steps_at_the_old_rates_and_resumes_them(tmp_path, rates_of_every_step):
    from datasetddpm.segmenters.model import SegmenterConfig, create_segmenter
    images, masks = _arrays()
    cfg = oracle.SegTrainConfig(steps=6, batch_size=4, checkpoint_every=2)
    torch.manual_seed(0)
    oracle.train_segmenter(create_segmenter(SegmenterConfig(num_classes=3)), images, masks, cfg,
                           out_dir=tmp_path, progress=False)
    assert rates_of_every_step == [old_oracle_lr(cfg, s) for s in range(6)]
    groups = tensor_json(load_tensors(tmp_path / "train_state.safetensors")["opt.meta"])["param_groups"]
    assert "initial_lr" not in groups[0]
    rates_of_every_step.clear()  # a rerun with more steps resumes at step 6 with the rates of an 8-step run
    longer = oracle.SegTrainConfig(steps=8, batch_size=4, checkpoint_every=2)
    oracle.train_segmenter(create_segmenter(SegmenterConfig(num_classes=3)), images, masks, longer,
                           out_dir=tmp_path, progress=False)
    assert rates_of_every_step == [old_oracle_lr(longer, s) for s in (6, 7)]


def test_train_ddpm_steps_at_the_old_rates_after_a_resume(tmp_path, rates_of_every_step):
    from datasetddpm.generators.train_ddpm import train_ddpm
    cfg = DDPMTrainConfig(pool_size=12, steps=4, batch_size=4, checkpoint_every=2, warmup=2, lr_schedule="cosine",
                          schedule_steps=5, unet=dict(block_out_channels=[8, 16, 16], norm_num_groups=4))
    train_ddpm(tmp_path, cfg, progress=False, log=lambda *_: None)
    longer = DDPMTrainConfig(**{**cfg.__dict__, "steps": 7})
    train_ddpm(tmp_path, longer, progress=False, log=lambda *_: None)  # resumes at step 4, past the decay's end
    assert rates_of_every_step == [cfg.lr * old_ddpm_factor(cfg, s) for s in range(7)]
