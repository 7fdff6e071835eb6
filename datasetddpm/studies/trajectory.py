"""Trajectory study: are the sampler's own decoder activations as good for labelling as a feature pass?

`sample --trajectory-features` labels each sample from the UNet activations the sampler computed anyway
at the ensemble's steps, instead of noising the finished image again (q(x_t | x_0), fixed noise) and
running the UNet once more per step. Three labellings of the same samples, for every ensemble seed:

- standard: the preset's ensemble (its steps), a feature pass per sample (the pipeline's default);
- standard, visited steps: an ensemble on the visited steps nearest the preset's, a feature pass;
- trajectory: that same ensemble on the trajectory's activations, no feature pass.

The oracle's masks of the samples stand in for the truth. Label mIoU over seeds, with intervals that
resample the samples and the seeds; the labelling cost (UNet passes, and seconds side by side) per sample.
Resumable: every ensemble, run and score is kept and reused.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import OptionError
from .common import write_study, write_study_config
from .stats import hierarchical_bootstrap, interval_text, miou_of, per_item_confusions

STANDARD, VISITED, TRAJECTORY = "standard", "standard, visited steps", "trajectory"


@dataclass
class TrajectoryStudyConfig:
    model: str = "embedded"
    n: int = 256  # samples, labelled three ways per seed
    seed: int = 0  # the sample run's seed
    sampler: str = "ddim"
    sampling_steps: int = 20
    batch_size: int = 32
    shard_size: int = 64
    seeds: tuple[int, ...] = (0, 1, 2)  # ensemble training seeds
    members: int = 10
    max_steps: int | None = None  # cap on each ensemble's optimisation steps (quick runs only)
    timing_samples: int = 16
    timing_repeats: int = 5
    bootstrap: int = 2000

    @classmethod
    def quick(cls, model: str) -> "TrajectoryStudyConfig":
        return cls(model=model, n=4, batch_size=2, shard_size=2, seeds=(0,), members=2, max_steps=20,
                   timing_samples=2, timing_repeats=1, bootstrap=50)


def visited_spec(spec, generator, sampler: str, steps: int):
    """`spec` with each step moved to the nearest timestep the sampler visits (ties: the smaller)."""
    from ..generators.base import FeatureSpec
    visited = generator.visited_steps(sampler, steps)
    moved = tuple(sorted({min(visited, key=lambda v: (abs(v - t), v)) for t in spec.steps}))
    return FeatureSpec(spec.blocks, moved, spec.noise_seed)


def _timings(generator, labeller, cfg: TrajectoryStudyConfig) -> dict:
    """Seconds per sample of each part, medians of interleaved repeats on the same samples: sampling, sampling
    with the activations kept, the feature pass standard labelling adds, and the ensemble head both run.
    Parts are timed apart: the difference of two sampling times is too noisy on a shared machine."""
    from ..pipeline.config import sample_seed
    seeds = [sample_seed(cfg.seed, i) for i in range(cfg.timing_samples)]
    spec = labeller.source.spec
    images, maps = generator.sample_with_features(seeds, spec, sampler=cfg.sampler, num_steps=cfg.sampling_steps)
    array = images.permute(0, 2, 3, 1).numpy()
    parts = {"sampling": lambda: generator.sample(seeds, sampler=cfg.sampler, num_steps=cfg.sampling_steps),
             "sampling, activations kept": lambda: generator.sample_with_features(
                 seeds, spec, sampler=cfg.sampler, num_steps=cfg.sampling_steps),
             "feature pass": lambda: generator.feature_maps(images, spec),
             "ensemble head": lambda: labeller.label_maps(array, maps)}
    times: dict[str, list[float]] = {p: [] for p in parts}
    for fn in parts.values():
        fn()  # warm-up
    for _ in range(cfg.timing_repeats):
        for part, fn in parts.items():
            t = time.perf_counter()
            fn()
            times[part].append(time.perf_counter() - t)
    per_sample = {p: statistics.median(v) / len(seeds) for p, v in times.items()}
    head, features = per_sample["ensemble head"], per_sample["feature pass"]
    return {"samples": len(seeds), "repeats": cfg.timing_repeats, "seconds_per_sample": per_sample,
            "labelling_seconds_per_sample": {STANDARD: features + head, TRAJECTORY: head}}


def _slug(arm: str) -> str:
    return arm.replace(", ", "-").replace(" ", "-")


def _ensembles(folder: Path, data, problems: dict, seed: int, cfg: TrajectoryStudyConfig, device) -> dict:
    """{STANDARD: the preset-steps ensemble, VISITED: the visited-steps one} of one seed, trained once."""
    from ..ensemble.train import EnsembleTrainConfig
    from ..workflows import train_ensemble_folder
    out = {}
    for kind, problem in problems.items():
        out[kind] = folder / f"ensemble-{'preset' if kind == STANDARD else 'visited'}-steps"
        if not (out[kind] / "ensemble.json").is_file():
            train_ensemble_folder(data, out[kind], problem, device=device, progress=False,
                                  train=EnsembleTrainConfig(members=cfg.members, seed=seed, max_steps=cfg.max_steps))
    return out


def _labelled(samples: Path, run: Path, arm: str, ensemble: Path, run_cfg, **launch):
    """The samples labelled one way, in their own run folder (finalized); returns (images, labels)."""
    from ..data.generated import GeneratedPairs
    from ..pipeline.finalize import finalize_run
    from ..pipeline.generate import label_run, sample_run
    from .common import copy_run
    copy_run(samples, run)
    if arm == TRAJECTORY:  # the shards have no labels yet: each is sampled again, labelled as it is made
        sample_run(run, run_cfg, ensemble=ensemble, trajectory_features=True, **launch)
    else:
        label_run(run, ensemble, **launch)
    finalize_run(run)
    return GeneratedPairs(run, kept_only=False).arrays()


def _arm_row(arm: str, cms: np.ndarray, steps) -> dict:
    per_seed = [miou_of(c) for c in cms]
    return {"label_miou_mean": float(np.mean(per_seed)), "label_miou_std": float(np.std(per_seed)),
            "label_miou_per_seed": per_seed, "steps": list(steps),
            "feature_passes_per_sample": 0 if arm == TRAJECTORY else len(steps)}


def run_trajectory_study(out_dir: str | Path, data: str | Path, cfg: TrajectoryStudyConfig, *, workers: int = 1,
                         threads: int | None = None, device: str = "cpu", progress: bool = True) -> dict:
    from ..data.oracle import oracle_statistics
    from ..devices import resolve_device
    from ..environment import provenance
    from ..generators.loading import load_generator
    from ..paths import EMBEDDED_ORACLE_DIR
    from ..pipeline.config import SampleConfig
    from ..pipeline.generate import Labeller, sample_run
    from ..segmenters.model import load_segmenter
    from ..workflows import resolve_problem
    if not cfg.seeds:
        raise OptionError("--seeds", "need at least one seed")
    out, dev = Path(out_dir), resolve_device(device)
    generator = load_generator(cfg.model, dev)
    if not hasattr(generator, "sample_with_features"):
        raise OptionError("--model", f"{cfg.model} is not a diffusion model: it has no sampling trajectory")
    preset = resolve_problem("embedded", model=cfg.model)
    spec = visited_spec(preset.spec, generator, cfg.sampler, cfg.sampling_steps)
    problems = {STANDARD: preset, VISITED: resolve_problem("embedded", model=cfg.model, steps=spec.steps)}
    write_study_config(out, {"study": "trajectory", **asdict(cfg), "data": str(data)})
    samples = out / "samples"
    run_cfg = SampleConfig(model=cfg.model, n=cfg.n, seed=cfg.seed, sampler=cfg.sampler,
                           sampling_steps=cfg.sampling_steps, batch_size=cfg.batch_size, shard_size=cfg.shard_size)
    launch = dict(workers=workers, device=str(dev), threads=threads, progress=progress)
    sample_run(samples, run_cfg, **launch)
    oracle = load_segmenter(EMBEDDED_ORACLE_DIR).to(dev)
    confusions: dict[str, list[np.ndarray]] = {a: [] for a in (STANDARD, VISITED, TRAJECTORY)}
    truth = None  # the oracle's masks of the samples (the same images in every arm)
    for seed in cfg.seeds:
        folder = out / f"seed-{seed}"
        ensembles = _ensembles(folder, data, problems, seed, cfg, dev)
        for arm in confusions:
            saved = folder / f"confusions-{_slug(arm)}.npy"
            if not saved.is_file():
                images, labels = _labelled(samples, folder / f"run-{_slug(arm)}", arm,
                                           ensembles[STANDARD if arm == STANDARD else VISITED], run_cfg, **launch)
                truth = oracle_statistics(oracle, images)["predictions"] if truth is None else truth
                np.save(saved, per_item_confusions(labels, truth, preset.num_classes))
            confusions[arm].append(np.load(saved))
    stacked = {a: np.stack(c) for a, c in confusions.items()}
    arms = {a: _arm_row(a, cms, (preset.spec if a == STANDARD else spec).steps) for a, cms in stacked.items()}
    for key, other in (("vs_standard", STANDARD), ("vs_visited", VISITED)):
        arms[TRAJECTORY][key] = hierarchical_bootstrap(stacked[other], stacked[TRAJECTORY], resamples=cfg.bootstrap)
    labeller = Labeller(out / f"seed-{cfg.seeds[-1]}" / "ensemble-visited-steps", generator, dev)
    report = {"study": "trajectory", "samples": cfg.n, "sampler": cfg.sampler, "sampling_steps": cfg.sampling_steps,
              "network_evaluations_sampling": len(generator.visited_steps(cfg.sampler, cfg.sampling_steps)),
              "blocks": list(spec.blocks), "seeds": list(cfg.seeds), "arms": arms,
              "timing": _timings(generator, labeller, cfg), **provenance()}
    write_study(out, report, trajectory_markdown, "trajectory")
    return report


def trajectory_markdown(report: dict) -> str:
    t = report["timing"]["labelling_seconds_per_sample"]
    lines = [f"| labelling of {report['samples']} samples ({report['sampler']}-{report['sampling_steps']}) | steps | "
             f"feature passes per sample | label mIoU vs oracle (mean ± std over {len(report['seeds'])} seeds) | "
             "Δ vs standard (95 % CI) | labelling s / sample |", "|---|---|---:|---:|---|---:|"]
    for arm, r in report["arms"].items():
        delta = interval_text(r.get("vs_standard"))
        secs = f"{t[arm]:.4f}" if arm in t else "—"
        lines.append(f"| {arm} | {', '.join(map(str, r['steps']))} | {r['feature_passes_per_sample']} | "
                     f"{100 * r['label_miou_mean']:.1f} ± {100 * r['label_miou_std']:.1f} | {delta} | {secs} |")
    v = report["arms"][TRAJECTORY]["vs_visited"]
    s = report["timing"]["seconds_per_sample"]
    # trajectory labelling samples with the activations kept, a little slower than plain sampling
    sampling = {a: s.get("sampling, activations kept", s["sampling"]) if a == TRAJECTORY else s["sampling"] for a in t}
    total = {a: sampling[a] + t[a] for a in t}
    lines += ["", f"Trajectory vs the same ensemble on a feature pass (visited steps): {100 * v['difference']:+.1f} "
                  f"[{100 * v['ci_low']:+.1f}, {100 * v['ci_high']:+.1f}] mIoU"
                  + ("" if v["significant"] else " (not significant)")
              + f". Per sample: sampling {s['sampling']:.3f} s ({report['network_evaluations_sampling']} UNet "
                f"evaluations; {s['sampling, activations kept']:.3f} s keeping the activations), feature pass "
                f"{s['feature pass']:.3f} s, ensemble head {s['ensemble head']:.3f} s: a labelled sample costs "
                f"{total[STANDARD]:.3f} s with standard labelling and {total[TRAJECTORY]:.3f} s with trajectory "
                f"labelling ({total[STANDARD] / total[TRAJECTORY]:.2f}x). Medians of {report['timing']['repeats']} "
                f"interleaved repeats on {report['timing']['samples']} samples."]
    return "\n".join(lines) + "\n"
