"""Segmenter study: which DeepLabV3 setting learns most from a run's synthetic pairs?

The same finalized run, the same real images to pick the epoch on, several training settings against
a baseline (the demo's: input x2, 6 epochs, synthetic pairs only), over DeepLab training seeds:

- input x1 / x4: DeepLab on the images upsampled less or more (output stride 8 leaves 4x4 maps of a
  32-px image at x1); x4 costs about three times a x2 step;
- + real: the labelled real images mixed into every epoch at a stated share (`train-deeplab --real`),
  a slightly longer epoch (the real images are repeated to reach their share);
- 2x epochs: the baseline, or + real, trained twice as long (twice the budget, said so in the table).
- U-Net: smp's U-Net on the same ResNet-18 encoder, whose decoder returns to full resolution (the
  small parts are 3-4 px wide), + real.
- cosine: the learning rate decays to 0 over the run (constant Adam otherwise), + real.

Each setting's difference to the baseline has an interval that resamples the test images (paired) and
the training seeds; the training wall time is measured per run. Resumable: every DeepLab is kept.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import OptionError
from .common import write_study, write_study_config
from .stats import hierarchical_bootstrap, interval_text, miou_of

# name -> (what it changes, the DeepLabTrainConfig fields it sets beside the baseline's)
SETTINGS = {"x2": ("baseline: input x2, synthetic pairs only", {}),
            "x1": ("input x1", {"input_scale": 1}),
            "x4": ("input x4", {"input_scale": 4}),
            "x2+real": ("input x2, + real labelled images ({share:.0%} of each epoch)", {"real": True}),
            "x2-long": ("input x2, 2x epochs (twice the budget)", {"epochs": 2}),
            "x2+real-long": ("input x2, + real labelled images ({share:.0%} of each epoch), 2x epochs (twice the "
                             "budget)", {"real": True, "epochs": 2}),
            "unet+real": ("U-Net instead of DeepLabV3 (full-resolution decoder), input x2, + real labelled images "
                          "({share:.0%} of each epoch)", {"real": True, "arch": "unet"}),
            "unet+real-x1": ("U-Net, input x1, + real labelled images ({share:.0%} of each epoch)",
                             {"real": True, "arch": "unet", "input_scale": 1}),
            "unet+real-x4": ("U-Net, input x4, + real labelled images ({share:.0%} of each epoch)",
                             {"real": True, "arch": "unet", "input_scale": 4}),
            "x2+real-cosine": ("input x2, + real labelled images ({share:.0%} of each epoch), cosine learning rate",
                               {"real": True, "lr_schedule": "cosine"}),
            "unet+real-cosine": ("U-Net, input x2, + real labelled images ({share:.0%} of each epoch), cosine "
                                 "learning rate", {"real": True, "arch": "unet", "lr_schedule": "cosine"})}


@dataclass
class SegmenterStudyConfig:
    settings: tuple[str, ...] = ("x2", "x1", "x4", "x2+real", "x2-long")  # the first is the baseline
    deeplab_seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 6  # the baseline's
    batch_size: int = 8
    real_fraction: float = 0.1
    bootstrap: int = 2000

    def validate(self) -> None:
        unknown = [s for s in self.settings if s not in SETTINGS]
        if unknown or not self.settings:
            raise OptionError("--settings", f"unknown setting(s) {unknown or '(none given)'}; choose from "
                                            f"{', '.join(SETTINGS)}")
        if not self.deeplab_seeds:
            raise OptionError("--deeplab-seeds", "need at least one seed")
        if not 0 < self.real_fraction < 1:
            raise OptionError("--real-fraction", f"must be in (0, 1), got {self.real_fraction}")

    @classmethod
    def quick(cls) -> "SegmenterStudyConfig":
        return cls(settings=("x2", "x1", "x2+real"), deeplab_seeds=(0,), epochs=1, batch_size=2, bootstrap=50)

    def training(self, name: str, real_dir: str) -> dict:
        """The DeepLab training arguments of one setting."""
        fields = dict(SETTINGS[name][1])
        args = {"epochs": self.epochs * fields.pop("epochs", 1), "input_scale": fields.pop("input_scale", 2)}
        for key in ("arch", "lr_schedule"):
            if key in fields:
                args[key] = fields.pop(key)
        if fields.pop("real", False):
            args.update(real=real_dir, real_fraction=self.real_fraction)
        return args


def run_segmenter_study(out_dir: str | Path, run: str | Path, data: str | Path, cfg: SegmenterStudyConfig, *,
                        workers: int = 1, threads: int | None = None, device: str = "cpu",
                        progress: bool = True) -> dict:
    from ..data.folders import read_labelled, resolve_split
    from ..environment import provenance
    from ..io import read_json
    from ..segmenters.metrics import iou_per_class
    from .common import deeplab_over_seeds
    cfg.validate()
    card_path = Path(run) / "dataset_card.json"
    if not card_path.is_file():
        raise OptionError("--run", f"{run} is not a finalized run (no dataset_card.json): run `datasetddpm finalize`")
    card = read_json(card_path)
    K, ignore = len(card["classes"]), card["ignore_label"]
    test = read_labelled(resolve_split(data, "test"), K, ignore)
    real_dir = str(resolve_split(data, "train").resolve())
    out = Path(out_dir)
    write_study_config(out, {"study": "segmenter", **asdict(cfg), "run": str(run), "data": str(data)})
    rows, base = {}, None
    for name in cfg.settings:
        args = cfg.training(name, real_dir)
        cms = deeplab_over_seeds(run, data, out / f"deeplab-{name}", test, cfg.deeplab_seeds,
                                 batch_size=cfg.batch_size, num_classes=K, ignore_label=ignore, workers=workers,
                                 threads=threads, device=device, progress=progress, **args)
        per_seed = [miou_of(c, ignore) for c in cms]
        seconds = [json.loads((out / f"deeplab-{name}" / f"seed-{s}" / "train_seconds.json").read_text())["seconds"]
                   for s in cfg.deeplab_seeds]
        iou = [iou_per_class(c.sum(0), ignore) for c in cms]  # per seed, over the test set
        rows[name] = {"what": SETTINGS[name][0].format(share=cfg.real_fraction), **args,
                      "miou_mean": float(np.mean(per_seed)), "miou_std": float(np.std(per_seed)),
                      "miou_per_seed": per_seed, "train_seconds_mean": float(np.mean(seconds)),
                      "iou": {c: float(np.mean([v[k] for v in iou])) for k, c in enumerate(card["classes"])}}
        rows[name].pop("real", None)
        if base is None:
            base = cms
        else:
            rows[name]["vs_baseline"] = hierarchical_bootstrap(base, cms, ignore_label=ignore, resamples=cfg.bootstrap)
    report = {"study": "segmenter", "pairs": card["counts"]["kept"], "test_images": len(test),
              "deeplab_seeds": list(cfg.deeplab_seeds), "rows": rows, **provenance()}
    write_study(out, report, segmenter_markdown, "segmenter")
    return report


def segmenter_markdown(report: dict) -> str:
    from .common import mean_std, seeds_text
    names = list(next(iter(report["rows"].values()))["iou"])
    spread = "mean ± std over " if len(report["deeplab_seeds"]) > 1 else ""
    lines = [f"DeepLabV3 (unless a setting says U-Net) on {report['pairs']} kept pairs, scored on "
             f"{report['test_images']} real test images. "
             "Train s: each run's wall time on this machine under its load at the time (for step costs measured "
             "side by side, see the budget table).", "",
             f"| setting | epochs | mIoU ({spread}{seeds_text(report)}) | Δ vs baseline (95 % CI) | train s | "
             + " | ".join(names) + " |", "|---|---:|---:|---|---:|" + "---:|" * len(names)]
    for r in report["rows"].values():
        delta = interval_text(r.get("vs_baseline"))
        lines.append(f"| {r['what']} | {r['epochs']} | {mean_std(r, report)} | {delta} | "
                     f"{r['train_seconds_mean']:.0f} | " + " | ".join(f"{100 * r['iou'][c]:.0f}" for c in names) + " |")
    return "\n".join(lines) + "\n"
