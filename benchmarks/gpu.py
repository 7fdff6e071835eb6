"""The GPU suite: paper-scale generation speed and the real multi-process paths, in one command.

    python benchmarks/gpu.py                      # on a GPU machine (<= 8 min on one GPU)
    python benchmarks/gpu.py --quick --device cpu # the same code on tiny settings (default tests)

1. Fused sample + label throughput on the LSUN-256 ADM configuration (552.8M parameters, random
   weights): DDIM-50 sampling, then the paper's features (blocks 5,6,7,8,12 x t 50,150,250 = 8448 per
   pixel) and a 10-member ensemble through the fused head, per variant: fp32, bf16 autocast,
   bf16 + channels_last, bf16 + channels_last + torch.compile. Peak GPU memory per variant.
2. End to end through the command line on tiny settings: `sample --gpus 1 --ensemble`, `finalize`,
   `train-deeplab --gpus 1 --amp` (NCCL, one rank), or `--workers 1 --device cpu` in --quick mode.
   DeepLab runs with `--no-augment`: augmentation is CPU work (tested on CPU), and leaving
   albumentations out keeps the wheels for a bare GPU machine small.
3. A projection: hours for 50K kept pairs (55.6K samples before the 10 % drop) on 4 GPUs at the best
   measured rate.

Writes benchmarks/results/gpu[_quick].json (or --out DIR) with the device name.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_utils  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from bench_utils import header, json_dumps, peak_rss_mb, write_result

import torch

from datasetddpm.devices import resolve_device
from datasetddpm.ensemble.fused import FusedHead
from datasetddpm.ensemble.model import EnsembleConfig, PixelEnsemble, save_ensemble
from datasetddpm.generators.adm import ADM_FLAG_SETS, adm_scheduler_config, adm_unet_config
from datasetddpm.generators.base import FeatureSpec
from datasetddpm.generators.diffusion import DiffusionGenerator, save_checkpoint

PAPER_SPEC = FeatureSpec(blocks=(5, 6, 7, 8, 12), steps=(50, 150, 250))
TARGET_PAIRS, KEEP, GPUS = 50_000, 0.9, 4
VARIANTS = [("fp32", {}), ("bf16", {"precision": "bf16"}),
            ("bf16+channels_last", {"precision": "bf16", "channels_last": True}),
            ("bf16+channels_last+compile", {"precision": "bf16", "channels_last": True, "compile": True})]


def _tiny_unet_config() -> dict:
    return dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(16, 32, 32), layers_per_block=1,
                down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3, norm_num_groups=8)


def _generator(quick: bool, device: torch.device) -> tuple[DiffusionGenerator, FeatureSpec]:
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    if quick:
        unet, sched, spec = UNet2DModel(**_tiny_unet_config()), dict(num_train_timesteps=1000), FeatureSpec((1, 4), (50, 150))
    else:
        flags = ADM_FLAG_SETS["lsun_256"]
        unet, sched, spec = UNet2DModel(**adm_unet_config(flags)), adm_scheduler_config(flags), PAPER_SPEC
    return DiffusionGenerator(unet.to(device), sched), spec


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _throughput(device: torch.device, quick: bool, batch: int, steps: int, repeats: int) -> list[dict]:
    rows = []
    for name, options in VARIANTS:
        if options.get("compile") and device.type != "cuda":
            rows.append({"variant": name, "skipped": "torch.compile is measured on GPUs only"})
            continue
        generator, spec = _generator(quick, device)
        generator.optimize(**options)
        channels = generator.feature_channels(spec)
        ensemble = PixelEnsemble(EnsembleConfig(in_dim=sum(channels), num_classes=28)).to(device).eval()
        head = FusedHead(ensemble, channels)
        R = generator.resolution
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seeds = iter(range(10**6))

        def one_batch():
            images = generator.sample_on_device([next(seeds) for _ in range(batch)], sampler="ddim", num_steps=steps)
            labels = []
            for i in range(batch):  # the head's activations grow with pixels: one 256-px image at a time
                maps = generator.feature_maps(images[i:i + 1], spec)
                labels.append(head(maps, (R, R))[0])
            return images, torch.cat(labels)

        try:
            t0 = time.perf_counter()
            one_batch()  # warm-up (and compilation)
            _sync(device)
            warmup = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(repeats):
                one_batch()
            _sync(device)
            seconds = time.perf_counter() - t0
        except Exception as e:  # a variant this torch / GPU cannot run is a result, not a crash
            rows.append({"variant": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
            continue
        row = {"variant": name, "batch": batch, "ddim_steps": steps, "samples": batch * repeats,
               "seconds": round(seconds, 3), "warmup_seconds": round(warmup, 1),
               "samples_per_second": round(batch * repeats / seconds, 4)}
        if device.type == "cuda":
            row["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        rows.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _cli(*args) -> float:
    """Run `python -m datasetddpm ARGS`; returns seconds; raises with the command's stderr on failure."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "datasetddpm", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"datasetddpm {' '.join(map(str, args[:1]))} failed: {done.stderr.strip()[-1500:]}")
    return round(time.perf_counter() - t0, 2)


