"""The embedded domain's oracle segmenter: it stands in for a human annotator of generated samples.

A DeepLabV3+ (ResNet-18 from scratch, input upsampled 2x so its stride-4 decoder sees 16x16 maps
at 32 px) trained on thousands of procedural images with exact masks. Its mIoU on real procedural
images says how good an annotator it is. Samples have no ground truth, so `sample_report` measures
how familiar they look to the oracle with numbers that exist on both sides: its flip-consistency
mIoU (its mask of an image against its mask of the mirrored image, mirrored back), its mean
confidence, and the class frequencies it predicts against the true frequencies of real images.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..io import write_json
from ..rundir import CONFIG_FILE, training_dir
from ..seeds import sample_in_full_batches, stream_seed
from ..segmenters.metrics import confusion_matrix, iou_per_class, mean_iou
from ..segmenters.model import Segmenter, SegmenterConfig, create_segmenter, load_segmenter, predict
from ..segmenters.train import SegTrainConfig, train_segmenter
from .procedural import CLASS_NAMES, render_batch

ORACLE_TRAIN_SEED0 = 4_000_000
ORACLE_EVAL_SEED0 = 5_000_000
K = len(CLASS_NAMES)


def train_oracle(out_dir: str | Path, *, steps: int = 2000, pool: int = 6000, batch_size: int = 16,
                 seed: int = 0, lr: float = 1e-3, arch: str = "deeplabv3plus", encoder: str = "resnet18",
                 input_scale: int = 2, encoder_depth: int = 5, decoder_channels: tuple[int, ...] = (),
                 checkpoint_every: int = 250, device: str | torch.device = "cpu", progress: bool = True) -> dict:
    """Train the oracle on `pool` procedural images with exact masks, in a `rundir` training folder
    (resumable: rerun the same command to continue, with more `steps` to extend). Writes the segmenter
    and `oracle_log.json`; returns the log (losses, seconds, mIoU and IoU per class on held-out images)."""
    cfg = SegmenterConfig(num_classes=K, arch=arch, encoder=encoder, input_scale=input_scale, class_names=CLASS_NAMES,
                          encoder_depth=encoder_depth, decoder_channels=tuple(decoder_channels))
    train = SegTrainConfig(steps=steps, batch_size=batch_size, seed=seed, lr=lr, checkpoint_every=checkpoint_every)
    data_key = f"procedural:{ORACLE_TRAIN_SEED0}+{pool}"
    run_hash = train.hash(cfg, data_key)
    torch.manual_seed(seed)
    model = create_segmenter(cfg).to(device)  # a bad --arch / --encoder is refused before anything is written
    with training_dir(out_dir, run_hash, can_overwrite=False) as out:
        write_json(out / CONFIG_FILE, {"hash": run_hash, "config": asdict(train), "segmenter": asdict(cfg),
                                       "data": data_key})
        images, masks = render_batch(range(ORACLE_TRAIN_SEED0, ORACLE_TRAIN_SEED0 + pool))
        log = train_segmenter(model, images, masks, train, out_dir=out, progress=progress)
        oracle = load_segmenter(out).to(device)
        log["real_miou"] = oracle_miou_on_real(oracle)
        real, real_masks = real_images(500)
        pred = predict(oracle, torch.from_numpy(real).permute(0, 3, 1, 2)).numpy()
        log["real_iou"] = dict(zip(CLASS_NAMES, iou_per_class(confusion_matrix(pred, real_masks, K)).values()))
        losses = log["loss"]
        write_json(out / "oracle_log.json", {k: v for k, v in log.items() if k != "loss"} |
                   {"loss_every_250": [float(sum(losses[i:i + 250]) / len(losses[i:i + 250]))
                                       for i in range(0, len(losses), 250)]})
    return log


def real_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out procedural images (never seen by the oracle, the DDPM or the labelled splits)."""
    return render_batch(range(ORACLE_EVAL_SEED0, ORACLE_EVAL_SEED0 + n))


