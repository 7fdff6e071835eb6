"""Main study (paper Table 2 on the embedded domain): every way the toolkit turns a few labelled images
into a segmenter, side by side on the same real test images, mean ± std over seeds.

Rows (the DatasetGAN row only with a StyleGAN2 model):

- direct DDPM: the pixel ensemble on diffusion features of the 20 real labelled images;
- colour RGB-3x3: the same ensemble recipe on colour features (the floor);
- DatasetDDPM: that ensemble labels DDPM samples, the 10 % most uncertain are dropped, DeepLabV3 trains
  on the pairs;
- direct DDPM (paper protocol) and DatasetDDPM (paper protocol): the same with the ensemble trained on
  20 *generated* samples annotated by the oracle, as in the paper;
- DatasetGAN: an ensemble on StyleGAN2 synthesis-layer features of 20 oracle-annotated StyleGAN2 samples
  labels StyleGAN2 samples; DeepLabV3 on the pairs. (A GAN cannot featurise real images without
  inversion, so DatasetGAN has no direct row.)

Seeds change every ensemble's initialisation and DeepLab's training seed; the samples (one run per
generator) and the annotated samples are shared by all seeds. Each DeepLab row's gap to the direct
row of its labeller has an interval that resamples test images (paired) and seeds. Resumable: every
ensemble, run, DeepLab and score is kept and reused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data.folders import read_labelled, resolve_split
from ..errors import OptionError
from .common import write_study, write_study_config
from .stats import hierarchical_bootstrap, interval_text, miou_of, per_item_confusions

DIRECT, COLOUR, DDPM = "direct DDPM", "colour RGB-3x3", "DatasetDDPM"
DIRECT_PAPER, DDPM_PAPER, GAN = "direct DDPM (paper protocol)", "DatasetDDPM (paper protocol)", "DatasetGAN"
# row -> (what its ensemble is trained on, the direct row whose ensemble labels its pairs; None for direct rows)
ROWS = {DIRECT: ("real", None), COLOUR: ("real", None), DDPM: ("real", DIRECT),
        DIRECT_PAPER: ("annotated DDPM samples", None), DDPM_PAPER: ("annotated DDPM samples", DIRECT_PAPER),
        GAN: ("annotated StyleGAN2 samples", None)}


@dataclass
class MainStudyConfig:
    model: str = "embedded"  # the diffusion model
    gan: str = "embedded-stylegan2"  # the StyleGAN2 model; "" leaves DatasetGAN out
    pairs: int = 500  # kept pairs per DeepLab row (ceil(pairs / 0.9) samples per generator)
    annotated: int = 20  # oracle-annotated samples for the paper protocol and DatasetGAN
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    sampler: str = "ddim"
    sampling_steps: int = 20
    batch_size: int = 50
    shard_size: int = 100
    members: int = 10
    max_steps: int | None = None  # cap on each ensemble's optimisation steps (quick runs only)
    deeplab_epochs: int = 6
    deeplab_batch: int = 8
    input_scale: int = 2
    arch: str = "deeplabv3"  # the DeepLab rows' segmenter (train-deeplab --arch)
    lr_schedule: str = "constant"  # their learning rate (train-deeplab --lr-schedule)
    rows_only: tuple[str, ...] = ()  # row slugs (e.g. datasetddpm), each DeepLab row with its labeller's; () = all
    real_fraction: float = 0.0  # > 0: each DeepLab row's labelled images (its ensemble's) mixed into every epoch
    bootstrap: int = 2000

    @classmethod
    def quick(cls, model: str, gan: str, **choices) -> "MainStudyConfig":
        """Tiny sizes; `choices` (real_fraction, arch, lr_schedule, rows_only) as given."""
        return cls(model=model, gan=gan, pairs=4, annotated=2, seeds=(0,), sampling_steps=2, batch_size=5,
                   shard_size=5, members=2, max_steps=40, deeplab_epochs=1, deeplab_batch=2, input_scale=1,
                   bootstrap=50, **choices)

    def validate(self) -> None:
        from ..segmenters.train_deeplab import DeepLabTrainConfig, check_mix_fraction
        DeepLabTrainConfig(arch=self.arch, lr_schedule=self.lr_schedule).validate()
        if not self.seeds:
            raise OptionError("--seeds", "need at least one seed")
        known = {_slug(r) for r in ROWS if r != GAN or self.gan}
        unknown = [r for r in self.rows_only if r not in known]
        if unknown:
            raise OptionError("--rows", f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
        check_mix_fraction(self.real_fraction)

    def rows(self) -> list[str]:
        rows = [r for r in ROWS if r != GAN or self.gan]
        if not self.rows_only:
            return rows
        wanted = {r for r in rows if _slug(r) in self.rows_only}
        wanted |= {ROWS[r][1] for r in wanted if ROWS[r][1]}  # the gap needs the labeller's row
        return [r for r in rows if r in wanted]


def _slug(row: str) -> str:
    return row.lower().replace(" ", "-").replace("(", "").replace(")", "")


class _Study:
    """The shared inputs (data, annotated samples, sample runs) and the per-seed stages of one study folder."""

    def __init__(self, out: Path, data: Path, cfg: MainStudyConfig, *, workers, threads, device, progress):
        from ..presets import EMBEDDED
        self.out, self.data, self.cfg = out, data, cfg
        self.workers, self.threads, self.device, self.progress = workers, threads, device, progress
        self.K, self.ignore = EMBEDDED.num_classes, EMBEDDED.ignore_label
        self.test = read_labelled(resolve_split(data, "test"), self.K, self.ignore)

    def annotated(self, kind: str) -> Path:
        """`annotated` samples of the diffusion model or the StyleGAN2, masks by the oracle (made once)."""
        from ..pipeline.annotate import annotate_folder
        folder = self.out / f"annotated-{kind}"
        if not (folder / "samples.json").is_file():
            model = self.cfg.model if kind == "ddpm" else self.cfg.gan
            annotate_folder(folder, self.cfg.annotated, model=model, sampler=self.cfg.sampler,
                            sampling_steps=self.cfg.sampling_steps, batch_size=self.cfg.batch_size,
                            oracle_annotate=True, device=self.device)
        return folder

    def samples(self, kind: str) -> Path:
        """One unlabelled sample run per generator (resumable), shared by every labeller and seed."""
        from ..pipeline.config import SampleConfig
        from ..pipeline.generate import sample_run
        run = self.out / f"samples-{kind}"
        cfg = SampleConfig(model=self.cfg.model if kind == "ddpm" else self.cfg.gan,
                           n=int(np.ceil(self.cfg.pairs / 0.9)), sampler=self.cfg.sampler,
                           sampling_steps=self.cfg.sampling_steps, batch_size=self.cfg.batch_size,
                           shard_size=self.cfg.shard_size)
        sample_run(run, cfg, workers=self.workers if self.device.type == "cpu" else 1, device=str(self.device),
                   threads=self.threads, progress=self.progress)
        return run

    def labelled(self, row: str) -> Path:
        """The labelled images `row`'s ensemble is trained on: the real ones, or the annotated samples."""
        on = ROWS[row][0]
        return self.data if on == "real" else self.annotated("gan" if row == GAN else "ddpm")

    def ensemble(self, seed: int, row: str) -> Path:
        """The ensemble a row uses at `seed` (trained once, kept)."""
        from ..ensemble.train import EnsembleTrainConfig
        from ..generators.loading import stylegan2_problem
        from ..workflows import resolve_problem, train_ensemble_folder
        folder = self.out / f"seed-{seed}" / f"ensemble-{_slug(row)}"
        if not (folder / "ensemble.json").is_file():
            model = self.cfg.gan if row == GAN else self.cfg.model
            problem = stylegan2_problem(resolve_problem("embedded", model=model), None, None, None)
            train_ensemble_folder(self.labelled(row), folder, problem, colour=row == COLOUR, device=self.device,
                                  progress=False, train=EnsembleTrainConfig(members=self.cfg.members, seed=seed,
                                                            max_steps=self.cfg.max_steps))
        return folder

    def direct_confusions(self, ensemble_dir: Path) -> np.ndarray:
        from ..direct import segment
        from ..ensemble.model import load_ensemble
        from ..workflows import source_for
        ensemble = load_ensemble(ensemble_dir).to(self.device)
        pred = segment(source_for(ensemble, device=self.device), ensemble, self.test.images, progress=False).labels
        return per_item_confusions(pred, self.test.masks, self.K, self.ignore)

    def deeplab_confusions(self, seed: int, row: str, ensemble_dir: Path) -> np.ndarray:
        """Label the generator's samples with `ensemble_dir` (a copy of the sample run), keep the least
        uncertain `pairs`, train DeepLabV3 (with `real_fraction`, on them and the labelled images of the
        row's ensemble) and score it on the test images."""
        from ..pipeline.finalize import finalize_run
        from ..pipeline.generate import label_run
        from ..segmenters.train_deeplab import DeepLabTrainConfig, mixed_real
        from ..workflows import train_deeplab_run
        from .common import copy_run, deeplab_confusions
        samples = self.samples("gan" if row == GAN else "ddpm")
        run = self.out / f"seed-{seed}" / f"run-{_slug(row)}"
        copy_run(samples, run)
        label_run(run, ensemble_dir, workers=self.workers if self.device.type == "cpu" else 1,
                  device=str(self.device), threads=self.threads, progress=self.progress)
        finalize_run(run, max_pairs=self.cfg.pairs)
        deeplab = self.out / f"seed-{seed}" / f"deeplab-{_slug(row)}"
        mixed = mixed_real(self.labelled(row), self.cfg.real_fraction)
        train_deeplab_run(run, self.data, deeplab, DeepLabTrainConfig(
            epochs=self.cfg.deeplab_epochs, input_scale=self.cfg.input_scale, seed=seed, arch=self.cfg.arch,
            lr_schedule=self.cfg.lr_schedule, batch_size=self.cfg.deeplab_batch, **mixed), device=str(self.device),
            threads=self.threads, progress=self.progress)
        return deeplab_confusions(deeplab, self.test, self.K, self.ignore)

    def score(self, seed: int, row: str) -> np.ndarray:
        """(test images, K, K) confusions of `row` at `seed`, computed once and kept."""
        saved = self.out / f"seed-{seed}" / f"{_slug(row)}.npy"
        if not saved.is_file():
            labeller = ROWS[row][1]
            if labeller is None and row != GAN:
                cms = self.direct_confusions(self.ensemble(seed, row))
            else:
                cms = self.deeplab_confusions(seed, row, self.ensemble(seed, GAN if row == GAN else labeller))
            saved.parent.mkdir(parents=True, exist_ok=True)
            np.save(saved, cms)
        return np.load(saved)


