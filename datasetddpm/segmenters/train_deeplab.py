"""Training DeepLabV3 on generated pairs: Adam (constant rate, or a cosine / poly decay computed from the
step), batch 8, epochs, albumentations, best epoch on real images.

Pairs stream from the run's shards through a `DataLoader` (a `DistributedSampler` per rank, the
augmentations in its worker processes), so memory does not grow with the number of pairs. Every
augmentation is seeded by (seed, epoch, pair index): the batches of an epoch are the same whatever
the number of loader workers, and a resumed epoch repeats them exactly.

`batch_size` is per process (per GPU), the DDP convention: G GPUs at --batch-size 8 train on global
batches of 8 G. The epoch is chosen by mIoU on the real labelled training images (as in the paper), or,
with --val-split K, on K of them held out of the real images mixed in (`split_validation`).
After every epoch the full training state (model, optimiser, AMP gradient scaler, best epoch) is saved
atomically, so rerunning the command resumes at the next epoch and ends with the same weights as an
uninterrupted run.

At scale: loader workers per process by default (`auto_loader_workers`), pinned batches copied without
blocking on a GPU, autocast to bf16 (no gradient scaler) or fp16 (with one), SyncBatchNorm over several
GPUs, and an encoder that starts from given weights (`encoder_weights`) instead of random ones. Runs made
before these options existed keep their resume keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..errors import DatasetDDPMError, OptionError
from ..hooks import Figures, current_figures
from ..io import json_tensor, load_tensors, read_jsonl, save_tensors, tensor_json, write_json
from ..progress import progress_bar
from ..schedules import DECAYS, decay_over_run, set_step, step_scheduler
from ..rundir import (CONFIG_FILE, LOG_FILE, STATE_FILE, append_log, check_resume, model_state,
                      restore_model_state)
from .metrics import confusion_matrix, mean_iou
from .model import ARCHITECTURES, Segmenter, SegmenterConfig, create_segmenter, predict, save_segmenter

LR_SCHEDULES = DECAYS
RESUME_SHOWN = ("world", "amp", "amp_dtype")  # named when a resume is refused: the settings a rerun most often changes
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
FAULT_ENV = "DATASETDDPM_DEEPLAB_FAULT_AFTER_STEPS"  # tests: SIGKILL rank 0 after N steps of this process
_steps_this_process = [0]


@dataclass
class DeepLabTrainConfig:
    arch: str = "deeplabv3"
    encoder: str = "resnet18"  # resnet101 as the reference code; smaller for the embedded default
    input_scale: int = 1  # train and run at an upsampled input (small images: output stride 8)
    epochs: int = 20
    batch_size: int = 8  # per process (per GPU); the global batch is batch_size x world size
    lr: float = 1e-3
    augment: bool = True
    seed: int = 0
    loader_workers: int | None = None  # DataLoader processes per rank (augmentation runs there); None: auto
    real: str = ""  # real labelled images mixed into every epoch (`--real`), "" = synthetic pairs only
    real_fraction: float = 0.1  # with `real`: the real images' share of each epoch's samples
    lr_schedule: str = "constant"  # constant | cosine (to 0 at the last step) | poly (DeepLab's, power 0.9)
    sync_bn: bool = False  # SyncBatchNorm: BatchNorm statistics over the global batch (several GPUs)
    encoder_weights: str = ""  # local encoder state dict loaded before training; "" = random encoder
    encoder_weights_sha256: str = ""  # its digest: the resume key names the weights, not their path
    val_split: int = 0  # --val-split K: K of the --real images held out, the epoch chosen on them; 0: all of --val

    def validate(self, world: int = 1) -> None:
        if self.epochs < 1:
            raise OptionError("--epochs", f"must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise OptionError("--batch-size", f"is per GPU / worker ({world} of them) and must be >= 2: BatchNorm "
                                              f"cannot train on a batch of {self.batch_size}")
        if self.lr <= 0:
            raise OptionError("--lr", f"must be > 0, got {self.lr}")
        if self.input_scale < 1:
            raise OptionError("--input-scale", f"must be >= 1, got {self.input_scale}")
        if self.loader_workers is not None and self.loader_workers < 0:
            raise OptionError("--loader-workers", f"must be >= 0, got {self.loader_workers}")
        if self.real and not 0 < self.real_fraction < 1:
            raise OptionError("--real-fraction", f"must be in (0, 1), got {self.real_fraction}")
        if self.val_split < 0:
            raise OptionError("--val-split", f"must be >= 0 (0: choose on all of --val), got {self.val_split}")
        if self.sync_bn and world < 2:
            raise OptionError("--sync-bn", "needs several processes (--gpus G or torchrun): one process's BatchNorm "
                                           "already sees its whole batch")
        if self.lr_schedule not in LR_SCHEDULES:
            raise OptionError("--lr-schedule", f"unknown schedule {self.lr_schedule!r}; choose from "
                                               f"{', '.join(LR_SCHEDULES)}")
        if self.arch not in ARCHITECTURES:
            raise OptionError("--arch", f"unknown architecture {self.arch!r}; choose from {', '.join(ARCHITECTURES)}")
        import segmentation_models_pytorch as smp
        if self.encoder not in smp.encoders.get_encoder_names():
            raise OptionError("--encoder", f"unknown encoder {self.encoder!r}; smp names such as resnet18, resnet50, "
                                           "resnet101, efficientnet-b0")

    def hash(self, data_key: str, world: int = 1, amp: bool | str = False, device_type: str = "cpu") -> str:
        """Resume key. World size and AMP are in it: both change the arithmetic (global batch, precision),
        so a run is only resumed with the ones it started with. `amp`: see `amp_dtype_name`."""
        dtype = amp_dtype_name(amp, device_type)
        d = {**asdict(self), "data": data_key, "world": world, "amp": bool(dtype)}
        if dtype and dtype != legacy_amp_dtype(device_type):  # runs with --amp's old meaning keep their key
            d["amp_dtype"] = dtype
        if self.encoder_weights and not self.encoder_weights_sha256:
            raise ValueError("encoder_weights without its sha256: resolve it first (resolve_encoder_weights)")
        for key in ("sync_bn", "encoder_weights", "encoder_weights_sha256", "val_split"):  # keys of earlier runs
            if not d[key]:
                d.pop(key)
        d.pop("encoder_weights", None)  # the path: the digest names the weights wherever they lie
        if self.lr_schedule == "constant":  # runs without a schedule keep the key they had before it existed
            d.pop("lr_schedule")
            d.pop("epochs")  # raising --epochs and rerunning extends a run: a resume, not a new config
        # (a decaying schedule depends on the total: another --epochs is another run)
        d.pop("loader_workers")  # the batches do not depend on it
        if not d["real"]:  # synthetic-only runs keep the key they had before --real existed
            d.pop("real"), d.pop("real_fraction")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def record(self) -> dict:
        """The config as the run's JSON files record it: without `val_split` when unused, so a default run
        writes the files it wrote before the option existed."""
        d = asdict(self)
        if not d["val_split"]:
            d.pop("val_split")
        return d


def legacy_amp_dtype(device_type: str) -> str:
    """What `--amp` alone has always meant: bf16 autocast on a CPU, fp16 with a gradient scaler on a GPU."""
    return "bf16" if device_type == "cpu" else "fp16"


def amp_dtype_name(amp: bool | str, device_type: str) -> str:
    """The autocast type of a run: "" (off), "bf16" or "fp16". `amp` is False/True (`--amp`: the device's
    legacy type) or a type name (`--amp-dtype`)."""
    if amp is True:
        return legacy_amp_dtype(device_type)
    if not amp:
        return ""
    if amp not in AMP_DTYPES:
        raise OptionError("--amp-dtype", f"unknown type {amp!r}; choose from {', '.join(AMP_DTYPES)}")
    if amp == "fp16" and device_type == "cpu":
        raise OptionError("--amp-dtype", "fp16 is for GPUs; a CPU's autocast type is bf16")
    return amp


def check_device_options(cfg: DeepLabTrainConfig, world: int, device_type: str, amp: bool | str) -> None:
    """The options that depend on the device, checked before anything is written."""
    cfg.validate(world)
    amp_dtype_name(amp, device_type)
    if cfg.sync_bn and device_type == "cpu":
        raise OptionError("--sync-bn", "torch's SyncBatchNorm runs on GPUs only; leave it out with CPU workers")


def auto_loader_workers(world: int, device_type: str, loading_work: bool, cpus: int | None = None) -> int:
    """--loader-workers when not given: DataLoader processes per training process.

    0 without `loading_work` (pairs already in memory, no augmentation: nothing to overlap) and where a
    process has <= 2 cores: there the step's own threads use them, and workers would only add their start-up and
    inter-process copies every epoch (the loader is rebuilt per epoch so that its seeds follow it). On a
    GPU the training process mostly waits for the device, so up to 4 workers decode and augment beside it;
    on a CPU they take half the process's cores at most, the other half doing the arithmetic."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_process = max(cpus // max(world, 1), 1)
    if not loading_work or per_process <= 2:
        return 0
    return min(4, per_process - 1 if device_type != "cpu" else per_process // 2)


def check_mix_fraction(fraction: float) -> None:
    """A pipeline's --real-fraction, where 0 means synthetic pairs only (`DeepLabTrainConfig.real_fraction`
    is only read with `real` set, so 0 cannot mean "off" there)."""
    if not 0 <= fraction < 1:
        raise OptionError("--real-fraction", f"must be in [0, 1) (0: synthetic pairs only), got {fraction}")


def mixed_real(labelled: str | Path, fraction: float) -> dict:
    """The DeepLabTrainConfig fields that mix `labelled` (a dataset root) into every epoch at `fraction`;
    none for 0."""
    check_mix_fraction(fraction)
    return dict(real=str(Path(labelled).resolve()), real_fraction=fraction) if fraction else {}


def held_out_indices(n: int, count: int, seed: int) -> list[int]:
    """Which `count` of `n` real images (in file order) --val-split keeps out of training: a draw of its own
    seed stream (`seeds.STREAMS["val-split"]`), the same for a seed on every machine, in file order."""
    from ..seeds import stream_seed
    return sorted(np.random.default_rng(stream_seed(seed, "val-split", 0)).permutation(n)[:count].tolist())


def split_validation(val, mixed, cfg: DeepLabTrainConfig):
    """(validation set, set to mix in) for the run: `val` and `mixed` (LabelledSets of --val and --real, or
    None) as given without --val-split; with --val-split K, K of the real images chosen by `held_out_indices`
    to validate on and the others to mix in. Checked before anything is written: K leaves one image or more to
    train on, and --real names the --val images (otherwise those were never trained on already)."""
    if not cfg.val_split:
        return val, mixed
    if mixed is None or [p.resolve() for p in mixed.paths] != [p.resolve() for p in val.paths]:
        raise OptionError("--val-split", "holds out some of the images --real mixes in: give --real the same "
                                         "folder as --val (with another --real, or none, the --val images are "
                                         "never trained on and all of them choose the epoch)")
    if cfg.val_split >= len(val):
        raise OptionError("--val-split", f"{cfg.val_split} held-out images leave none of the {len(val)} real "
                                         f"images to train on: hold out fewer than {len(val)}")
    held = held_out_indices(len(val), cfg.val_split, cfg.seed)
    rest = [i for i in range(len(val)) if i not in set(held)]

    def subset(labelled, idx):
        return replace(labelled, images=labelled.images[idx], masks=labelled.masks[idx],
                       paths=[labelled.paths[i] for i in idx])
    return subset(val, held), subset(mixed, rest)


def lr_at(cfg: DeepLabTrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimisation step `step` (0-based) of `total_steps`: a function of the step
    alone, so a resumed run sets exactly the rates an uninterrupted one would (no scheduler state)."""
    return cfg.lr * decay_over_run(cfg.lr_schedule, step, total_steps)


def lr_scheduler(opt: torch.optim.Optimizer, cfg: DeepLabTrainConfig, steps_per_epoch: int, start_epoch: int):
    """The run's LambdaLR (`schedules.step_scheduler`) at its first step; the optimiser's param groups keep
    the keys of states saved before it (no `initial_lr`)."""
    total = cfg.epochs * steps_per_epoch
    return step_scheduler(opt, lambda step: decay_over_run(cfg.lr_schedule, step, total), base_lr=cfg.lr,
                          step=start_epoch * steps_per_epoch, base_in_groups=False)


def _augmenter(ignore_label: int):
    import albumentations as A
    return A.Compose([A.HorizontalFlip(p=0.5),
                      A.Affine(scale=(0.85, 1.15), translate_percent=(-0.08, 0.08), rotate=(-10, 10),
                               fill_mask=ignore_label, p=0.5),
                      A.ColorJitter(0.2, 0.2, 0.2, 0.03, p=0.5)])


def pair_seed(seed: int, epoch: int, index: int) -> int:
    """Augmentation seed of pair `index` in `epoch`: independent of batch, rank and loader worker."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class AugmentedPairs(Dataset):
    """(image, mask) pairs -> ((3, H, W) uint8, (H, W) int64) tensors, augmented per (seed, epoch, index).

    `pairs` is anything indexable that returns (H, W, 3) uint8 and (H, W) arrays: a `GeneratedPairs`
    (streamed from the shards) or an in-memory list."""

    def __init__(self, pairs, *, augment: bool, seed: int, ignore_label: int):
        self.pairs, self.augment, self.seed, self.ignore_label = pairs, augment, seed, ignore_label
        self.epoch = 0
        self._aug = None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.pairs[i]
        if self.augment:
            if self._aug is None:  # built lazily, in the loader worker that uses it
                self._aug = _augmenter(self.ignore_label)
            self._aug.set_random_seed(pair_seed(self.seed, self.epoch, i))
            out = self._aug(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return (torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1),  # a writable copy
                torch.from_numpy(np.asarray(mask).astype(np.int64)))


def make_loader(dataset: AugmentedPairs, cfg: DeepLabTrainConfig, epoch: int, rank: int = 0,
                world: int = 1, pin_memory: bool = False) -> DataLoader:
    """This rank's batches of `epoch`: a seeded DistributedSampler share, partial batches dropped.
    `pin_memory` (for a GPU) lets the copies to the device overlap the step (`non_blocking`)."""
    dataset.epoch = epoch
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.loader_workers or 0,
                      drop_last=True, persistent_workers=False, pin_memory=pin_memory)


@dataclass
class _Run:
    """What one rank trains: the model (and its DDP wrapper), optimiser, scaler and progress so far."""

    model: Segmenter
    net: torch.nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    start_epoch: int
    best: dict


def initial_segmenter(cfg: DeepLabTrainConfig, seg_cfg: SegmenterConfig) -> Segmenter:
    """The model a run starts from: seeded random weights, then `cfg.encoder_weights` (when given) loaded
    strictly into the encoder; the decoder draws the same random weights either way."""
    torch.manual_seed(cfg.seed)
    model = create_segmenter(seg_cfg)
    if cfg.encoder_weights:
        from .encoder_weights import load_encoder_weights
        load_encoder_weights(model.net.encoder, cfg.encoder_weights)
    return model


def build(cfg: DeepLabTrainConfig, seg_cfg: SegmenterConfig, device: torch.device, amp_dtype: str,
          distributed: bool) -> _Run:
    """`amp_dtype` "fp16" trains with a gradient scaler (fp16's small range underflows gradients); bf16 has
    fp32's range and needs none."""
    model = initial_segmenter(cfg, seg_cfg)
    if cfg.sync_bn:  # before DDP wraps it: statistics over every process's batch
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == "fp16")
    net = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return _Run(model, net, opt, scaler, 0, {"miou": -1.0, "epoch": -1})


