"""Sampler study: the paper's 1000-step ancestral DDPM sampler against fast samplers, end to end.

For each sampler setting the same sample seeds go through the real pipeline (sample -> label with
the ensemble -> global 10 % drop -> DeepLabV3 -> real test images), and three things are measured:

- cost: UNet evaluations per sample and seconds per sample (timed side by side in one process on
  the same seeds, so machine noise hits every setting alike);
- label quality: mIoU of the ensemble's synthetic labels against the oracle's masks of the same
  samples (the oracle plays the annotator the samples do not have), over all samples;
- downstream quality: DeepLabV3-from-synthetic mIoU on the real test split, mean ± std over DeepLab
  training seeds.

Differences against the first (baseline) setting get 95 % intervals: paired bootstrap over sample
seeds for label quality; for DeepLab, over test images (paired) and each side's training seeds, so
DeepLab's training variance is inside the interval. Every stage is resumable: rerunning the study
skips sampled/labelled shards, finished DeepLab epochs and saved measurements.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.folders import read_labelled, resolve_split
from ..data.generated import GeneratedPairs
from ..errors import OptionError
from ..io import read_json, write_json
from ..pipeline.config import SampleConfig, sample_seed
from ..pipeline.finalize import finalize_run
from ..pipeline.generate import label_run, sample_run
from ..segmenters.model import load_segmenter
from .common import SegmenterChoice, deeplab_over_seeds, segmenter_note, write_study
from .common import write_study_config
from .stats import hierarchical_bootstrap, interval_text, miou_of, paired_bootstrap, per_item_confusions


@dataclass(frozen=True)
class SamplerSetting:
    sampler: str  # ddpm | ddim | dpm++
    steps: int

    @property
    def name(self) -> str:
        return f"{self.sampler}-{self.steps}"

    @classmethod
    def parse(cls, text: str) -> "SamplerSetting":
        name, sep, steps = text.strip().rpartition(":")
        if not sep or not steps.isdigit():
            raise OptionError("--settings", f"expected sampler:steps (e.g. ddim:50), got {text!r}")
        return cls(name, int(steps))


DEFAULT_SETTINGS = "ddpm:1000,ddim:50,dpm++:20,ddim:20,dpm++:10"


@dataclass
class SamplerStudyConfig(SegmenterChoice):
    settings: tuple[SamplerSetting, ...] = field(
        default_factory=lambda: tuple(SamplerSetting.parse(s) for s in DEFAULT_SETTINGS.split(",")))
    model: str = "embedded"
    n: int = 256  # samples per setting (the same seeds for every setting)
    seed: int = 0
    batch_size: int = 32
    shard_size: int = 64
    deeplab_epochs: int = 6
    input_scale: int = 2
    deeplab_seeds: tuple[int, ...] = (0, 1, 2)
    deeplab_batch: int = 8
    timing_samples: int = 8  # samples timed per setting, side by side in one process
    bootstrap: int = 2000

    def sample_config(self, s: SamplerSetting) -> SampleConfig:
        return SampleConfig(model=self.model, n=self.n, seed=self.seed, sampler=s.sampler, sampling_steps=s.steps,
                            batch_size=self.batch_size, shard_size=self.shard_size)


def _unet_evaluations(generator, s: SamplerSetting) -> int:
    from ..plans import network_evaluations
    return network_evaluations(generator, s.sampler, s.steps)


def _label_quality(run: Path, oracle, num_classes: int) -> tuple[np.ndarray, dict]:
    """Per-sample confusions of the ensemble's labels (columns) against the oracle's masks (rows)."""
    from ..data.oracle import oracle_statistics
    pairs = GeneratedPairs(run, kept_only=False)
    images, labels = pairs.arrays()
    stats = oracle_statistics(oracle, images)
    confusions = per_item_confusions(labels, stats["predictions"], num_classes)
    kept = np.array([r["kept"] for r in pairs.rows])
    return confusions, {"oracle_flip_consistency_miou": stats["flip_consistency_miou"],
                        "label_miou_all": miou_of(confusions), "label_miou_kept": miou_of(confusions[kept]),
                        "kept": int(kept.sum())}


def time_samplers(generator, settings, seeds: list[int]) -> dict[str, float]:
    """Seconds per sample of each setting, measured back to back on the same seeds and batch."""
    out = {}
    for s in settings:
        t = time.perf_counter()
        generator.sample(seeds, sampler=s.sampler, num_steps=s.steps)
        out[s.name] = (time.perf_counter() - t) / len(seeds)
    return out


def run_sampler_study(out_dir: str | Path, ensemble: str | Path, data: str | Path, cfg: SamplerStudyConfig, *,
                      workers: int = 1, threads: int | None = None, device: str = "cpu",
                      progress: bool = True) -> dict:
    """Each setting through the whole pipeline; on a GPU (`device` cuda / cuda:N) in one process there."""
    from ..devices import resolve_device
    from ..ensemble.model import load_ensemble
    from ..generators.loading import load_generator
    from ..environment import provenance
    from ..presets import EMBEDDED_ORACLE_DIR
    if not cfg.settings:
        raise OptionError("--settings", "need at least one sampler setting")
    if not cfg.deeplab_seeds:
        raise OptionError("--deeplab-seeds", "need at least one seed")
    cfg.check_segmenter()
    out = Path(out_dir)
    ens = load_ensemble(ensemble).cfg
    K, ignore = ens.num_classes, ens.ignore_label
    test = read_labelled(resolve_split(data, "test"), K, ignore)
    dev = resolve_device(device)
    workers = workers if dev.type == "cpu" else 1
    generator = load_generator(cfg.model, dev)
    oracle = load_segmenter(EMBEDDED_ORACLE_DIR).to(dev)
    write_study_config(out, {"study": "samplers", **asdict(cfg), "ensemble": str(ensemble), "data": str(data)})
    rows = {s.name: _measure_setting(out / s.name, s, cfg, ensemble, data, generator, oracle, test, K, ignore,
                                     workers=workers, threads=threads, device=str(dev), progress=progress)
            for s in cfg.settings}

    timing_file = out / "timing.json"
    if timing_file.is_file():
        timing = read_json(timing_file)
    else:
        seeds = [sample_seed(cfg.seed, i) for i in range(cfg.timing_samples)]
        timing = {"seconds_per_sample": time_samplers(generator, cfg.settings, seeds),
                  "samples": cfg.timing_samples, "threads": torch.get_num_threads()}
        write_json(timing_file, timing)

    report = {"baseline": cfg.settings[0].name, "test_images": len(test), "samples": cfg.n,
              "deeplab_seeds": list(cfg.deeplab_seeds),
              "segmenter": cfg.segmenter_report(cfg.deeplab_epochs, cfg.input_scale),
              "rows": _compare_to_baseline(out, cfg, rows, timing, ignore), **provenance()}
    write_study(out, report, study_markdown, "samplers")
    return report


def _measure_setting(d: Path, s, cfg: SamplerStudyConfig, ensemble, data, generator, oracle, test, K: int,
                     ignore: int, *, workers: int, threads, device: str, progress: bool) -> dict:
    """One sampler setting through the pipeline: sample, label, filter (measured once, kept in
    measured.json), then DeepLab once per training seed (each kept under deeplab/seed-S)."""
    measured = d / "measured.json"
    if measured.is_file():
        row = read_json(measured)
    else:
        t0 = time.perf_counter()
        sample_run(d / "run", cfg.sample_config(s), workers=workers, device=device, threads=threads,
                   progress=progress)
        label_run(d / "run", ensemble, workers=workers, device=device, threads=threads, progress=progress)
        card = finalize_run(d / "run")
        label_cms, label_stats = _label_quality(d / "run", oracle, K)
        np.save(d / "label_confusions.npy", label_cms)
        row = {"sampler": s.sampler, "steps": s.steps, "unet_evaluations": _unet_evaluations(generator, s),
               "pairs": card["counts"]["kept"], **label_stats,
               "sample_label_seconds": round(time.perf_counter() - t0, 1)}
        write_json(measured, row)
    test_cms = deeplab_over_seeds(d / "run", data, d / "deeplab", test, cfg.deeplab_seeds, epochs=cfg.deeplab_epochs,
                                  input_scale=cfg.input_scale, batch_size=cfg.deeplab_batch, num_classes=K,
                                  ignore_label=ignore, threads=threads, device=device, progress=progress,
                                  **cfg.segmenter_fields(data))
    np.save(d / "test_confusions.npy", test_cms)  # (seeds, test images, K, K)
    per_seed = [miou_of(c, ignore) for c in test_cms]
    return {**row, "deeplab_miou": float(np.mean(per_seed)), "deeplab_miou_std": float(np.std(per_seed)),
            "deeplab_miou_per_seed": per_seed}


def _compare_to_baseline(out: Path, cfg: SamplerStudyConfig, rows: dict, timing: dict, ignore: int) -> dict:
    """Time per sample, evaluation ratio and paired-bootstrap differences against the first setting."""
    base = cfg.settings[0].name
    base_label = np.load(out / base / "label_confusions.npy")
    base_test = np.load(out / base / "test_confusions.npy")
    for s in cfg.settings:
        r = rows[s.name]
        r["seconds_per_sample"] = timing["seconds_per_sample"][s.name]
        r["unet_evaluation_ratio"] = rows[base]["unet_evaluations"] / r["unet_evaluations"]
        if s.name != base:
            r["label_miou_vs_baseline"] = paired_bootstrap(base_label, np.load(out / s.name / "label_confusions.npy"),
                                                           resamples=cfg.bootstrap)
            r["deeplab_miou_vs_baseline"] = hierarchical_bootstrap(
                base_test, np.load(out / s.name / "test_confusions.npy"), ignore_label=ignore,
                resamples=cfg.bootstrap)
    return rows


def study_markdown(report: dict) -> str:
    seeds = len(report.get("deeplab_seeds", [0]))
    spread = f"mean ± std over {seeds} seeds" if seeds > 1 else "1 seed"
    deeplab = f"DeepLab mIoU (real test, {spread})"
    lines = ["| sampler | UNet evals / sample | fewer evals | s / sample | oracle flip-consistency | "
             f"label mIoU vs oracle | Δ vs baseline (95 % CI) | {deeplab} | Δ vs baseline (95 % CI) |",
             "|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for name, r in report["rows"].items():
        spread = f" ± {100 * r['deeplab_miou_std']:.1f}" if seeds > 1 else ""
        lines.append(f"| {name} | {r['unet_evaluations']} | {r['unet_evaluation_ratio']:.0f}× | "
                     f"{r['seconds_per_sample']:.3f} | {100 * r['oracle_flip_consistency_miou']:.1f} | "
                     f"{100 * r['label_miou_all']:.1f} | {interval_text(r.get('label_miou_vs_baseline'))} | "
                     f"{100 * r['deeplab_miou']:.1f}{spread} | {interval_text(r.get('deeplab_miou_vs_baseline'))} |")
    return "\n".join(lines) + "\n" + segmenter_note(report)
