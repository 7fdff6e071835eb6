"""Synthetic-size study (paper Appendix B): DeepLabV3 mIoU against the number of synthetic pairs.

One run of ceil(max size / 0.9) samples is sampled and labelled by the ensemble once. Each size's run
holds the first ceil(size / 0.9) of those samples (what `sample --n` with the same seed makes, sample
i depending on (seed, i) only, up to the rounding of a last partial batch) and is finalized as the
pipeline does: the 10 % most uncertain dropped, `size` pairs kept. A larger set so adds samples
without changing the filter's strictness; finalizing every size from the whole pool instead would
give the small sizes ever cleaner, easier pairs.
DeepLabV3 trains on each size over seeds and is scored on real test images; each size's difference to
the previous size has an interval over test images and seeds.

DeepLab's budget: "epochs" (default) trains every size for the same epochs, so a larger set also gets
proportionally more optimisation steps (what a user of the pipeline gets); "steps" gives every size
the steps of the largest (epochs scaled by max size / size), so a gain is the data's, not the
training's. The JSON and the markdown state the rule and each size's steps; study.png plots the
curve. Resumable like every study.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data.folders import read_labelled, resolve_split
from ..errors import OptionError
from ..io import read_json
from .common import QUICK_SAMPLE_AND_DEEPLAB, SampleAndDeepLab, deeplab_over_seeds, first_samples, write_study
from .common import write_study_config
from .common import mean_std as _mean_std, seeds_text as _seeds, segmenter_name, segmenter_note
from .stats import hierarchical_bootstrap, miou_of

BUDGETS = {"epochs": "the same {epochs} DeepLab epochs for every size: a larger set also gets proportionally more "
                     "optimisation steps",
           "steps": "the optimisation steps of the largest set at {epochs} epochs for every size (epochs scaled "
                    "by largest size / size)"}


@dataclass
class SyntheticSizeConfig(SampleAndDeepLab):
    sizes: tuple[int, ...] = (250, 500, 1000, 2000, 4000)  # kept pairs, increasing
    budget: str = "epochs"  # a key of BUDGETS

    @classmethod
    def quick(cls, model: str) -> "SyntheticSizeConfig":
        return cls(model=model, sizes=(2, 4), batch_size=1, shard_size=2, **QUICK_SAMPLE_AND_DEEPLAB)

    def validate(self) -> None:
        if not self.sizes or min(self.sizes) < 1 or list(self.sizes) != sorted(set(self.sizes)):
            raise OptionError("--sizes", f"need increasing pair counts >= 1, got {list(self.sizes)}")
        if not self.deeplab_seeds:
            raise OptionError("--deeplab-seeds", "need at least one seed")
        if self.budget not in BUDGETS:
            raise OptionError("--budget", f"must be one of {', '.join(BUDGETS)}, got {self.budget!r}")
        self.check_segmenter()

    @staticmethod
    def samples(size: int) -> int:
        return math.ceil(size / 0.9)  # the pipeline's default drop of 10 % leaves `size` pairs

    def epochs(self, size: int) -> int:
        if self.budget == "epochs":
            return self.deeplab_epochs
        return max(1, round(self.deeplab_epochs * max(self.sizes) / size))


def run_synthetic_size_study(out_dir: str | Path, ensemble: str | Path, data: str | Path, cfg: SyntheticSizeConfig,
                             *, workers: int = 1, threads: int | None = None, device: str = "cpu",
                             progress: bool = True) -> dict:
    from ..devices import resolve_device
    from ..ensemble.model import load_ensemble
    from ..environment import provenance
    from ..pipeline.config import SampleConfig
    from ..pipeline.finalize import finalize_run
    from ..pipeline.generate import sample_run
    cfg.validate()
    out, ens = Path(out_dir), load_ensemble(ensemble).cfg
    dev = str(resolve_device(device))
    test = read_labelled(resolve_split(data, "test"), ens.num_classes, ens.ignore_label)
    real = len(read_labelled(resolve_split(data, "train"), ens.num_classes, ens.ignore_label)) if cfg.real_fraction else 0
    # Sizes may be added to a kept study: each size's run and DeepLab runs are kept under its own name.
    write_study_config(out, {"study": "synthetic-size", **asdict(cfg), "ensemble": str(ensemble),
                                           "data": str(data)}, grows=("deeplab_seeds", "sizes"))
    base = out / "run"
    held = read_json(base / "manifest.json")["config"]["n"] if (base / "manifest.json").is_file() else 0
    n = max(cfg.samples(max(cfg.sizes)), held)
    # A larger size than the kept base holds: the base is sampled again at the new count. Its first samples
    # are the old ones (sample i depends on (seed, i)), so the kept smaller sizes stay what they were.
    sample_run(base, SampleConfig(model=cfg.model, n=n, seed=cfg.seed, sampler=cfg.sampler,
                                  sampling_steps=cfg.sampling_steps, batch_size=cfg.batch_size,
                                  shard_size=cfg.shard_size),
               ensemble=ensemble, workers=workers, device=dev, threads=threads, overwrite=held < n,
               progress=progress)
    rows, confusions = {}, {}
    for size in cfg.sizes:
        run = first_samples(base, out / f"run-{size}", cfg.samples(size))
        card = finalize_run(run, max_pairs=size)
        confusions[size] = deeplab_over_seeds(run, data, out / f"deeplab-{size}", test, cfg.deeplab_seeds,
                                              epochs=cfg.epochs(size), input_scale=cfg.input_scale,
                                              batch_size=cfg.deeplab_batch, num_classes=ens.num_classes,
                                              ignore_label=ens.ignore_label, workers=workers, threads=threads,
                                              device=dev, progress=progress, **cfg.segmenter_fields(data))
        rows[str(size)] = size_row(size, card, confusions, cfg, workers, ens.ignore_label, real)
    report = {"study": "synthetic-size", "samples": cfg.samples(max(cfg.sizes)), "sampler": cfg.sampler,
              "sampling_steps": cfg.sampling_steps, "deeplab_seeds": list(cfg.deeplab_seeds),
              "test_images": len(test), "budget": {"rule": cfg.budget, "text": BUDGETS[cfg.budget].format(
                  epochs=cfg.deeplab_epochs)}, "rows": rows, "saturates_at": saturation(rows),
              "segmenter": cfg.segmenter_report(cfg.deeplab_epochs, cfg.input_scale), **provenance()}
    write_study(out, report, synthetic_size_markdown, "synthetic-size")
    return report


def size_row(size: int, card: dict, confusions: dict, cfg: SyntheticSizeConfig, workers: int, ignore_label: int,
             real: int = 0) -> dict:
    """One size's numbers; the difference to the previous size resamples test images (paired) and seeds.
    `real`: labelled images mixed into every epoch (0: none)."""
    from ..data.generated import real_repeat
    per_seed = [miou_of(c, ignore_label) for c in confusions[size]]
    epochs, kept = cfg.epochs(size), card["counts"]["kept"]
    per_epoch = kept + (real * real_repeat(kept, real, cfg.real_fraction) if real else 0)
    row = {"pairs": kept, "samples": card["counts"]["generated"], "epochs": epochs,
           # one process per worker, each its batch, the last partial batch dropped
           "optimisation_steps": epochs * (per_epoch // (cfg.deeplab_batch * workers)),
           "miou_mean": float(np.mean(per_seed)), "miou_std": float(np.std(per_seed)), "miou_per_seed": per_seed}
    smaller = [s for s in confusions if s < size]
    if smaller:
        row["vs_previous"] = {"size": max(smaller), **hierarchical_bootstrap(
            confusions[max(smaller)], confusions[size], ignore_label=ignore_label, resamples=cfg.bootstrap)}
    return row


def is_gain(step: dict) -> bool:
    """A step up in size (a row's vs_previous) that is a significant gain."""
    return step["significant"] and step["difference"] > 0


def saturation(rows: dict) -> int | None:
    """The size from which no step up is a significant gain: the steps from it to the next size and on are all
    not (None: the last step is a significant gain). With 8000 -> 16000 not significant, the curve saturates
    at 8000: 16000 pairs bought nothing. A step that is not significant followed by one that is is a plateau
    within the noise, not saturation: the curve still rises."""
    at, previous = None, None
    for key, r in rows.items():
        d = r.get("vs_previous")
        if d is not None:
            if is_gain(d):
                at = None
            elif at is None:
                at = int(previous)
        previous = key
    return at


def synthetic_size_markdown(report: dict) -> str:
    lines = [f"{segmenter_name(report)} over {_seeds(report)} on {report['test_images']} real test images. One run of "
             f"{report['samples']} samples ({report['sampler']}-{report['sampling_steps']}); each size keeps the "
             f"first ceil(size / 0.9) samples' least uncertain pairs after the 10 % drop. Budget: "
             f"{report['budget']['text']}.", "",
             "| pairs | samples | DeepLab epochs | optimisation steps | mIoU (mean ± std) | Δ vs previous size (95 % CI) |",
             "|---:|---:|---:|---:|---:|---|"]
    for r in report["rows"].values():
        d = r.get("vs_previous")
        delta = "—" if d is None else (f"{100 * d['difference']:+.1f} [{100 * d['ci_low']:+.1f}, "
                                       f"{100 * d['ci_high']:+.1f}] vs {d['size']}" + ("" if d["significant"] else " (n.s.)"))
        lines.append(f"| {r['pairs']} | {r['samples']} | {r['epochs']} | {r['optimisation_steps']} | "
                     f"{_mean_std(r, report)} | {delta} |")
    at, last = report["saturates_at"], list(report["rows"])[-1]
    flat = [k for k, r in report["rows"].items() if "vs_previous" in r and not is_gain(r["vs_previous"])]
    if at is not None:
        tail = f"Saturates at {at} pairs: from there on no step up in size is a significant gain."
    elif flat:
        steps = (f"the step to {flat[0]} is" if len(flat) == 1 else
                 f"the steps to {', '.join(flat[:-1])} and {flat[-1]} are")
        tail = (f"No saturation up to {last} pairs: the last step up is a significant gain; {steps} not, a "
                f"plateau within the noise.")
    else:
        tail = f"Every step up in size is a significant gain: no saturation up to {last} pairs."
    return "\n".join(lines) + f"\n\n{tail}\n" + segmenter_note(report)