def restore(run: _Run, state_file: Path) -> None:
    if not state_file.exists():
        return
    state = load_tensors(state_file)
    restore_model_state(state, run.model, run.opt)
    if "scaler" in state and run.scaler.is_enabled():
        run.scaler.load_state_dict(tensor_json(state["scaler"]))
    run.start_epoch = int(state["epoch"])
    run.best = tensor_json(state["best"])


def save_state(path: Path, run: _Run, epoch: int) -> None:
    state = model_state(run.model, run.opt, best=json_tensor(run.best), epoch=epoch)
    if run.scaler.is_enabled():
        state["scaler"] = json_tensor(run.scaler.state_dict())
    save_tensors(path, state)


def train_one_epoch(run: _Run, loader: DataLoader, device: torch.device, amp_dtype: str, ignore_label: int,
                    on_step, schedule=None, first_step: int = 0) -> list[float]:
    """One pass over `loader` (autocast to `amp_dtype` unless ""); `schedule` (optional, a LambdaLR of the
    run's steps) sets the rate of the epoch's i-th step, the run's step `first_step` + i, before it."""
    fault_after = int(os.environ.get(FAULT_ENV, "0"))
    run.model.train()
    losses = []
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if schedule is not None:  # before the step, as the rate was always set: saved states keep their bytes
            set_step(schedule, first_step + len(losses))
        with torch.autocast(device.type, dtype=AMP_DTYPES.get(amp_dtype), enabled=bool(amp_dtype)):
            loss = F.cross_entropy(run.net(x).float(), y, ignore_index=ignore_label)
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.opt)
        run.scaler.update()
        losses.append(loss.item())
        on_step(losses)
        _steps_this_process[0] += 1
        if fault_after and _steps_this_process[0] >= fault_after and os.environ.get("RANK", "0") == "0":
            os.kill(os.getpid(), signal.SIGKILL)
    return losses


