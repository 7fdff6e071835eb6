"""The GPU suite: the commands users run, timed through their own functions, at LSUN-256 shapes.

    python benchmarks/gpu.py                      # on a GPU machine (about 8 min on one GPU)
    python benchmarks/gpu.py --quick --device cpu # the same code on a tiny model (default tests)

What it times is what `datasetddpm sample`, `label` and `train-deeplab` run: `sample_run`, `label_run`
and `train_deeplab_run`, with the CLI's defaults (batch 50, shards of 500, DDIM-50, 8 images x 3 steps
per feature call), on the LSUN-256 ADM configuration (552.8M parameters, random weights; the paper's
features: blocks 5,6,7,8,12 x t 50,150,250 = 8448 per pixel, a 10-member ensemble), once per speed
setting (--precision fp32 | tf32 | bf16 | fp16, and bf16 with --compile). Per setting: samples/s of
`sample` and of `label`, UNet forwards/s, the fraction of the GPU's dense bf16 peak the sampling
reaches (MFU, from the forward's FLOPs counted by torch's FlopCounterMode), peak GPU memory and host
RSS, and the hours for 50K kept pairs on 1 and 4 GPUs from the measured rate. Settings are run
best-first and skipped (said so) once the time budget is spent. Then `train-deeplab` on the sampled
pairs (one epoch, CLI defaults, --amp bf16 on a GPU).

Writes gpu[_quick].json into --out (default benchmarks/results) with the device name.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import bench_utils  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from bench_utils import header, json_dumps, peak_rss_mb, write_result

import numpy as np
import torch

from datasetddpm.devices import resolve_device
from datasetddpm.ensemble.model import EnsembleConfig, PixelEnsemble, save_ensemble
from datasetddpm.generators.adm import ADM_FLAG_SETS, adm_scheduler_config, adm_unet_config
from datasetddpm.generators.base import FeatureSpec
from datasetddpm.generators.diffusion import save_checkpoint
from datasetddpm.pipeline import generate
from datasetddpm.pipeline.config import SampleConfig
from datasetddpm.pipeline.finalize import finalize_run
from datasetddpm import workflows
from datasetddpm.hooks import drawing
from datasetddpm.reporting.hooks import FigureWriter

PAPER_SPEC = FeatureSpec(blocks=(5, 6, 7, 8, 12), steps=(50, 150, 250))
TARGET_PAIRS, KEEP = 50_000, 0.9
BF16_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "GH200": 989.4, "A100": 312.0, "L40S": 362.1, "A10": 125.0}
SETTINGS = [("bf16", False), ("bf16", True), ("tf32", False), ("fp16", False), ("fp32", False)]


def projection_hours(samples_per_second: float, gpus: int) -> float:
    """Hours for TARGET_PAIRS kept pairs (TARGET_PAIRS / KEEP samples before the 10 % drop) on `gpus` GPUs."""
    return TARGET_PAIRS / KEEP / (samples_per_second * gpus) / 3600


def peak_tflops(device_name: str) -> float | None:
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in device_name), None)


def _tiny_unet_config() -> dict:
    return dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(16, 32, 32), layers_per_block=1,
                down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3, norm_num_groups=8)


def make_model(root: Path, quick: bool) -> tuple[Path, Path, FeatureSpec]:
    """A random-weight checkpoint at LSUN-256 shapes (tiny in --quick) and an ensemble on its features."""
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    if quick:
        config, sched, spec = _tiny_unet_config(), dict(num_train_timesteps=1000), FeatureSpec((1, 4), (50, 150))
    else:
        flags = ADM_FLAG_SETS["lsun_256"]
        config, sched, spec = adm_unet_config(flags), adm_scheduler_config(flags), PAPER_SPEC
    with torch.device("meta"):
        unet = UNet2DModel(**config)
    unet = unet.to_empty(device="cpu")
    for p in unet.parameters():  # small random weights: finite activations through 50 DDIM steps
        torch.nn.init.normal_(p, std=0.02)
    save_checkpoint(root / "model", unet, sched)
    from datasetddpm.generators.loading import load_generator
    channels = load_generator(root / "model", "meta").feature_channels(spec)
    cfg = EnsembleConfig(in_dim=sum(channels), num_classes=28, members=10, model=str(root / "model"),
                         class_names=tuple(f"class_{i}" for i in range(28)),
                         features={"blocks": list(spec.blocks), "steps": list(spec.steps), "noise_seed": 0})
    save_ensemble(root / "ens", PixelEnsemble(cfg, seed=1).eval())
    return root / "model", root / "ens", spec


def forward_flops(model: Path, device: torch.device) -> float:
    """FLOPs of one UNet forward on one image (torch's FlopCounterMode, which counts matmuls/convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode
    from datasetddpm.generators.loading import load_generator
    generator = load_generator(model, device)
    R = generator.resolution
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        generator.unet(torch.zeros(1, 3, R, R, device=device), torch.tensor([10], device=device))
    del generator
    return float(counter.get_total_flops())


def _timed(fn, device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, out


def time_setting(root: Path, model: Path, ens: Path, device: torch.device, precision: str, compile: bool,
                 n: int, quick: bool = False) -> dict:
    """`sample` then `label` of n samples (one shard) through their own functions, CLI defaults (--quick:
    DDIM-5, as CPU autocast is slow)."""
    name = precision + ("+compile" if compile else "")
    run = root / f"run-{name}"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cfg = SampleConfig(model=str(model), n=n)  # the CLI's defaults: DDIM-50, batch 50, shards of 500
    if quick:
        cfg = SampleConfig(model=str(model), n=n, sampling_steps=5)
    dev = str(device)
    sample_s, _ = _timed(lambda: generate.sample_run(run, cfg, device=dev, precision=precision, compile=compile,
                                                     progress=False), device)
    label_s, _ = _timed(lambda: generate.label_run(run, ens, device=dev, precision=precision, progress=False), device)
    row = {"setting": name, "precision": precision, "compile": compile, "samples": n,
           "batch_size": cfg.batch_size, "sampling_steps": cfg.sampling_steps,
           "sample_seconds": round(sample_s, 2), "label_seconds": round(label_s, 2),
           "sample_samples_per_second": round(n / sample_s, 4), "label_samples_per_second": round(n / label_s, 4),
           "samples_per_second": round(n / (sample_s + label_s), 4),
           "unet_forwards_per_second": round(n * cfg.sampling_steps / sample_s, 2)}
    if device.type == "cuda":
        row["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    row["peak_rss_mb"] = round(peak_rss_mb(), 1)
    row["hours_50k_pairs"] = {g: round(projection_hours(row["samples_per_second"], g), 2) for g in (1, 4)}
    return row


def train_deeplab_on(root: Path, run: Path, device: torch.device, quick: bool) -> dict:
    """`train-deeplab` (one epoch, CLI defaults otherwise) on a finalized run's pairs; real images: 4 pairs."""
    from PIL import Image
    from datasetddpm.data.generated import GeneratedPairs
    finalize_run(run)
    val = root / "val" / "train"
    val.mkdir(parents=True)
    pairs = GeneratedPairs(run)
    for i in range(4):
        image, mask = pairs[i]
        Image.fromarray(image).save(val / f"{i}.png")
        np.save(val / f"{i}.npy", mask.astype(np.int64))
    cfg = workflows.deeplab_config(None, epochs=1, augment=False)
    amp = device.type == "cuda"
    with drawing(FigureWriter()):  # the command draws its training curves each epoch: timed as a user runs it
        seconds, result = _timed(lambda: workflows.train_deeplab_run(run, root / "val", root / "deeplab", cfg,
                                                                     device=str(device), amp=amp, progress=False),
                                 device)
    steps = len(pairs) // cfg.batch_size
    return {"pairs": len(pairs), "batch_size": cfg.batch_size, "steps": steps, "seconds": round(seconds, 2),
            "steps_per_second": round(steps / seconds, 3), "amp": amp, "ok": result["best_epoch"] == 0}


def run(quick: bool, device_spec: str, budget_s: float) -> dict:
    device = resolve_device(device_spec)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {**header(torch.get_num_threads()), "benchmark": "gpu", "quick": quick, "torch": torch.__version__,
              "device": str(device), "device_name": device_name,
              "model": "tiny UNet (32 px)" if quick else "ADM LSUN-256 (552.8M, random weights), 8448 features/pixel"}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-suite-") as tmp:
        root = Path(tmp)
        model, ens, _ = make_model(root, quick)
        flops = forward_flops(model, device)
        peak = peak_tflops(device_name)
        result.update(forward_tflop=round(flops / 1e12, 4), bf16_peak_tflops=peak)
        rows, n = [], 50
        # CPU autocast is an order of magnitude slower than fp32 on CPUs without bf16 units: --quick on a CPU
        # times fp32 only (docs/studies/precision measures what bf16 changes in the labels).
        for precision, compile in SETTINGS if device.type == "cuda" else [("fp32", False)]:
            if compile and device.type != "cuda":
                rows.append({"setting": "bf16+compile", "skipped": "torch.compile is timed on GPUs only"})
                continue
            if time.perf_counter() - t_start > budget_s:
                rows.append({"setting": precision + ("+compile" if compile else ""), "skipped": "time budget spent"})
                continue
            try:
                row = time_setting(root, model, ens, device, precision, compile, n, quick)
            except Exception as e:  # a setting this torch / GPU cannot run is a result, not a crash
                row = {"setting": precision + ("+compile" if compile else ""),
                       "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
            if "sample_seconds" in row and peak:
                row["mfu_sampling"] = round(row["unet_forwards_per_second"] * flops / (peak * 1e12), 4)
            rows.append(row)
        result["settings"] = rows
        done = [r for r in rows if "samples_per_second" in r]
        if done:
            best = max(done, key=lambda r: r["samples_per_second"])
            result["train_deeplab"] = train_deeplab_on(root, root / f"run-{best['setting']}", device, quick)
            result["best"] = {"setting": best["setting"], "samples_per_second": best["samples_per_second"],
                              "hours_50k_pairs": best["hours_50k_pairs"]}
    result["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model (CPU tests)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--budget", type=float, default=360, help="seconds after which settings are skipped")
    parser.add_argument("--out", help="folder for the JSON (default benchmarks/results)")
    args = parser.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    result = run(args.quick, args.device, args.budget)
    print(json_dumps(result))
    path = write_result("gpu_quick" if args.quick else "gpu", result, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
