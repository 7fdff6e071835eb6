"""Retrain the embedded DDPM on a lent GPU within a wall-clock budget, and judge its samples, in one command.

    python3 training/gpu_ddpm.py --out $OUT                               # on a GPU machine (~8 min)
    python3 training/gpu_ddpm.py --out /tmp/g --quick --device cpu        # the same code, tiny (tests)

For each recipe (the shipped UNet at a GPU batch, and one 1.5x as wide with attention at 8 px): a short
calibration run times the real training loop (checkpoints included) on this device; the recipe's
share of --minutes then fixes its steps, and `train_ddpm` (the code behind `datasetddpm train-ddpm`)
trains that many with a cosine schedule over exactly those steps. `check-samples` judges each result
on 1000 samples (DDIM-50 and the demo's DDIM-20) against the same real images as the shipped model's
committed reports. The run folders (resumable: EMA checkpoint, train_log.jsonl, train_state) are
kept under --work; --out gets what a lent machine can send back (at most 8 files, one folder level):
gpu_ddpm.json (each recipe's steps, seconds, loss, the `datasetddpm train-ddpm` command that reruns
it, and its full sample reports) and, per recipe, NAME.safetensors + NAME.config.json (the EMA
checkpoint, loadable as a model folder once renamed to model.safetensors / config.json) and
NAME.train_log.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# name: train-ddpm options. Batch 128 at 4x the shipped run's lr-per-image is sqrt-scaled (2x).
RECIPES = {"embedded-b128": dict(channels=None, attention_res=None, batch_size=128, lr=1e-3),
           "wide-attn8-b128": dict(channels="48,96,96", attention_res="8", batch_size=128, lr=5e-4)}
QUICK = {"embedded-b128": dict(channels="32,32", attention_res=None, batch_size=4, lr=1e-3),
         "wide-attn8-b128": dict(channels="32,64", attention_res="16", batch_size=4, lr=5e-4)}


def _config(recipe: dict, steps: int, checkpoint_every: int, pool_size: int, seed: int):
    from datasetddpm.generators.train_ddpm import DDPMTrainConfig
    unet = {"block_out_channels": tuple(int(c) for c in recipe["channels"].split(","))} if recipe["channels"] else {}
    attention = tuple(int(a) for a in recipe["attention_res"].split(",")) if recipe["attention_res"] else ()
    return DDPMTrainConfig(steps=steps, batch_size=recipe["batch_size"], lr=recipe["lr"], warmup=min(200, steps // 10),
                           lr_schedule="cosine", schedule_steps=steps, min_lr_ratio=0.1, ema_decay=0.9995,
                           unet=unet, attention_resolutions=attention, pool_size=pool_size,
                           checkpoint_every=checkpoint_every, seed=seed)


def _command(cfg, recipe: dict, device: str) -> str:
    """The `datasetddpm train-ddpm` line that continues (or reruns) this run."""
    parts = ["datasetddpm train-ddpm --out <out>", f"--steps {cfg.steps}", f"--batch-size {cfg.batch_size}",
             f"--lr {cfg.lr:g}", f"--warmup {cfg.warmup}", "--lr-schedule cosine", f"--schedule-steps {cfg.schedule_steps}",
             f"--ema-decay {cfg.ema_decay:g}", f"--pool-size {cfg.pool_size}", f"--checkpoint-every {cfg.checkpoint_every}",
             f"--seed {cfg.seed}", f"--device {device}"]
    if recipe["channels"]:
        parts.append(f"--channels {recipe['channels']}")
    if recipe["attention_res"]:
        parts.append(f"--attention-res {recipe['attention_res']}")
    return " ".join(parts)


def run(out: Path, work: Path, minutes: float, device_spec: str, quick: bool, names: list[str]) -> dict:
    import shutil

    import torch
    from datasetddpm.devices import resolve_device
    from datasetddpm.data.oracle import check_samples
    from datasetddpm.generators.loading import load_generator
    from datasetddpm.generators.train_ddpm import train_ddpm
    from datasetddpm.io import write_json
    from datasetddpm.presets import EMBEDDED_ORACLE_DIR
    from datasetddpm.reporting.hooks import FigureWriter  # training_curves.png, as `train-ddpm` draws it
    from datasetddpm.segmenters.model import load_segmenter
    device = resolve_device(device_spec)
    recipes = QUICK if quick else RECIPES
    calib, every, pool, n = (4, 2, 64, 8) if quick else (150, 1000, 10000, 1000)
    oracle = load_segmenter(EMBEDDED_ORACLE_DIR).to(device)
    result = {"device": str(device), "torch": torch.__version__, "quick": quick, "minutes": minutes,
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "recipes": {}}
    share = minutes * 60 / len(names)
    for name in names:
        recipe = recipes[name]
        t0 = time.perf_counter()  # the calibration run: the real loop, one checkpoint, its own folder
        train_ddpm(work / "calibration" / name, _config(recipe, calib, calib, pool, 0), progress=False, device=device,
                   log=lambda *_: None, figures=FigureWriter())
        per_step = (time.perf_counter() - t0) / calib
        steps = max(every, int(share * 0.9 / per_step) // every * every)  # 10 % for the sample checks
        cfg = _config(recipe, steps, every, pool, 0)
        t0 = time.perf_counter()
        ema = train_ddpm(work / name, cfg, progress=False, device=device, log=print, figures=FigureWriter())
        seconds = time.perf_counter() - t0
        generator = load_generator(str(ema), device)
        reports = {}
        for steps_ in (50, 20):
            reports[f"ddim-{steps_}"] = check_samples(generator, oracle, work / name / f"samples-ddim{steps_}", n=n,
                                                      num_steps=steps_, batch_size=4 if quick else 250, progress=False)
        log = [json.loads(line) for line in (work / name / "train_log.jsonl").read_text().splitlines() if line.strip()]
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ema / "model.safetensors", out / f"{name}.safetensors")
        shutil.copyfile(ema / "config.json", out / f"{name}.config.json")
        shutil.copyfile(work / name / "train_log.jsonl", out / f"{name}.train_log.jsonl")
        result["recipes"][name] = {
            "recipe": recipe, "config": asdict(cfg.resolved()), "command": _command(cfg, recipe, "cuda"),
            "parameters": sum(p.numel() for p in generator.unet.parameters()),
            "calibration_seconds_per_step": round(per_step, 4), "steps": steps, "train_seconds": round(seconds, 1),
            "final_loss": log[-1]["loss"], "samples": reports}
        print(f"{name}: {steps} steps in {seconds:.0f} s, loss {log[-1]['loss']:.4f}, flip-consistency "
              f"{100 * reports['ddim-50']['samples']['flip_consistency_miou']:.1f} (ddim-50)", flush=True)
    write_json(out / "gpu_ddpm.json", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_ddpm.json and each recipe's EMA weights and log")
    parser.add_argument("--work", default="/tmp/gpu_ddpm", help="folder for the resumable run folders")
    parser.add_argument("--minutes", type=float, default=7.0, help="training wall-clock budget, all recipes together")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma list of {', '.join(RECIPES)}")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--quick", action="store_true", help="tiny UNets and budgets (CPU tests)")
    args = parser.parse_args()
    names = [n for n in args.recipes.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown or not names:
        parser.error(f"--recipes: unknown {unknown}; choose from {', '.join(RECIPES)}")
    run(Path(args.out), Path(args.work), args.minutes, args.device, args.quick, names)


if __name__ == "__main__":
    main()