def validate(model: Segmenter, val_images: np.ndarray, val_masks: np.ndarray, device: torch.device,
             num_classes: int, ignore_label: int) -> float:
    pred = predict(model, torch.from_numpy(val_images).permute(0, 3, 1, 2).to(device)).cpu().numpy()
    return mean_iou(confusion_matrix(pred, val_masks, num_classes, ignore_label), ignore_label)


def train_deeplab(pairs, val_images: np.ndarray, val_masks: np.ndarray, out_dir: str | Path,
                  cfg: DeepLabTrainConfig, *, num_classes: int, ignore_label: int = 255,
                  class_names: tuple[str, ...] = (), data_key: str = "", device: str | torch.device = "cpu",
                  amp: bool | str = False, progress: bool = True, held_out: tuple[str, ...] = (),
                  pairs_checked: bool = False, figures: Figures | None = None) -> dict:
    """Train on `pairs` (indexable (image, mask) arrays, e.g. `GeneratedPairs`); keep the epoch with the
    best mIoU on the validation (real) images. `held_out`: their file names when --val-split chose them
    (recorded in the run's config); `val_images` may be None on ranks other than 0, which never validate.
    `pairs_checked`: the caller ran `check_pairs` on these pairs already (`train_deeplab_run` does, before
    any worker starts), so this process builds no model for it. `figures` draws the training curves after
    each epoch (default: the ones installed by the command, `hooks.current_figures`).

    Inside a torch.distributed process group this is data-parallel (DDP): each rank trains on its
    DistributedSampler share with `batch_size` images a step; rank 0 validates, saves and shows
    progress. `amp` runs the forward pass under autocast: True as `--amp` always did (bfloat16 on CPU,
    float16 with a gradient scaler on CUDA), or "bf16" / "fp16" (`amp_dtype_name`)."""
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = torch.device(device)
    cfg, run_hash, amp = _resolve(cfg, world, device, amp, data_key, streamed=not isinstance(pairs, (list, tuple)))
    out = Path(out_dir)
    check_resume(out, run_hash, shown=RESUME_SHOWN, can_overwrite=False)
    seg_cfg = segmenter_config(cfg, num_classes, ignore_label, class_names)
    if not pairs_checked:
        check_pairs(pairs, cfg, seg_cfg, world)
    if rank == 0:
        _write_config(out, run_hash, cfg, data_key, world, amp, held_out)
    run = build(cfg, seg_cfg, device, amp, distributed)
    restore(run, out / STATE_FILE)
    dataset = AugmentedPairs(pairs, augment=cfg.augment, seed=cfg.seed, ignore_label=ignore_label)
    steps_per_epoch = len(dataset) // world // cfg.batch_size
    schedule = lr_scheduler(run.opt, cfg, steps_per_epoch, run.start_epoch)
    with progress_bar(progress and rank == 0) as bar:
        task = bar.add_task("train-deeplab", total=cfg.epochs * steps_per_epoch,
                            completed=run.start_epoch * steps_per_epoch, info="")
        for epoch in range(run.start_epoch, cfg.epochs):
            t0 = time.time()
            torch.manual_seed(cfg.seed * 10_007 + epoch)  # dropout draws: a resumed epoch repeats them exactly

            def on_step(losses, epoch=epoch):
                bar.update(task, advance=1, info=f"epoch {epoch} loss {np.mean(losses[-20:]):.3f} "
                                                 f"best{' held-out' if held_out else ''} {best_shown(run.best)}")
            loader = make_loader(dataset, cfg, epoch, rank, world, pin_memory=device.type == "cuda")
            losses = train_one_epoch(run, loader, device, amp, ignore_label, on_step, schedule, epoch * steps_per_epoch)
            if rank == 0:
                miou = validate(run.model, val_images, val_masks, device, num_classes, ignore_label)
                _end_epoch(run, out, cfg, epoch, miou, losses, time.time() - t0, figures or current_figures())
            if distributed:
                dist.barrier()
    return {"best_epoch": run.best["epoch"], "best_val_miou": run.best["miou"], "epochs": cfg.epochs}