def oracle_miou_on_real(model: Segmenter, n: int = 500) -> float:
    images, masks = real_images(n)
    pred = predict(model, torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    return mean_iou(confusion_matrix(pred, masks, K))


@torch.no_grad()
def oracle_statistics(model: Segmenter, images: np.ndarray) -> dict:
    """Flip-consistency mIoU, mean confidence and predicted class frequencies of the oracle on images."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    device = next(model.parameters()).device
    probs = torch.cat([model(x[i:i + 64].to(device)).softmax(1).cpu() for i in range(0, len(x), 64)])
    pred = probs.argmax(1)
    pred_flip = predict(model, x.flip(-1)).flip(-1)
    freq = np.bincount(pred.flatten().numpy(), minlength=K) / pred.numel()
    return {"flip_consistency_miou": mean_iou(confusion_matrix(pred_flip.numpy(), pred.numpy(), K)),
            "mean_confidence": float(probs.max(1).values.mean()),
            "class_frequency": {n: float(f) for n, f in zip(CLASS_NAMES, freq)},
            "predictions": pred.numpy()}


def class_share_interval(samples_pred: np.ndarray, real_pred: np.ndarray, resamples: int = 2000,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """95 % percentile-bootstrap bounds (K,) of (class frequency in samples) / (class frequency in real
    images), from per-image predicted masks of equal size; NaN for a class absent from the real images."""
    def per_image(pred):
        flat = pred.reshape(len(pred), -1)
        return np.stack([np.bincount(m, minlength=K) for m in flat]) / flat.shape[1]
    fs, fr = per_image(samples_pred), per_image(real_pred)
    rng = np.random.default_rng(seed)
    s = fs[rng.integers(0, len(fs), (resamples, len(fs)))].mean(1)
    r = fr[rng.integers(0, len(fr), (resamples, len(fr)))].mean(1)
    import warnings
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from the real images: all NaN
        ratio = np.where(r > 0, s / r, np.nan)
        return np.nanpercentile(ratio, 2.5, axis=0), np.nanpercentile(ratio, 97.5, axis=0)


def sample_report(oracle: Segmenter, samples: np.ndarray, n_real: int | None = None) -> dict:
    """Oracle numbers on samples beside the same numbers on real procedural images."""
    real, real_masks = real_images(n_real or len(samples))
    on_real = oracle_statistics(oracle, real)
    on_samples = oracle_statistics(oracle, samples)
    true_freq = np.bincount(real_masks.flatten(), minlength=K) / real_masks.size
    tv = 0.5 * np.abs(np.array(list(on_samples["class_frequency"].values())) - true_freq).sum()
    low, high = class_share_interval(on_samples["predictions"], on_real["predictions"])
    return {
        "oracle_miou_on_real": mean_iou(confusion_matrix(on_real["predictions"], real_masks, K)),
        "real": {k: v for k, v in on_real.items() if k != "predictions"},
        "samples": {k: v for k, v in on_samples.items() if k != "predictions"},
        "true_class_frequency": {n: float(f) for n, f in zip(CLASS_NAMES, true_freq)},
        "class_frequency_total_variation": float(tv),
        # each class's pixel share in the samples over that in the real images: 95 % bootstrap interval
        # (samples and real images resampled independently), so a share near a target reads with its noise
        "class_share_interval": {n: [float(a), float(b)] for n, a, b in zip(CLASS_NAMES, low, high)},
        "num_samples": len(samples),
        "_sample_predictions": on_samples["predictions"],
    }


def check_samples(generator, oracle: Segmenter, out_dir: str | Path, *, n: int = 200, sampler: str = "ddim",
                  num_steps: int = 50, seed: int = 0, batch_size: int = 50, progress: bool = True) -> dict:
    """Sample `n` images, write `samples_grid.png` (samples over oracle overlays) and `sample_report.json`."""
    from ..progress import progress_bar
    from .overlays import image_grid, overlay, save_png
    seeds = [stream_seed(seed, "check-samples", i) for i in range(n)]  # never a run's or an annotation's samples
    batches = []
    with progress_bar(progress) as bar:
        task = bar.add_task("sample", total=n, info=f"{sampler}-{num_steps}")
        for images in sample_in_full_batches(generator, seeds, batch_size, sampler=sampler, num_steps=num_steps):
            batches.append(images)
            bar.update(task, advance=len(images))
    samples = torch.cat(batches).permute(0, 2, 3, 1).numpy()
    report = sample_report(oracle, samples)
    preds = report.pop("_sample_predictions")
    if getattr(generator, "latent_based", False):  # a GAN samples in one pass: no sampler, no steps
        sampler, num_steps = None, None
    report.update({"sampler": sampler, "sampling_steps": num_steps, "seed": seed, "model": generator.source})
    out = Path(out_dir)
    cols = 8
    tiles = []
    for r in range(0, min(n, 32), cols):  # rows of samples, each followed by the oracle's masks on them
        tiles += list(samples[r:r + cols]) + [overlay(samples[i], preds[i], K) for i in range(r, min(r + cols, n))]
    save_png(out / "samples_grid.png", image_grid(tiles, cols, scale=3))
    write_json(out / "sample_report.json", report)
    return report
