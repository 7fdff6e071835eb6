"""Mining study: does keeping the pairs richest in small parts (`finalize --prefer-classes`) help DeepLab
on those parts, at the same number of pairs?

One run of `n` samples is labelled by the ensemble (fused) and finalized three ways, each keeping
`pairs` pairs:

- default filter: the pipeline without mining at the same number of pairs, i.e. only the first
  ceil(pairs / 0.9) samples (what `sample --n` makes for `pairs` pairs), the 10 % most uncertain dropped;
- least uncertain: all `n` samples, the 10 % drop, then the `pairs` least uncertain (a stricter filter);
- mined: all `n` samples, the same drop, then the `pairs` with the most pixels of the preferred classes.

Mining over-generates; against the default filter it is what a user gains by sampling more and
mining, against the least uncertain arm what the selection rule alone does on the same samples.
DeepLab trains on each over several seeds and is scored on real test images: per-class IoU, and the
mIoU and preferred-class IoU differences with intervals over test images and seeds. Resumable like
every study.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data.folders import read_labelled, resolve_split
from ..errors import OptionError
from ..segmenters.metrics import iou_per_class
from .common import QUICK_SAMPLE_AND_DEEPLAB, SampleAndDeepLab, copy_run, deeplab_over_seeds, first_samples
from .common import write_study, write_study_config
from .common import mean_std as _mean_std, seeds_text as _seeds, segmenter_name, segmenter_note
from .stats import hierarchical_bootstrap, interval_text, miou_of

DEFAULT, PLAIN, MINED = "default filter", "least uncertain", "mined"
ARMS = (DEFAULT, PLAIN, MINED)


@dataclass
class MiningStudyConfig(SampleAndDeepLab):
    prefer: str = "eye,beak"
    n: int = 2224  # samples; the plain arm keeps the least uncertain `pairs` of them, mining the richest
    pairs: int = 1000

    @classmethod
    def quick(cls, model: str, prefer: str) -> "MiningStudyConfig":
        return cls(model=model, prefer=prefer, n=8, pairs=4, batch_size=4, shard_size=4, **QUICK_SAMPLE_AND_DEEPLAB)

    def validate(self) -> None:
        if not 1 <= self.pairs <= int(0.9 * self.n):
            raise OptionError("--pairs", f"must be in [1, {int(0.9 * self.n)}] (90 % of --n {self.n}: mining needs "
                                         f"more samples than pairs), got {self.pairs}")
        self.check_segmenter()


def _class_iou(confusions: np.ndarray, k: int) -> np.ndarray:
    """IoU of class k per seed; confusions (seeds, items, K, K)."""
    return np.array([iou_per_class(c.sum(0))[k] for c in confusions])


def run_mining_study(out_dir: str | Path, ensemble: str | Path, data: str | Path, cfg: MiningStudyConfig, *,
                     workers: int = 1, threads: int | None = None, device: str = "cpu", progress: bool = True) -> dict:
    from ..devices import resolve_device
    from ..ensemble.model import load_ensemble
    from ..environment import provenance
    from ..pipeline.config import SampleConfig
    from ..pipeline.finalize import finalize_run, preferred_classes
    from ..pipeline.generate import sample_run
    cfg.validate()
    out, ens = Path(out_dir), load_ensemble(ensemble).cfg
    names = ens.class_names or tuple(str(k) for k in range(ens.num_classes))
    prefer = preferred_classes(cfg.prefer, names)
    if not prefer:
        raise OptionError("--prefer-classes", "name at least one class")
    dev = str(resolve_device(device))
    test = read_labelled(resolve_split(data, "test"), ens.num_classes, ens.ignore_label)
    write_study_config(out, {"study": "mining", **asdict(cfg), "ensemble": str(ensemble), "data": str(data)})
    base = out / "run"
    sample_run(base, SampleConfig(model=cfg.model, n=cfg.n, seed=cfg.seed, sampler=cfg.sampler,
                                  sampling_steps=cfg.sampling_steps, batch_size=cfg.batch_size, shard_size=cfg.shard_size),
               ensemble=ensemble, workers=workers, device=dev, threads=threads, progress=progress)
    confusions, cards = {}, {}
    for arm in ARMS:
        folder = out / f"run-{arm.replace(' ', '-')}"
        run = first_samples(base, folder, math.ceil(cfg.pairs / 0.9)) if arm == DEFAULT else copy_run(base, folder)
        cards[arm] = finalize_run(run, max_pairs=cfg.pairs, prefer_classes=cfg.prefer if arm == MINED else None)
        confusions[arm] = deeplab_over_seeds(run, data, out / f"deeplab-{arm.replace(' ', '-')}", test,
                                             cfg.deeplab_seeds, epochs=cfg.deeplab_epochs, input_scale=cfg.input_scale,
                                             batch_size=cfg.deeplab_batch, num_classes=ens.num_classes,
                                             ignore_label=ens.ignore_label, workers=workers, threads=threads,
                                             device=dev, progress=progress, **cfg.segmenter_fields(data))
    report = mining_report(cfg, confusions, cards, names, prefer, len(test))
    report.update(provenance())
    write_study(out, report, mining_markdown, "mining")
    return report


def mining_report(cfg: MiningStudyConfig, confusions: dict, cards: dict, names, prefer, test_images: int) -> dict:
    arms = {}
    for arm, cms in confusions.items():
        per_seed = [miou_of(c) for c in cms]
        arms[arm] = {"miou_mean": float(np.mean(per_seed)), "miou_std": float(np.std(per_seed)),
                     "miou_per_seed": per_seed,
                     "iou_mean": {n: float(_class_iou(cms, k).mean()) for k, n in enumerate(names)},
                     "kept_pixel_share": {n: r["kept_pixel_share"] for n, r in cards[arm].get("class_balance", {}).items()}}
    default, plain, mined = confusions[DEFAULT], confusions[PLAIN], confusions[MINED]
    arms[PLAIN]["vs_default_filter"] = hierarchical_bootstrap(default, plain, resamples=cfg.bootstrap)
    arms[MINED]["vs_default_filter"] = hierarchical_bootstrap(default, mined, resamples=cfg.bootstrap)
    arms[MINED]["vs_least_uncertain"] = hierarchical_bootstrap(plain, mined, resamples=cfg.bootstrap)
    # the preferred classes' IoU: point differences of the seed means
    per_class = {names[k]: float(_class_iou(mined, k).mean() - _class_iou(plain, k).mean()) for k in prefer}
    per_class_default = {names[k]: float(_class_iou(mined, k).mean() - _class_iou(default, k).mean()) for k in prefer}
    return {"study": "mining", "prefer_classes": [names[k] for k in prefer], "samples": cfg.n, "pairs": cfg.pairs,
            "default_filter_samples": math.ceil(cfg.pairs / 0.9),
            "deeplab_seeds": list(cfg.deeplab_seeds), "test_images": test_images, "arms": arms,
            "preferred_iou_difference_vs_default_filter": per_class_default,
            "segmenter": cfg.segmenter_report(cfg.deeplab_epochs, cfg.input_scale),
            "preferred_iou_difference": per_class}


def mining_markdown(report: dict) -> str:
    names = list(next(iter(report["arms"].values()))["iou_mean"])
    pref = report["prefer_classes"]
    # results from before the default-filter arm compare with the least uncertain arm only
    deltas = [k for k in ("vs_default_filter", "vs_least_uncertain")
              if k != "vs_default_filter" or DEFAULT in report["arms"]]
    lines = [f"{report['pairs']} pairs kept by each arm, from {report['samples']} samples"
             + (f" (default filter: from the first {report['default_filter_samples']})"
                if DEFAULT in report["arms"] else "")
             + f"; preferred classes: {', '.join(pref)}; {segmenter_name(report)} over {_seeds(report)}, "
             f"{report['test_images']} real test images.", "",
             "| pairs kept | mIoU (mean ± std) | "
             + "".join(f"Δ vs {k[3:].replace('_', ' ')} (95 % CI) | " for k in deltas) + " | ".join(names) + " | "
             + " / ".join(pref) + " share of kept label pixels |",
             "|---|---:|" + "---|" * len(deltas) + "---:|" * len(names) + "---:|"]
    for arm, r in report["arms"].items():
        share = " / ".join(f"{100 * r['kept_pixel_share'].get(c, 0):.2f} %" for c in pref)
        lines.append(f"| {arm} | {_mean_std(r, report)} | " + "".join(f"{interval_text(r.get(k))} | " for k in deltas)
                     + " | ".join(f"{100 * v:.0f}" for v in r["iou_mean"].values()) + f" | {share} |")
    tail = ["IoU of the preferred classes, mined minus least uncertain: "
            + ", ".join(f"{c} {100 * v:+.1f}" for c, v in report["preferred_iou_difference"].items()) + " points"]
    if "preferred_iou_difference_vs_default_filter" in report:
        tail.append("mined minus default filter: " + ", ".join(
            f"{c} {100 * v:+.1f}" for c, v in report["preferred_iou_difference_vs_default_filter"].items()) + " points")
    return "\n".join(lines) + "\n\n" + "; ".join(tail) + ".\n" + segmenter_note(report)
