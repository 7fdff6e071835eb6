"""Filter study: is dropping the most uncertain synthetic images worth it?

One run of samples is labelled by the ensemble; the oracle's masks of the same samples stand in for
the annotations they do not have. Measured:

- does the ensemble's Jensen-Shannon uncertainty find the wrong labels? AUROC of the per-pixel JS
  for pixels whose label disagrees with the oracle, and of the per-image score for the worse half of
  the images (label mIoU against the oracle below the median);
- what dropping buys downstream: DeepLabV3 trained on the pairs kept at each drop fraction, over
  several training seeds, scored on real test images, with a bootstrap interval for the difference
  to no drop that resamples both the test images and the training seeds (so DeepLab's own training
  variance is inside the interval).

Resumable: sampling, each DeepLab run and each measurement are skipped when already done.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data.folders import read_labelled, resolve_split
from ..data.generated import GeneratedPairs
from ..errors import OptionError
from ..pipeline.config import SampleConfig
from ..pipeline.finalize import finalize_run
from ..pipeline.generate import sample_run
from .common import SegmenterChoice, deeplab_over_seeds, segmenter_note, write_study
from .common import write_study_config
from .stats import auroc, hierarchical_bootstrap, interval_text, miou_of, per_item_confusions


@dataclass
class FilterStudyConfig(SegmenterChoice):
    model: str = "embedded"
    n: int = 1112  # samples (about 1000 pairs kept at the default 10 % drop)
    seed: int = 0
    sampler: str = "ddim"
    sampling_steps: int = 20
    batch_size: int = 32
    shard_size: int = 64
    drops: tuple[float, ...] = (0.0, 0.1, 0.2)  # the first is the baseline
    deeplab_seeds: tuple[int, ...] = (0, 1, 2)
    deeplab_epochs: int = 6
    deeplab_batch: int = 8
    input_scale: int = 2
    bootstrap: int = 2000

    def validate(self) -> None:
        if not self.drops or any(not 0 <= d < 1 for d in self.drops):
            raise OptionError("--drops", f"need fractions in [0, 1), got {list(self.drops)}")
        if not self.deeplab_seeds:
            raise OptionError("--deeplab-seeds", "need at least one seed")
        self.check_segmenter()

    @classmethod
    def quick(cls, model: str) -> "FilterStudyConfig":
        """Tiny sizes: checks that every stage runs and the report is well formed, in a minute."""
        return cls(model=model, n=8, sampling_steps=2, batch_size=4, shard_size=4, drops=(0.0, 0.25),
                   deeplab_seeds=(0, 1), deeplab_epochs=1, deeplab_batch=2, input_scale=1, bootstrap=50)


def _uncertainty_vs_oracle(run: Path, ensemble_dir: Path, oracle, device) -> dict:
    """AUROCs of the ensemble's uncertainty for wrong labels (pixels) and bad images, against the oracle."""
    from ..data.oracle import oracle_statistics
    from ..direct import segment
    from ..ensemble.model import load_ensemble
    from ..workflows import source_for
    pairs = GeneratedPairs(run, kept_only=False)
    images, labels = pairs.arrays()
    ensemble = load_ensemble(ensemble_dir).to(device)
    seg = segment(source_for(ensemble, device=device), ensemble, images, progress=False)
    truth = oracle_statistics(oracle, images)["predictions"]
    confusions = per_item_confusions(labels, truth, ensemble.cfg.num_classes)
    per_image = np.array([miou_of(c[None]) for c in confusions])
    worse = per_image < np.median(per_image)
    scores = np.array([r["uncertainty"] for r in pairs.rows])
    return {"samples": len(images), "label_miou_vs_oracle": miou_of(confusions),
            "pixel_auroc_wrong_labels": auroc(seg.pixel_uncertainty.ravel(), (labels != truth).ravel()),
            "wrong_pixel_share": float((labels != truth).mean()),
            "image_auroc_worse_half": auroc(scores, worse),
            "label_miou_by_drop": {}, "_confusions": confusions}


