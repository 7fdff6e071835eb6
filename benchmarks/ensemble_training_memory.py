"""Paper-scale ensemble training memory: 50 images x 256^2 pixels x d = 8448 features.

Ours: the maps stay at native resolution in a `FeatureBank` (float16 ~2.5 GB, float32 ~5 GB; LSUN
shapes, random values), the global pixel shuffle is a permutation of pixel indices, each batch's
features are gathered on the fly, and the real training step runs (`train_ensemble` with
`max_steps`). Each bank dtype trains in its own subprocess, so each peak RSS (VmHWM) is its own.

Reference (ddpm-segmentation `prepare_data`), computed, not run at this size:
X = torch.zeros(50, 8448, 256, 256) float32 is 50*256^2*8448*4 B = 111 GB, and
`X.permute(1, 0, 2, 3).reshape(d, -1)` copies it while the original is alive (222 GB), before
`X[y != ignore]` copies the labelled rows once more. To check that formula, the reference's
materialisation and training loop (one member, DataLoader shuffle, batch 64) are also run for real
on 1 image (4 in --quick) in a subprocess; its step trains one member where ours trains all ten,
so speeds are compared as member-steps per second.

Check: features gathered from the bank equal the materialised ones (upsample_concat, as the
reference builds them) at sampled pixels, within float16 rounding for the float16 bank.

    .venv/bin/python benchmarks/ensemble_training_memory.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import bench_utils as bu  # first: sets the OpenMP wait policy before torch loads
import torch
from labelling_head import LSUN_BLOCKS, QUICK_BLOCKS, random_maps

from datasetddpm.ensemble.model import EnsembleConfig
from datasetddpm.ensemble.train import EnsembleTrainConfig, train_ensemble
from datasetddpm.features import FeatureBank, upsample_concat

CLASSES, IGNORE, STEPS_PER_IMAGE = 28, 255, 3
FULL = {"images": 50, "side": 256, "blocks": LSUN_BLOCKS, "steps": 2000, "reference_images": 1}
QUICK = {"images": 4, "side": 64, "blocks": QUICK_BLOCKS, "steps": 30, "reference_images": 4}


def random_mask(side: int, seed: int) -> torch.Tensor:
    """Blocky random labels (8x8 cells of 28 classes) with ~5 % ignored pixels."""
    g = torch.Generator().manual_seed(10_000 + seed)
    cells = torch.randint(0, CLASSES, (1, 1, 8, 8), generator=g).float()
    mask = torch.nn.functional.interpolate(cells, size=(side, side), mode="nearest")[0, 0].long()
    mask[torch.rand(side, side, generator=g) < 0.05] = IGNORE
    return mask


def gather_check(bank: FeatureBank, cfg: dict, dtype: torch.dtype) -> dict:
    """Gathered features vs the materialised ones (from the float32 maps) at 256 sampled pixels of
    three images; float16 storage is allowed its rounding, 2^-11 of the largest value involved."""
    side, g = cfg["side"], torch.Generator().manual_seed(1)
    worst, bound = 0.0, 1e-5
    for i in sorted({0, 1, cfg["images"] - 1}):
        maps = random_maps(cfg["blocks"], STEPS_PER_IMAGE, seed=i)
        y, x = (torch.randint(0, side, (256,), generator=g) for _ in range(2))
        got = bank.gather(torch.full_like(y, i), y, x)
        # One map at a time: upsample_concat of all maps would need the 2.2 GB (d, H, W) tensor.
        want = torch.cat([upsample_concat([m], (side, side))[0][:, y, x].T for m in maps], dim=1)
        worst = max(worst, float((got - want).abs().max()))
        if dtype == torch.float16:
            bound = max(bound, 2 ** -11 * max(float(m.abs().max()) for m in maps))
    return {"pixels": 3 * 256, "max_abs_diff": worst, "allowed": bound, "passed": worst <= bound}


def child_ours(cfg: dict, dtype: torch.dtype) -> dict:
    side = cfg["side"]
    t = time.perf_counter()
    bank = FeatureBank(side, side, dtype, capacity=cfg["images"])
    for i in range(cfg["images"]):
        bank.add(random_maps(cfg["blocks"], STEPS_PER_IMAGE, seed=i), random_mask(side, i)[None])
    bank.finalize()
    build = time.perf_counter() - t
    rss_bank = bu.rss_mb()
    ecfg = EnsembleConfig(in_dim=bank.dim, num_classes=CLASSES, ignore_label=IGNORE)
    t = time.perf_counter()
    _, log = train_ensemble(bank, ecfg, EnsembleTrainConfig(max_steps=cfg["steps"]), progress=False)
    seconds = time.perf_counter() - t
    peak = bu.peak_rss_mb()  # before the check, which materialises a few maps
    return {"bank_dtype": str(dtype).removeprefix("torch."), "bank_mb": round(bank.nbytes() / 2**20, 1),
            "bank_build_seconds": round(build, 1), "rss_after_bank_mb": round(rss_bank, 1),
            "labelled_pixels": log["pixels"], "steps": log["iterations"], "train_seconds": round(seconds, 1),
            "steps_per_s": log["iterations"] / seconds, "member_steps_per_s": 10 * log["iterations"] / seconds,
            "peak_rss_mb": round(peak, 1), "check": gather_check(bank, cfg, dtype)}


def child_reference(cfg: dict) -> dict:
    """The reference's prepare_data + one member's training loop, on `reference_images` images."""
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    n, side = cfg["reference_images"], cfg["side"]
    d = STEPS_PER_IMAGE * sum(c for c, _ in cfg["blocks"])
    X = torch.zeros((n, d, side, side), dtype=torch.float)
    y = torch.zeros((n, side, side), dtype=torch.uint8)
    for row in range(n):
        X[row] = upsample_concat(random_maps(cfg["blocks"], STEPS_PER_IMAGE, seed=row), (side, side))[0]
        y[row] = random_mask(side, row)
    X = X.permute(1, 0, 2, 3).reshape(d, -1).permute(1, 0)
    y = y.flatten()
    X, y = X[y != IGNORE], y[y != IGNORE]
    peak_data = bu.peak_rss_mb()
    classifier = nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.BatchNorm1d(128), nn.Linear(128, 32), nn.ReLU(),
                               nn.BatchNorm1d(32), nn.Linear(32, CLASSES))
    optimizer = torch.optim.Adam(classifier.parameters(), lr=0.001)
    criterion = nn.CrossEntropyLoss()
    steps, t = 0, time.perf_counter()
    for X_batch, y_batch in DataLoader(TensorDataset(X, y), batch_size=64, shuffle=True):
        optimizer.zero_grad()
        criterion(classifier(X_batch), y_batch.long()).backward()
        optimizer.step()
        steps += 1
        if steps == cfg["steps"]:
            break
    seconds = time.perf_counter() - t
    x_bytes = n * side * side * d * 4
    return {"images": n, "X_mb": round(x_bytes / 2**20, 1), "peak_rss_after_data_mb": round(peak_data, 1),
            "peak_rss_mb": round(bu.peak_rss_mb(), 1), "member_steps": steps,
            "member_steps_per_s": steps / seconds}


def run_child(kind: str, quick: bool, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--threads", str(threads)] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False, threads: int = 2) -> dict:
    cfg = QUICK if quick else FULL
    side, n = cfg["side"], cfg["images"]
    d = STEPS_PER_IMAGE * sum(c for c, _ in cfg["blocks"])
    ours = {kind: run_child(kind, quick, threads) for kind in ("float16", "float32")}
    reference = run_child("reference", quick, threads)
    x_gb = n * side * side * d * 4 / 1e9
    return {
        **bu.header(threads),
        "what": f"ensemble training: {n} images x {side}^2 px x d = {d} features, 10 members, batch 64, "
                f"{cfg['steps']} steps; each configuration in its own process",
        "ours": ours,
        "reference_computed": {
            "formula": f"X float32 = {n} x {side}^2 x {d} x 4 B; permute().reshape() copies it while X is alive",
            "X_gb": round(x_gb, 3), "peak_gb_at_least": round(2 * x_gb, 3)},
        "reference_measured_small": {**reference, "note": "the reference's own materialisation at a size that "
                                     "fits; peak after data ~ 2 x X + the interpreter and torch"},
        "ratio": {"reference_peak_over_ours_float16": 2 * x_gb * 1e9 / 2**20 / ours["float16"]["peak_rss_mb"],
                  "reference_peak_over_ours_float32": 2 * x_gb * 1e9 / 2**20 / ours["float32"]["peak_rss_mb"],
                  "member_steps_per_s_ours_float16_over_reference":
                      ours["float16"]["member_steps_per_s"] / reference["member_steps_per_s"]},
        "goals": None if quick else {"float16_peak_le_4_GB": ours["float16"]["peak_rss_mb"] <= 4096,
                                     "float32_peak_le_8_GB": ours["float32"]["peak_rss_mb"] <= 8192},
        "check": {"passed": all(o["check"]["passed"] for o in ours.values()),
                  **{k: o["check"] for k, o in ours.items()}},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="4 images at 64 px, d = 1056, 30 steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="folder for the JSON (default benchmarks/results; --quick: print only)")
    parser.add_argument("--child", choices=["float16", "float32", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        cfg = QUICK if args.quick else FULL
        out = child_reference(cfg) if args.child == "reference" else child_ours(cfg, getattr(torch, args.child))
        print(json.dumps(out))
        return
    result = run(args.quick, args.threads)
    print(bu.json_dumps(result))
    if args.out or not args.quick:
        bu.write_result("ensemble_training_memory", result, args.out)


if __name__ == "__main__":
    main()
