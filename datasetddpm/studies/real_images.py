"""Real-images study: with unlabelled real images at hand, is sampling worth it?

The same ensemble labels (1) `pairs` generated samples, as DatasetDDPM does; (2) `pairs` of the user's
unlabelled real images (`label-images`); (3) both together (2 x `pairs`). Each arm keeps its least
uncertain pairs after the 10 % drop, DeepLabV3 trains on them over several seeds, and all are scored
on the same real test images, with intervals for the difference to the synthetic arm.
Resumable like every study.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data.folders import read_labelled, resolve_split
from ..data.images import list_images
from ..errors import OptionError
from ..segmenters.metrics import iou_per_class
from .common import QUICK_SAMPLE_AND_DEEPLAB, SampleAndDeepLab, deeplab_over_seeds, write_study, write_study_config
from .common import mean_std as _mean_std, seeds_text as _seeds, segmenter_name, segmenter_note
from .stats import hierarchical_bootstrap, interval_text, miou_of

ARMS = ("synthetic", "real unlabelled", "both")  # the first is the baseline


@dataclass
class RealImagesStudyConfig(SampleAndDeepLab):
    pairs: int = 500  # kept pairs of the synthetic and the real arm (the "both" arm keeps twice as many)

    @classmethod
    def quick(cls, model: str) -> "RealImagesStudyConfig":
        return cls(model=model, pairs=3, batch_size=2, shard_size=2, **QUICK_SAMPLE_AND_DEEPLAB)

    @property
    def samples(self) -> int:
        return math.ceil(self.pairs / 0.9)


def _union_folder(folder: Path, real: list[Path], synthetic_run: Path) -> Path:
    """Links to the real images and to the synthetic run's samples, in one folder for `label-images`."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = {f"real_{p.name}": p for p in real}
    sources.update({f"synthetic_{p.name}": p for p in sorted(synthetic_run.glob("shards/*/images/*.png"))})
    for name, target in sources.items():
        if not (folder / name).exists():
            os.symlink(target.resolve(), folder / name)
    return folder


def _arm_runs(out: Path, ensemble, images: list[Path], images_dir: Path, cfg: RealImagesStudyConfig, *, workers,
              threads, device, progress) -> dict[str, Path]:
    """The three finalized runs (each made once; reruns resume)."""
    from ..pipeline.config import SampleConfig
    from ..pipeline.finalize import finalize_run
    from ..pipeline.generate import sample_run
    from ..pipeline.real_images import label_images_run
    runs = {arm: out / f"run-{arm.replace(' ', '-')}" for arm in ARMS}
    sample_run(runs["synthetic"], SampleConfig(model=cfg.model, n=cfg.samples, seed=cfg.seed, sampler=cfg.sampler,
                                               sampling_steps=cfg.sampling_steps, batch_size=cfg.batch_size,
                                               shard_size=cfg.shard_size),
               ensemble=ensemble, workers=workers, device=device, threads=threads, progress=progress)
    label_images_run(images_dir, ensemble, runs["real unlabelled"], batch_size=cfg.batch_size,
                     shard_size=cfg.shard_size, device=device, progress=progress)
    both = _union_folder(out / "both_images", images, runs["synthetic"])
    label_images_run(both, ensemble, runs["both"], batch_size=cfg.batch_size, shard_size=cfg.shard_size,
                     device=device, progress=progress)
    for arm, run in runs.items():
        finalize_run(run, max_pairs=2 * cfg.pairs if arm == "both" else cfg.pairs)
    return runs


def run_real_images_study(out_dir: str | Path, ensemble: str | Path, data: str | Path, images_dir: str | Path,
                          cfg: RealImagesStudyConfig, *, workers: int = 1, threads: int | None = None,
                          device: str = "cpu", progress: bool = True) -> dict:
    from ..devices import resolve_device
    from ..ensemble.model import load_ensemble
    from ..environment import provenance
    cfg.check_segmenter()
    out, ens = Path(out_dir), load_ensemble(ensemble).cfg
    images = list_images(images_dir)
    if len(images) < cfg.samples:
        raise OptionError("--images", f"{images_dir} holds {len(images)} images; the real arm needs {cfg.samples} "
                                      f"(--pairs {cfg.pairs} after the 10 % drop)")
    images = images[:cfg.samples]  # the same count as the synthetic arm's samples
    dev = str(resolve_device(device))
    test = read_labelled(resolve_split(data, "test"), ens.num_classes, ens.ignore_label)
    write_study_config(out, {"study": "real-images", **asdict(cfg), "ensemble": str(ensemble),
                             "data": str(data), "images": str(images_dir)})
    subset = out / "real_images"  # the first `samples` images, linked, so label-images sees exactly those
    subset.mkdir(parents=True, exist_ok=True)
    for p in images:
        if not (subset / p.name).exists():
            os.symlink(p.resolve(), subset / p.name)
    runs = _arm_runs(out, ensemble, images, subset, cfg, workers=workers, threads=threads, device=dev,
                     progress=progress)
    confusions = {arm: deeplab_over_seeds(run, data, out / f"deeplab-{arm.replace(' ', '-')}", test, cfg.deeplab_seeds,
                                          epochs=cfg.deeplab_epochs, input_scale=cfg.input_scale,
                                          batch_size=cfg.deeplab_batch, num_classes=ens.num_classes,
                                          ignore_label=ens.ignore_label, workers=workers, threads=threads, device=dev,
                                          progress=progress, **cfg.segmenter_fields(data))
                  for arm, run in runs.items()}
    names = ens.class_names or tuple(str(k) for k in range(ens.num_classes))
    report = {"study": "real-images", "pairs": cfg.pairs, "deeplab_seeds": list(cfg.deeplab_seeds),
              "test_images": len(test), "arms": _arms(confusions, names, cfg),
              "segmenter": cfg.segmenter_report(cfg.deeplab_epochs, cfg.input_scale), **provenance()}
    write_study(out, report, real_images_markdown, "real-images")
    return report


def _arms(confusions: dict, names, cfg: RealImagesStudyConfig) -> dict:
    arms = {}
    for arm, cms in confusions.items():
        per_seed = [miou_of(c) for c in cms]
        iou = np.array([list(iou_per_class(c.sum(0)).values()) for c in cms])
        arms[arm] = {"pairs": 2 * cfg.pairs if arm == "both" else cfg.pairs, "miou_mean": float(np.mean(per_seed)),
                     "miou_std": float(np.std(per_seed)), "miou_per_seed": per_seed,
                     "iou_mean": dict(zip(names, iou.mean(0).round(4).tolist()))}
        if arm != ARMS[0]:
            arms[arm]["vs_synthetic"] = hierarchical_bootstrap(confusions[ARMS[0]], cms, resamples=cfg.bootstrap)
    return arms


def real_images_markdown(report: dict) -> str:
    names = list(next(iter(report["arms"].values()))["iou_mean"])
    lines = [f"{segmenter_name(report)} over {_seeds(report)} on {report['test_images']} real test images.", "",
             "| DeepLab trained on | pairs | mIoU (mean ± std) | Δ vs synthetic (95 % CI) | " + " | ".join(names) + " |",
             "|---|---:|---:|---|" + "---:|" * len(names)]
    for arm, r in report["arms"].items():
        delta = interval_text(r.get("vs_synthetic"))
        lines.append(f"| {arm} | {r['pairs']} | {_mean_std(r, report)} | {delta} | "
                     + " | ".join(f"{100 * v:.0f}" for v in r["iou_mean"].values()) + " |")
    return "\n".join(lines) + "\n" + segmenter_note(report)