def _write_config(out: Path, run_hash: str, cfg: DeepLabTrainConfig, data_key: str, world: int, amp: str,
                  held_out: tuple[str, ...]) -> None:
    record = {"hash": run_hash, "config": cfg.record(), "data": data_key, "world": world, "amp": bool(amp),
              "amp_dtype": amp or None, "global_batch_size": cfg.batch_size * world}
    if held_out:  # which real images chose the epoch and were never trained on
        record["val_held_out"] = list(held_out)
    write_json(out / CONFIG_FILE, record)


def chosen_on(val_images: int, held_out: bool, also_trained: bool) -> str:
    """What the printed best score was measured on, said plainly: a score on images the segmenter also
    trained on reads several points above its test score."""
    if held_out:
        return f"{val_images} held-out real images, never trained on"
    if also_trained:
        return (f"the {val_images} real images of --val, also trained on (--real): optimistic; --val-split K "
                f"chooses on K held-out ones")
    return f"the {val_images} real images of --val"


def best_shown(best: dict) -> str:
    """The progress line's best validation mIoU in %; "-" until an epoch has been validated (the state
    starts at mIoU -1, which would read as "best -100.0")."""
    return "-" if best["epoch"] < 0 else f"{100 * best['miou']:.1f}"


def segmenter_config(cfg: DeepLabTrainConfig, num_classes: int, ignore_label: int,
                     class_names: tuple[str, ...] = ()) -> SegmenterConfig:
    return SegmenterConfig(num_classes=num_classes, arch=cfg.arch, encoder=cfg.encoder, input_scale=cfg.input_scale,
                           class_names=tuple(class_names), ignore_label=ignore_label)


