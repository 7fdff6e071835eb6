"""Direct DDPM mode on one 256-px image with the paper's LSUN-256 ADM configuration, on CPU: peak memory.

Ours: `direct.segment` — the UNet runs to block 12 at t = 50, 150, 250 (early stop), then `FusedHead`.
Baseline: the reference path on the same features — the (8448, 256, 256) tensor materialised
(`collect_features`, 2.2 GB) and the 10 members looped (`labelling_head.reference_label`).
Random weights (552.8M-parameter UNet, 28-class ensemble); each path runs in its own process so the
peaks are separate. Check: the two label maps agree on >= 99.9 % of pixels (they may differ only at
near-ties; tests/test_fused.py checks that property exactly). --quick: the same layout at 64 px with
a small UNet.

    .venv/bin/python benchmarks/lsun_direct_memory.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_utils as bu  # first: sets the OpenMP wait policy before torch loads
import numpy as np
import torch
from diffusers import UNet2DModel

from datasetddpm.direct import FeatureSource, segment
from datasetddpm.generators.adm import ADM_FLAG_SETS, adm_scheduler_config, adm_unet_config
from datasetddpm.generators.base import FeatureSpec
from datasetddpm.generators.diffusion import DiffusionGenerator

SPEC = FeatureSpec(blocks=(5, 6, 7, 8, 12), steps=(50, 150, 250))
QUICK_FLAGS = dict(image_size=64, num_channels=32, channel_mult="1,1,2,2,4,4", num_head_channels=32,
                   attention_resolutions="8,4")


def generator(quick: bool) -> DiffusionGenerator:
    from dataclasses import replace
    flags = ADM_FLAG_SETS["lsun_256"]
    if quick:
        flags = replace(flags, **QUICK_FLAGS)
    torch.manual_seed(0)
    return DiffusionGenerator(UNet2DModel(**adm_unet_config(flags)), adm_scheduler_config(flags))


def child(kind: str, quick: bool, out: Path) -> dict:
    from labelling_head import member_mlps, reference_label, trained_ish_ensemble
    gen = generator(quick)
    side = gen.resolution
    image = torch.randint(0, 256, (1, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    model_mb = bu.rss_mb()
    t = time.perf_counter()
    maps = gen.feature_maps(image, SPEC)
    ens = trained_ish_ensemble(maps, (side, side), num_classes=29)
    setup_s = time.perf_counter() - t
    del maps  # each path below computes its own features
    t = time.perf_counter()
    if kind == "ours":
        labels = segment(FeatureSource(gen, SPEC), ens, image.permute(0, 2, 3, 1).numpy(), progress=False).labels[0]
    else:
        maps = gen.feature_maps(image, SPEC)
        labels = reference_label(member_mlps(ens), maps, (side, side))[0].numpy()
    seconds = time.perf_counter() - t
    np.save(out / f"{kind}.npy", labels.astype(np.int64))
    return {"peak_rss_mb": round(bu.peak_rss_mb(), 1), "rss_after_model_mb": round(model_mb, 1),
            "seconds": round(seconds, 1), "setup_seconds": round(setup_s, 1),
            "features_per_pixel": sum(gen.feature_channels(SPEC))}


def run(quick: bool = False, threads: int = 2) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="lsun-direct-"))
    results = {}
    for kind in ("ours", "reference"):
        cmd = [sys.executable, __file__, "--child", kind, "--tmp", str(tmp), "--threads", str(threads)]
        proc = subprocess.run(cmd + (["--quick"] if quick else []), capture_output=True, text=True, check=True)
        results[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    agree = float((np.load(tmp / "ours.npy") == np.load(tmp / "reference.npy")).mean())
    ours, ref = results["ours"], results["reference"]
    return {**bu.header(threads),
            "what": "direct mode, one image, LSUN-256 ADM (random weights), blocks 5,6,7,8,12 x t 50,150,250"
                    + (" [quick: 64 px, 32 channels]" if quick else "")
                    + "; each path in its own process; 'seconds' = UNet passes + head",
            "ours": ours, "reference": ref,
            "ratio": ref["peak_rss_mb"] / ours["peak_rss_mb"],
            "goals": None if quick else {"ours_peak_le_8_GB": ours["peak_rss_mb"] <= 8192},
            "check": {"passed": agree >= 0.999, "label_agreement": agree}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="folder for the JSON (default benchmarks/results; --quick: print only)")
    parser.add_argument("--child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.quick, Path(args.tmp))))
        return
    result = run(args.quick, args.threads)
    print(bu.json_dumps(result))
    if args.out or not args.quick:
        bu.write_result("lsun_direct_memory", result, args.out)


if __name__ == "__main__":
    main()