def _end_to_end(device: torch.device) -> dict:
    """The real process-group paths on tiny settings: NCCL with one rank per GPU, or one CPU worker."""
    from diffusers import UNet2DModel
    parallel = ["--gpus", "1"] if device.type == "cuda" else ["--workers", "1", "--device", "cpu"]
    amp = ["--amp"] if device.type == "cuda" else []  # CPU bf16 autocast is slow on CPUs without bf16 units
    with tempfile.TemporaryDirectory(prefix="gpu-suite-") as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        save_checkpoint(tmp / "model", UNet2DModel(**_tiny_unet_config()), dict(num_train_timesteps=1000))
        from datasetddpm.data.procedural import CLASS_NAMES
        cfg = EnsembleConfig(in_dim=32 + 16, num_classes=7, members=3, model=str(tmp / "model"), class_names=CLASS_NAMES,
                             features={"blocks": [1, 4], "steps": [50], "noise_seed": 0})
        save_ensemble(tmp / "ens", PixelEnsemble(cfg, seed=1).eval())
        from datasetddpm.data.folders import write_procedural_dataset
        write_procedural_dataset(tmp / "data", train=4, test=4)
        result = {"mode": "nccl --gpus 1, --amp" if device.type == "cuda" else "gloo --workers 1 (cpu)"}
        result["sample_seconds"] = _cli("sample", "--out", tmp / "run", "--num-samples", 32, "--model", tmp / "model",
                                        "--sampling-steps", 5, "--batch-size", 16, "--shard-size", 16, "--ensemble",
                                        tmp / "ens", "--quiet", *parallel)
        result["finalize_seconds"] = _cli("finalize", "--out", tmp / "run")
        result["train_deeplab_seconds"] = _cli("train-deeplab", "--run", tmp / "run", "--val", tmp / "data", "--out",
                                               tmp / "deeplab", "--epochs", 1, "--batch-size", 4, "--quiet",
                                               "--no-augment", *amp, *parallel)
        result["ok"] = (tmp / "deeplab" / "best" / "model.safetensors").is_file()
    return result


def run(quick: bool, device_spec: str) -> dict:
    device = resolve_device(device_spec)
    result = {**header(torch.get_num_threads()), "benchmark": "gpu", "quick": quick, "torch": torch.__version__,
              "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    batch, steps, repeats = (2, 3, 1) if quick else (8, 50, 2)
    result["model"] = "tiny UNet (32 px)" if quick else "ADM LSUN-256 (552.8M, random weights), 8448 features/pixel"
    result["throughput"] = _throughput(device, quick, batch, steps, repeats)
    rates = [r["samples_per_second"] for r in result["throughput"] if "samples_per_second" in r]
    if rates:
        best = max(rates)
        samples = TARGET_PAIRS / KEEP
        result["projection"] = {"kept_pairs": TARGET_PAIRS, "samples": round(samples), "gpus": GPUS,
                                "best_samples_per_second_per_gpu": best,
                                "hours": round(samples / (best * GPUS) / 3600, 2)}
    result["end_to_end"] = _end_to_end(device)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and settings (CPU tests)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--out", help="folder for the JSON (default benchmarks/results)")
    args = parser.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    result = run(args.quick, args.device)
    print(json_dumps(result))
    path = write_result("gpu_quick" if args.quick else "gpu", result, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
