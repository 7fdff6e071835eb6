"""Training DeepLabV3 on generated pairs: Adam, batch 8, epochs, albumentations, best epoch on real images.

The epoch is chosen by mIoU on the real labelled training images (as in the paper). After every
epoch the full training state is saved atomically, so rerunning the command resumes at the next
epoch and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..errors import DatasetDDPMError
from ..io import (json_tensor, load_optimizer_tensors, load_tensors, optimizer_tensors, read_json, save_tensors,
                  tensor_json, write_json)
from ..progress import progress_bar
from .metrics import confusion_matrix, mean_iou
from .model import SegmenterConfig, create_segmenter, predict, save_segmenter


@dataclass
class DeepLabTrainConfig:
    arch: str = "deeplabv3"
    encoder: str = "resnet18"  # resnet101 as the reference code; smaller for the embedded default
    input_scale: int = 1  # train and run at an upsampled input (small images: output stride 8)
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    augment: bool = True
    seed: int = 0

    def hash(self, data_key: str) -> str:
        d = {**asdict(self), "data": data_key}
        d.pop("epochs")  # raising --epochs and rerunning extends a run: a resume, not a new config
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _augmenter(seed: int, ignore_label: int):
    import albumentations as A
    return A.Compose([A.HorizontalFlip(p=0.5),
                      A.Affine(scale=(0.85, 1.15), translate_percent=(-0.08, 0.08), rotate=(-10, 10),
                               fill_mask=ignore_label, p=0.5),
                      A.ColorJitter(0.2, 0.2, 0.2, 0.03, p=0.5)], seed=seed)


def train_deeplab(images: np.ndarray, masks: np.ndarray, val_images: np.ndarray, val_masks: np.ndarray,
                  out_dir: str | Path, cfg: DeepLabTrainConfig, *, num_classes: int, ignore_label: int = 255,
                  class_names: tuple[str, ...] = (), data_key: str = "", device: str | torch.device = "cpu",
                  amp: bool = False, progress: bool = True) -> dict:
    """Train on (N, H, W, 3) pairs; keep the epoch with the best mIoU on the validation (real) images.

    Inside a torch.distributed process group this is data-parallel (DDP): every rank takes its share
    of each global batch of `batch_size`; rank 0 validates, saves and shows progress. `amp` runs the
    forward pass under autocast (bfloat16 on CPU, float16 with a gradient scaler on CUDA)."""
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if cfg.batch_size // world < 2:
        raise DatasetDDPMError(f"--batch-size {cfg.batch_size} over {world} workers leaves < 2 images per worker; "
                               f"BatchNorm needs at least 2")
    device = torch.device(device)
    out = Path(out_dir)
    run_hash = cfg.hash(data_key)
    state_file, log_file = out / "train_state.safetensors", out / "train_log.jsonl"
    if (out / "train_config.json").exists() and read_json(out / "train_config.json").get("hash") != run_hash:
        raise DatasetDDPMError(f"{out}: holds a training run with a different config; use another --out")
    if rank == 0:
        write_json(out / "train_config.json", {"hash": run_hash, "config": asdict(cfg), "data": data_key,
                                               "world": world, "amp": amp})
    torch.manual_seed(cfg.seed)
    model = create_segmenter(SegmenterConfig(num_classes=num_classes, arch=cfg.arch, encoder=cfg.encoder,
                                             input_scale=cfg.input_scale, class_names=tuple(class_names),
                                             ignore_label=ignore_label))
    reason = model.check_size(*images.shape[1:3])
    if reason:
        raise DatasetDDPMError(reason)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start, best = 0, {"miou": -1.0, "epoch": -1}
    if state_file.exists():
        state = load_tensors(state_file)
        model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
        load_optimizer_tensors(opt, state)
        start = int(state["epoch"])
        best = tensor_json(state["best"])
    net = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    scaler = torch.amp.GradScaler(enabled=amp and device.type == "cuda")
    steps_per_epoch = max(1, len(images) // cfg.batch_size)
    val_x = torch.from_numpy(val_images).permute(0, 3, 1, 2)
    with progress_bar(progress and rank == 0) as bar:
        task = bar.add_task("train-deeplab", total=cfg.epochs * steps_per_epoch, completed=start * steps_per_epoch,
                            info="")
        for epoch in range(start, cfg.epochs):
            t0 = time.time()
            torch.manual_seed(cfg.seed * 10_007 + epoch)  # dropout draws: a resumed epoch repeats them exactly
            aug = _augmenter(cfg.seed * 10_007 + epoch, ignore_label) if cfg.augment else None
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(images))
            model.train()
            losses = []
            for s in range(steps_per_epoch):
                idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size][rank::world]  # this rank's share
                xs, ys = images[idx], masks[idx]
                if aug is not None:
                    pairs = [aug(image=x, mask=y) for x, y in zip(xs, ys)]
                    xs, ys = np.stack([p["image"] for p in pairs]), np.stack([p["mask"] for p in pairs])
                x = torch.from_numpy(np.ascontiguousarray(xs)).permute(0, 3, 1, 2).to(device)
                y = torch.from_numpy(np.ascontiguousarray(ys).astype(np.int64)).to(device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                    loss = F.cross_entropy(net(x).float(), y, ignore_index=ignore_label)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                losses.append(loss.item())
                bar.update(task, advance=1, info=f"epoch {epoch} loss {np.mean(losses[-20:]):.3f} best {100 * best['miou']:.1f}")
            if rank == 0:
                pred = predict(model, val_x.to(device)).cpu().numpy()
                miou = mean_iou(confusion_matrix(pred, val_masks, num_classes, ignore_label), ignore_label)
                if miou > best["miou"]:
                    best = {"miou": miou, "epoch": epoch}
                    save_segmenter(out / "best", model, {"training": {"epoch": epoch, "val_miou": miou, **asdict(cfg)}})
                with open(log_file, "a") as f:
                    f.write(json.dumps({"epoch": epoch, "loss": float(np.mean(losses)), "val_miou": miou,
                                        "seconds": round(time.time() - t0, 1)}) + "\n")
                _save_state(state_file, model, opt, epoch + 1, best)
            if distributed:
                dist.barrier()
    return {"best_epoch": best["epoch"], "best_val_miou": best["miou"], "epochs": cfg.epochs}


def _save_state(path: Path, model, opt, epoch: int, best: dict) -> None:
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update(optimizer_tensors(opt))
    state["best"] = json_tensor(best)
    state["epoch"] = torch.tensor(epoch)
    save_tensors(path, state)