def run_main_study(out_dir: str | Path, data: str | Path, cfg: MainStudyConfig, *, workers: int = 1,
                   threads: int | None = None, device: str = "cpu", progress: bool = True) -> dict:
    from ..devices import resolve_device
    from ..environment import provenance
    from ..generators.loading import model_kind
    cfg.validate()
    if cfg.gan and model_kind(cfg.gan) != "stylegan2":
        raise OptionError("--gan", f"{cfg.gan!r} is not a StyleGAN2 model folder (or 'embedded-stylegan2')")
    out = Path(out_dir)
    study = _Study(out, Path(data), cfg, workers=workers, threads=threads, device=resolve_device(device),
                   progress=progress)
    write_study_config(out, {"study": "main", **asdict(cfg), "data": str(data)}, grows=("seeds", "rows_only"))
    confusions = {row: np.stack([study.score(seed, row) for seed in cfg.seeds]) for row in cfg.rows()}
    report = main_report(cfg, confusions, study.test)
    report.update(provenance())
    write_study(out, report, main_markdown, "main")
    return report


def main_report(cfg: MainStudyConfig, confusions: dict, test) -> dict:
    from ..presets import EMBEDDED
    from ..segmenters.metrics import iou_per_class
    rows = {}
    for row, cms in confusions.items():
        per_seed = [miou_of(c, EMBEDDED.ignore_label) for c in cms]
        iou = np.array([list(iou_per_class(c.sum(0), EMBEDDED.ignore_label).values()) for c in cms])
        trained_on, labeller = ROWS[row]
        rows[row] = {"trained_on": trained_on, "labeller": labeller, "miou_mean": float(np.mean(per_seed)),
                     "miou_std": float(np.std(per_seed)), "miou_per_seed": per_seed,
                     "iou_mean": dict(zip(EMBEDDED.class_names, iou.mean(0).round(4).tolist()))}
        if labeller is not None:
            rows[row]["vs_labeller"] = hierarchical_bootstrap(confusions[labeller], cms, resamples=cfg.bootstrap,
                                                              ignore_label=EMBEDDED.ignore_label)
    if GAN in confusions and DDPM_PAPER in confusions:
        rows[GAN]["vs_datasetddpm_paper"] = hierarchical_bootstrap(confusions[DDPM_PAPER], confusions[GAN],
                                                                   resamples=cfg.bootstrap,
                                                                   ignore_label=EMBEDDED.ignore_label)
    return {"study": "main", "seeds": list(cfg.seeds), "test_images": len(test), "pairs": cfg.pairs,
            "real_fraction": cfg.real_fraction, "segmenter": {"arch": cfg.arch, "epochs": cfg.deeplab_epochs,
                                                              "input_scale": cfg.input_scale,
                                                              "lr_schedule": cfg.lr_schedule},
            "annotated": cfg.annotated, "model": cfg.model, "gan": cfg.gan or None,
            "rows": rows}