def _resolve(cfg: DeepLabTrainConfig, world: int, device: torch.device, amp: bool | str, data_key: str,
             streamed: bool) -> tuple[DeepLabTrainConfig, str, str]:
    """(the config as run: encoder digest and loader workers filled in, its resume key, the AMP type)."""
    check_device_options(cfg, world, device.type, amp)
    if cfg.encoder_weights and not cfg.encoder_weights_sha256:  # a library caller's value: the CLI resolved it
        from .encoder_weights import resolve_encoder_weights
        path, digest = resolve_encoder_weights(cfg.encoder_weights, cfg.encoder)
        cfg = replace(cfg, encoder_weights=path, encoder_weights_sha256=digest)
    run_hash = cfg.hash(data_key, world, amp, device.type)
    if cfg.loader_workers is None:
        cfg = replace(cfg, loader_workers=auto_loader_workers(world, device.type, streamed or cfg.augment))
    return cfg, run_hash, amp_dtype_name(amp, device.type)


def check_pairs(pairs, cfg: DeepLabTrainConfig, seg_cfg: SegmenterConfig, world: int) -> None:
    """The pairs' size suits the segmenter and fill a batch per process; the model is built on the meta
    device (shapes only: no weights drawn, no memory), so checking costs next to nothing."""
    with torch.device("meta"):
        reason = create_segmenter(seg_cfg).check_size(*pairs[0][0].shape[:2])
    if reason:
        raise DatasetDDPMError(reason)
    if len(pairs) < cfg.batch_size * world:
        raise OptionError("--batch-size", f"{len(pairs)} pairs cannot fill one batch of {cfg.batch_size} on each of "
                                          f"{world} worker(s)")


def _end_epoch(run: _Run, out: Path, cfg: DeepLabTrainConfig, epoch: int, miou: float, losses: list[float],
               seconds: float, figures: Figures) -> None:
    """Rank 0 after an epoch: the best model, the log line, the curves, then the state (the commit point:
    a kill before it redoes the epoch and rewrites the same files)."""
    if miou > run.best["miou"]:
        run.best = {"miou": miou, "epoch": epoch}
        save_segmenter(out / "best", run.model, {"training": {"epoch": epoch, "val_miou": miou, **cfg.record()}})
    append_log(out / LOG_FILE, {"epoch": epoch, "loss": float(np.mean(losses)), "val_miou": miou,
                                "seconds": round(seconds, 1)}, key="epoch")
    figures.training_curves(read_jsonl(out / LOG_FILE), out / "training_curves.png",
                            f"train-deeplab: {cfg.arch} {cfg.encoder}")
    save_state(out / STATE_FILE, run, epoch + 1)

