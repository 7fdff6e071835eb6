"""The end-to-end demo on the embedded default.

1. a labelled procedural dataset (20 train, 200 test images in the reference layout);
2. direct DDPM mode: the pixel ensemble on diffusion features of the labelled images, against the
   same ensemble on RGB-3x3 colour features (mean +- std over `seeds`);
3. DatasetDDPM: sample + label (fused, fast sampler), drop the 10 % most uncertain, train a segmenter
   (a U-Net by default, the best measured here; the paper's DeepLabV3 with `arch="deeplabv3"`) and
   compare it with direct mode on the real test set.
The labeller is trained on the real labelled images (`labeller="real"`) or, as in the paper, on a
few generated samples annotated by the oracle (`labeller="generated"`). Every stage is timed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .data.folders import read_labelled, write_procedural_dataset
from .direct import CachedSource, FeatureSource, evaluate_labels, fit_ensemble, segment
from .ensemble.model import save_ensemble
from .ensemble.train import EnsembleTrainConfig
from .errors import OptionError
from .generators.loading import load_generator
from .io import write_json
from .presets import EMBEDDED, EMBEDDED_ORACLE_DIR
from .segmenters.model import ARCH_NAMES
from .segmenters.train_deeplab import DeepLabTrainConfig, check_mix_fraction, mixed_real


LABELLERS = ("real", "generated")


@dataclass
class DirectRun:
    """One ensemble of direct mode (or the colour baseline) on the test set."""

    seed: int
    miou: float
    iou: dict[str, float]


@dataclass
class DirectResult:
    """A method of direct mode over every seed."""

    runs: list[DirectRun]

    @property
    def miou_mean(self) -> float:
        return float(np.mean([r.miou for r in self.runs]))

    @property
    def miou_std(self) -> float:
        return float(np.std([r.miou for r in self.runs]))

    def class_iou_mean(self) -> dict[str, float]:
        """Per-class IoU averaged over the seeds."""
        return {name: float(np.mean([r.iou[name] for r in self.runs])) for name in self.runs[0].iou}

    def to_dict(self) -> dict:
        return {"miou_mean": self.miou_mean, "miou_std": self.miou_std, "runs": [asdict(r) for r in self.runs]}


@dataclass
class DatasetDDPMResult:
    """The DatasetDDPM pipeline of the demo: pair counts, DeepLab's best epoch and the comparison rows
    (`compare.compare`'s "methods": name -> miou, iou, seconds_per_image)."""

    labeller: str
    pairs: dict[str, int]  # generated, kept, dropped
    sampler: str
    sampling_steps: int
    deeplab: dict  # best_epoch, best_val_miou, input_scale
    compare: dict[str, dict]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DemoReport:
    """What `run_demo` measured; `to_dict()` is demo.json. Read by key (`report["direct"]`) it is that
    dict, as callers of the former dict result read it."""

    train_images: int
    test_images: int
    seeds: list[int]
    model: str
    features: dict
    direct: dict[str, DirectResult]
    datasetddpm: DatasetDDPMResult | None
    timings_seconds: dict[str, float]  # per stage, rounded to 0.1 s
    total_seconds: float  # the stages' sum before rounding, rounded

    def to_dict(self) -> dict:
        d = {"train_images": self.train_images, "test_images": self.test_images, "seeds": list(self.seeds),
             "model": self.model, "features": self.features,
             "direct": {name: r.to_dict() for name, r in self.direct.items()}}
        if self.datasetddpm is not None:
            d["datasetddpm"] = self.datasetddpm.to_dict()
        return {**d, "timings_seconds": self.timings_seconds, "total_seconds": self.total_seconds}

    @classmethod
    def from_dict(cls, d: dict) -> "DemoReport":
        """A demo.json read back (keys it does not know, such as provenance, are left out)."""
        direct = {name: DirectResult([DirectRun(**run) for run in r["runs"]]) for name, r in d["direct"].items()}
        pipeline = DatasetDDPMResult(**d["datasetddpm"]) if "datasetddpm" in d else None
        return cls(train_images=d["train_images"], test_images=d["test_images"], seeds=list(d["seeds"]),
                   model=d["model"], features=d["features"], direct=direct, datasetddpm=pipeline,
                   timings_seconds=d["timings_seconds"], total_seconds=d["total_seconds"])

    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def __contains__(self, key: str) -> bool:
        return key in self.to_dict()


class _Timer:
    def __init__(self):
        self.stages: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.t = time.time()

            def __exit__(self, *exc):
                timer.stages[name] = timer.stages.get(name, 0.0) + time.time() - self.t
        return _Stage()


def _direct_vs_colour(train_set, test_set, generator, seeds, train_cfg, out: Path, timer: _Timer, progress, log):
    preset = EMBEDDED
    methods = {"direct DDPM": FeatureSource(generator, preset.features), "colour RGB-3x3": FeatureSource()}
    if len(seeds) > 1:  # reuse each batch's native-resolution maps across seeds (memory for speed)
        methods = {name: CachedSource(source) for name, source in methods.items()}
    results: dict[str, DirectResult] = {name: DirectResult([]) for name in methods}
    for name, source in methods.items():
        for seed in seeds:
            with timer(f"{name}: train ensemble"):
                ensemble, train_log = fit_ensemble(source, train_set.images, train_set.masks,
                                                   num_classes=preset.num_classes, ignore_label=preset.ignore_label,
                                                   class_names=preset.class_names,
                                                   train=replace(train_cfg, seed=seed), progress=progress)
            with timer(f"{name}: segment test set"):
                seg = segment(source, ensemble, test_set.images, progress=progress)
            ev = evaluate_labels(seg.labels, test_set.masks, preset.num_classes, preset.ignore_label,
                                 preset.class_names)
            if seed == seeds[0]:
                save_ensemble(out / ("ensemble" if name == "direct DDPM" else "ensemble_colour"), ensemble,
                              {"training": {**train_log, "seed": seed}})
            results[name].runs.append(DirectRun(seed, ev.miou, ev.iou))
            log(f"{name} seed {seed}: mIoU {100 * ev.miou:.1f}")
    return results


def run_demo(out: str | Path, *, train: int = 20, test: int = 200, seeds: tuple[int, ...] = (0,),
             model: str = "embedded", pairs: int = 0, labeller: str = "real", annotated: int = 20,
             sampler: str = "ddim", sampling_steps: int = 20, workers: int = 1, deeplab_epochs: int = 12,
             input_scale: int = 2, real_fraction: float = 0.0, arch: str = "unet",
             train_cfg: EnsembleTrainConfig | None = None,
             device: str | torch.device = "cpu", progress: bool = True, log=print) -> DemoReport:
    """Direct mode vs colour (always), then the DatasetDDPM pipeline when `pairs` > 0. On a GPU (`device`)
    every stage runs there, sampling in one process. Writes `out/demo.json` (`DemoReport.to_dict()`)."""
    if labeller not in LABELLERS:
        raise OptionError("--labeller", f"must be real or generated, got {labeller!r}")
    check_mix_fraction(real_fraction)
    DeepLabTrainConfig(arch=arch).validate()  # before anything is written
    started = time.perf_counter()
    out = Path(out)
    timer = _Timer()
    preset = EMBEDDED
    train_cfg = train_cfg or EnsembleTrainConfig()
    with timer("dataset"):
        write_procedural_dataset(out / "data", train=train, test=test)
        train_set = read_labelled(out / "data" / "real" / "train", preset.num_classes, preset.ignore_label)
        test_set = read_labelled(out / "data" / "real" / "test", preset.num_classes, preset.ignore_label)
    device = torch.device(device)
    generator = load_generator(model, device)
    direct = _direct_vs_colour(train_set, test_set, generator, seeds, train_cfg, out, timer, progress, log)
    pipeline = None
    if pairs > 0:
        pipeline = _datasetddpm(out, generator, pairs=pairs, labeller=labeller, annotated=annotated, sampler=sampler,
                                sampling_steps=sampling_steps, workers=workers, deeplab_epochs=deeplab_epochs,
                                input_scale=input_scale, real_fraction=real_fraction, arch=arch, train_cfg=train_cfg, timer=timer,
                                device=device, progress=progress, log=log)
    report = DemoReport(train_images=train, test_images=test, seeds=list(seeds), model=model,
                        features=preset.features.to_dict(), direct=direct, datasetddpm=pipeline,
                        timings_seconds={k: round(v, 1) for k, v in timer.stages.items()},
                        total_seconds=round(sum(timer.stages.values()), 1))
    from .environment import provenance
    wall = {"wall_seconds": round(time.perf_counter() - started, 1)}  # the stages, model loading and set-up
    write_json(out / "demo.json", {**report.to_dict(), **wall, **provenance()})  # what made the numbers, and where
    return report


def _datasetddpm(out: Path, generator, *, pairs, labeller, annotated, sampler, sampling_steps, workers,
                 deeplab_epochs, input_scale, real_fraction, arch, train_cfg, timer, device, progress,
                 log) -> DatasetDDPMResult:
    from .compare import compare
    from .pipeline.config import SampleConfig
    from .pipeline.finalize import finalize_run
    from .pipeline.generate import sample_run
    from .workflows import train_deeplab_run
    preset = EMBEDDED
    ensemble_dir = out / "ensemble"
    if labeller == "generated":  # the paper's protocol: annotate a few generated samples (oracle = annotator)
        from .pipeline.annotate import export_for_annotation
        from .segmenters.model import load_segmenter
        with timer("labeller: sample + annotate generated images"):
            export_for_annotation(generator, annotated, out / "annotated", sampler=sampler, num_steps=sampling_steps,
                                  oracle=load_segmenter(EMBEDDED_ORACLE_DIR).to(device))
            ann = read_labelled(out / "annotated", preset.num_classes, preset.ignore_label)
        with timer("labeller: train ensemble on generated"):
            ens, log_ = fit_ensemble(FeatureSource(generator, preset.features), ann.images, ann.masks,
                                     num_classes=preset.num_classes, ignore_label=preset.ignore_label,
                                     class_names=preset.class_names, train=train_cfg, progress=progress)
            ensemble_dir = out / "ensemble_generated"
            save_ensemble(ensemble_dir, ens, {"training": log_})
    n = int(np.ceil(pairs / 0.9))  # the global filter drops 10 %
    run = out / "run"
    with timer(f"sample + label {n} ({sampler}-{sampling_steps})"):
        sample_run(run, SampleConfig(model=generator.source, n=n, sampler=sampler, sampling_steps=sampling_steps,
                                     batch_size=50, shard_size=100),
                   ensemble=ensemble_dir, workers=workers if device.type == "cpu" else 1, device=str(device),
                   threads=1 if workers > 1 and device.type == "cpu" else None, progress=progress)
    with timer("filter (global drop of 10 %)"):
        card = finalize_run(run, max_pairs=pairs)
    # With real_fraction, the labeller's own labelled images (the real ones, or the annotated samples in the
    # paper's protocol) are mixed into every epoch: the best setting `study segmenter` measured.
    labelled = out / ("annotated" if labeller == "generated" else "data")
    mixed = mixed_real(labelled, real_fraction)
    segmenter = ARCH_NAMES[arch]
    with timer(f"train {segmenter} ({deeplab_epochs} epochs, input x{input_scale}"
               + (f", {real_fraction:.0%} labelled images" if real_fraction else "") + ")"):
        result = train_deeplab_run(run, out / "data", out / "deeplab",
                                   DeepLabTrainConfig(epochs=deeplab_epochs, input_scale=input_scale, arch=arch,
                                                      **mixed),
                                   device=str(device), progress=progress)
    with timer("compare on the test set"):
        cmp = compare(ensemble_dir, {f"{segmenter} (synthetic)": out / "deeplab" / "best"}, out / "data",
                      out / "compare", model=generator.source, device=device, progress=progress)
    log(f"{segmenter} (synthetic) mIoU {100 * cmp['methods'][f'{segmenter} (synthetic)']['miou']:.1f} vs direct "
        f"{100 * cmp['methods']['direct DDPM']['miou']:.1f}")
    from .io import read_jsonl
    from .rundir import LOG_FILE
    epochs = read_jsonl(out / "deeplab" / LOG_FILE, keys=("epoch", "loss", "val_miou"))
    log_ = [{"epoch": e["epoch"], "loss": round(e["loss"], 4), "val_miou": round(e["val_miou"], 4)} for e in epochs]
    return DatasetDDPMResult(labeller=labeller, pairs=card["counts"], sampler=sampler, sampling_steps=sampling_steps,
                             deeplab={**result, "arch": arch, "input_scale": input_scale,
                                      "real_fraction": real_fraction, "epochs_log": log_}, compare=cmp["methods"])