def main_markdown(report: dict) -> str:
    names = list(next(iter(report["rows"].values()))["iou_mean"])
    seeds = len(report["seeds"])
    lines = [f"| method | ensemble trained on | mIoU ({'mean ± std, ' if seeds > 1 else ''}{seeds} "
             f"seed{'s' if seeds > 1 else ''}) | Δ vs its labeller's direct mode (95 % CI) | " + " | ".join(names) + " |",
             "|---|---|---:|---|" + "---:|" * len(names)]
    for row, r in report["rows"].items():
        spread = f" ± {100 * r['miou_std']:.1f}" if seeds > 1 else ""
        lines.append(f"| {row} | {r['trained_on']} | {100 * r['miou_mean']:.1f}{spread} | "
                     f"{interval_text(r.get('vs_labeller'))} | "
                     + " | ".join(f"{100 * v:.0f}" for v in r["iou_mean"].values()) + " |")
    gan = report["rows"].get(GAN, {}).get("vs_datasetddpm_paper")
    if gan is not None:
        lines += ["", f"DatasetGAN minus DatasetDDPM (both paper protocol): {interval_text(gan)} mIoU points."]
    seg, notes = report.get("segmenter"), []
    if seg and (seg["arch"], seg["lr_schedule"]) != ("deeplabv3", "constant"):
        from ..segmenters.model import ARCH_NAMES
        epochs = f"{seg['epochs']} epoch{'s' if seg['epochs'] != 1 else ''}"
        notes.append(f"{ARCH_NAMES[seg['arch']]}, {epochs} at input x{seg['input_scale']}, {seg['lr_schedule']} "
                     "learning rate")
    if report.get("real_fraction"):
        notes.append(f"{report['pairs']} kept pairs, with the labelled images of the row's ensemble (real, or the "
                     f"annotated samples) mixed into every epoch as {report['real_fraction']:.0%} of its samples")
    if notes:
        lines += ["", "DeepLab rows: " + "; ".join(notes) + "."]
    return "\n".join(lines) + "\n"