def run_filter_study(out_dir: str | Path, ensemble: str | Path, data: str | Path, cfg: FilterStudyConfig, *,
                     workers: int = 1, threads: int | None = None, device: str = "cpu", progress: bool = True) -> dict:
    from ..devices import resolve_device
    from ..ensemble.model import load_ensemble
    from ..environment import provenance
    from ..paths import EMBEDDED_ORACLE_DIR
    from ..segmenters.model import load_segmenter
    cfg.validate()
    out, ens = Path(out_dir), load_ensemble(ensemble).cfg
    dev = resolve_device(device)
    test = read_labelled(resolve_split(data, "test"), ens.num_classes, ens.ignore_label)
    oracle = load_segmenter(EMBEDDED_ORACLE_DIR).to(dev)
    write_study_config(out, {"study": "filter", **asdict(cfg), "ensemble": str(ensemble), "data": str(data)})
    run = out / "run"
    sample_run(run, SampleConfig(model=cfg.model, n=cfg.n, seed=cfg.seed, sampler=cfg.sampler,
                                 sampling_steps=cfg.sampling_steps, batch_size=cfg.batch_size, shard_size=cfg.shard_size),
               ensemble=ensemble, workers=workers, device=str(dev), threads=threads, progress=progress)
    finalize_run(run, drop_fraction=cfg.drops[0])  # the index lists every sample with its score
    quality = _uncertainty_vs_oracle(run, Path(ensemble), oracle, dev)
    confusions = quality.pop("_confusions")
    rows, base = {}, None
    for drop in cfg.drops:
        finalize_run(run, drop_fraction=drop)
        kept = np.array([r["kept"] for r in GeneratedPairs(run, kept_only=False).rows])
        quality["label_miou_by_drop"][f"{drop:.2f}"] = miou_of(confusions[kept])
        runs = deeplab_over_seeds(run, data, out / f"drop-{drop:.2f}", test, cfg.deeplab_seeds,
                                  epochs=cfg.deeplab_epochs, input_scale=cfg.input_scale, batch_size=cfg.deeplab_batch,
                                  num_classes=ens.num_classes, ignore_label=ens.ignore_label, workers=workers,
                                  threads=threads, device=str(dev), progress=progress,
                                  **cfg.segmenter_fields(data))
        per_seed = [miou_of(r, ens.ignore_label) for r in runs]
        rows[f"{drop:.2f}"] = {"drop": drop, "pairs": int(kept.sum()), "deeplab_miou_mean": float(np.mean(per_seed)),
                               "deeplab_miou_std": float(np.std(per_seed)), "deeplab_miou_per_seed": per_seed}
        if base is None:
            base = runs
        else:
            rows[f"{drop:.2f}"]["vs_no_drop"] = hierarchical_bootstrap(base, runs, ignore_label=ens.ignore_label,
                                                                       resamples=cfg.bootstrap)
    finalize_run(run, drop_fraction=0.1)  # leave the run as the pipeline's default filter makes it
    report = {"labels": quality, "deeplab": rows, "test_images": len(test), "deeplab_seeds": list(cfg.deeplab_seeds),
              "segmenter": cfg.segmenter_report(cfg.deeplab_epochs, cfg.input_scale), **provenance()}
    write_study(out, report, filter_markdown, "filter")
    return report


def filter_markdown(report: dict) -> str:
    q = report["labels"]
    lines = [f"Labels of {q['samples']} samples against the oracle: mIoU {100 * q['label_miou_vs_oracle']:.1f}, "
             f"{100 * q['wrong_pixel_share']:.1f} % of pixels wrong. JS uncertainty finds wrong pixels with AUROC "
             f"{q['pixel_auroc_wrong_labels']:.3f} and the worse half of the images with AUROC "
             f"{q['image_auroc_worse_half']:.3f}.", "",
             "| drop | kept pairs | label mIoU of kept (oracle) | DeepLab mIoU (mean ± std over "
             f"{len(report['deeplab_seeds'])} seeds) | Δ vs no drop (95 % CI, test images and seeds) |",
             "|---:|---:|---:|---:|---|"]
    for key, r in report["deeplab"].items():
        delta = interval_text(r.get("vs_no_drop"))
        lines.append(f"| {100 * r['drop']:.0f} % | {r['pairs']} | {100 * q['label_miou_by_drop'][key]:.1f} | "
                     f"{100 * r['deeplab_miou_mean']:.1f} ± {100 * r['deeplab_miou_std']:.1f} | {delta} |")
    return "\n".join(lines) + "\n" + segmenter_note(report)
