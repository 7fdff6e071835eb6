"""The stages of a `reproduce` run, each a call of the toolkit's own library function (the one its CLI
command calls) writing into its own subfolder, each resumable by itself.

A stage returns a small summary (the numbers the table needs); `run.py` records it in
`<out>/progress.json` and skips the stage on a rerun."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..distributed import Tasks
from .config import ReproduceConfig

# The stage kinds from sampling on, in the order every method runs them; every other stage (the data, direct
# mode, the annotated samples, the labellers) comes before sampling (phase 0).
LATER_KINDS = ("sample", "label", "finalize", "train-deeplab", "compare")


@dataclass
class Stage:
    name: str
    folder: Path  # its outputs
    run: Callable[[], dict]
    work: str  # what it does, for the plan
    # A batch task's share of this stage (its shards, as `sample --task-index` writes them) and the stages
    # that same pass finishes too (the label stage: a task labels each shard as it is made)
    task_part: Callable[[Tasks], dict] | None = None
    covers: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.name.rsplit(": ", 1)[-1]

    @property
    def phase(self) -> int:
        """0 before sampling, then 1 + the kind's place in LATER_KINDS."""
        return LATER_KINDS.index(self.kind) + 1 if self.kind in LATER_KINDS else 0


def _device(cfg: ReproduceConfig):
    from ..devices import resolve_device
    return resolve_device(cfg.device)


def _train_cfg(cfg: ReproduceConfig, seed: int):
    from ..ensemble.train import EnsembleTrainConfig
    return EnsembleTrainConfig(members=cfg.members, seed=seed, max_steps=cfg.ensemble_steps)


def problem_for(cfg: ReproduceConfig, model: str | None = None):
    from ..generators.loading import stylegan2_problem
    from ..workflows import resolve_problem
    problem = resolve_problem(cfg.preset, model=model or cfg.model or None)
    return stylegan2_problem(problem, None, None, None) if model else problem


def _train_ensemble(cfg: ReproduceConfig, data: Path, out: Path, seed: int, model: str | None = None) -> dict:
    from ..workflows import train_ensemble_folder
    log = train_ensemble_folder(data, out, problem_for(cfg, model), train=_train_cfg(cfg, seed),
                                device=_device(cfg), progress=False)
    return {"epochs": log["epochs"], "pixels": log["pixels"]}


def _evaluate(cfg: ReproduceConfig, ensemble: Path, out: Path) -> dict:
    from ..workflows import evaluate_folder
    ev = evaluate_folder(ensemble, cfg.data_dir, out, device=_device(cfg), progress=False)
    return {"miou": ev.miou, "images": ev.num_images}


def direct_stages(cfg: ReproduceConfig) -> list[Stage]:
    """Direct mode: one ensemble per seed on real/train, its mIoU on real/test."""
    stages = []
    for seed in cfg.seeds:
        folder = cfg.root / "direct" / f"seed_{seed}"
        stages += [Stage(f"direct seed {seed}: train-ensemble", folder / "ensemble",
                         lambda s=seed, f=folder: _train_ensemble(cfg, cfg.data_dir, f / "ensemble", s),
                         f"ensemble of {cfg.members} MLPs on real/train, seed {seed}"),
                   Stage(f"direct seed {seed}: evaluate", folder,
                         lambda f=folder: _evaluate(cfg, f / "ensemble", f / "evaluate.json"),
                         "mIoU on real/test")]
    return stages


def _procedural_data(cfg: ReproduceConfig) -> dict:
    from ..data.folders import write_procedural_dataset
    return write_procedural_dataset(cfg.data_dir, train=20, test=200)


def _oracle_annotated(cfg: ReproduceConfig, out: Path, model: str) -> dict:
    """The embedded domain's stand-in for the paper's assessors: the oracle annotates generated samples."""
    from ..pipeline.annotate import annotate_folder
    k = cfg.annotated or _count_images(cfg.data_dir / "real" / "train")
    paths = annotate_folder(out, k, model=model, seed=0, sampler=cfg.sampler, sampling_steps=cfg.sampling_steps,
                            batch_size=min(cfg.batch_size, k), oracle_annotate=True, device=str(_device(cfg)))
    return {"annotated": len(paths)}


def _count_images(folder: Path) -> int:
    from ..data.folders import read_images
    return len(read_images(folder)[1])


def _sample(cfg: ReproduceConfig, run: Path, model: str, labeller: Path | None = None, tasks: Tasks = Tasks()) -> dict:
    """The sample stage; with `labeller` each shard is labelled as it is made (`sample --ensemble`), the way a
    batch task makes its shards' samples and labels: the same uint8 images, hence the same labels as `label`."""
    from ..pipeline.config import SampleConfig
    from ..pipeline.generate import sample_run
    sample_cfg = SampleConfig(model=model, n=cfg.n, seed=0, sampler=cfg.sampler, sampling_steps=cfg.sampling_steps,
                              batch_size=cfg.batch_size, shard_size=cfg.sample_shard_size)
    result = sample_run(run, sample_cfg, ensemble=labeller, gpus=cfg.gpus, device=cfg.device, threads=cfg.threads,
                        progress=False, tasks=tasks)
    return {"samples": result["samples"]} if labeller is None else result


def task_shards(cfg: ReproduceConfig, tasks: Tasks) -> list[int]:
    """The shards of a generation run that task `tasks.index` writes (with --gpus G: G workers' shards)."""
    world = max(cfg.gpus, 1)
    return [k for k in range(cfg.num_shards) if k % tasks.global_world(world) // world == tasks.index]


def shard_samples(cfg: ReproduceConfig, shards: list[int]) -> int:
    return sum(min(cfg.sample_shard_size, cfg.n - k * cfg.sample_shard_size) for k in shards)


def _label(cfg: ReproduceConfig, run: Path, ensemble: Path) -> dict:
    from ..pipeline.generate import label_run
    result = label_run(run, ensemble, gpus=cfg.gpus, device=cfg.device, threads=cfg.threads, progress=False)
    return {"labelled": result["labelled"]}


def _finalize(run: Path) -> dict:
    from ..pipeline.finalize import finalize_run
    card = finalize_run(run)
    return {"kept": card["counts"]["kept"], "generated": card["counts"]["generated"]}


def _deeplab(cfg: ReproduceConfig, run: Path, out: Path) -> dict:
    from ..workflows import deeplab_config, train_deeplab_run
    dl = deeplab_config(cfg.preset, epochs=cfg.deeplab_epochs, seed=0)
    return train_deeplab_run(run, cfg.data_dir, out, dl, gpus=cfg.gpus, device=cfg.device, threads=cfg.threads,
                             progress=False)


def synthetic_stages(cfg: ReproduceConfig, method: str, model: str, annotated: Path, make_annotated: bool) -> list[Stage]:
    """DatasetDDPM (or DatasetGAN with a StyleGAN2 `model`) in the paper's protocol: a labeller on the
    annotated generated samples, sample, label, drop the 10 % most uncertain, DeepLab on the rest."""
    root = cfg.root / method.lower()
    run, labeller, stylegan = root / "generated", root / "labeller", method == "DatasetGAN"
    stages = []
    if make_annotated:
        stages.append(Stage(f"{method}: annotate", annotated, lambda: _oracle_annotated(cfg, annotated, model),
                            "generated samples annotated by the embedded oracle (the paper: by assessors)"))
    stages += [
        Stage(f"{method}: labeller", labeller,
              lambda: _train_ensemble(cfg, annotated, labeller, cfg.seeds[0], model if stylegan else None),
              f"ensemble of {cfg.members} MLPs on the annotated generated samples in {annotated}"),
        Stage(f"{method}: sample", run, lambda: _sample(cfg, run, model),
              f"{cfg.n} samples" + ("" if stylegan else f", {cfg.sampler} sampler, {cfg.sampling_steps} steps"),
              task_part=lambda tasks: _sample(cfg, run, model, labeller, tasks), covers=(f"{method}: label",)),
        Stage(f"{method}: label", run, lambda: _label(cfg, run, labeller), "the labeller's vote on every sample"),
        Stage(f"{method}: finalize", run, lambda: _finalize(run), "drop the 10 % most uncertain pairs"),
        Stage(f"{method}: train-deeplab", root / "deeplab", lambda: _deeplab(cfg, run, root / "deeplab"),
              "the preset's segmenter on the kept pairs, epoch chosen on real/train"),
    ]
    return stages


def _compare(cfg: ReproduceConfig, segmenters: dict[str, Path]) -> dict:
    from ..compare import compare
    ensemble = cfg.root / "direct" / f"seed_{cfg.seeds[0]}" / "ensemble"
    report = compare(ensemble, segmenters, cfg.data_dir, cfg.root / "compare", device=_device(cfg), progress=False)
    return {"miou": {name: row["miou"] for name, row in report["methods"].items()}}


def all_stages(cfg: ReproduceConfig) -> list[Stage]:
    """The whole plan, in order."""
    stages = []
    if not cfg.data:
        stages.append(Stage("data", cfg.data_dir, lambda: _procedural_data(cfg),
                            "the embedded domain in the reference layout: 20 train, 200 test images"))
    stages += direct_stages(cfg)
    segmenters = {}
    if cfg.datasetddpm:
        made = not cfg.paper_preset
        annotated = cfg.root / "datasetddpm" / "annotated" if made else cfg.data_dir / "ddpm"
        stages += synthetic_stages(cfg, "DatasetDDPM", problem_for(cfg).model, annotated, made)
        segmenters["DatasetDDPM"] = cfg.root / "datasetddpm" / "deeplab" / "best"
    if cfg.stylegan2:
        given = Path(cfg.stylegan2_data) if cfg.stylegan2_data else cfg.data_dir / "gan"
        made = not cfg.paper_preset and not cfg.stylegan2_data
        annotated = cfg.root / "datasetgan" / "annotated" if made else given
        stages += synthetic_stages(cfg, "DatasetGAN", cfg.stylegan2, annotated, made)
        segmenters["DatasetGAN"] = cfg.root / "datasetgan" / "deeplab" / "best"
    if segmenters:
        stages.append(Stage("compare", cfg.root / "compare", lambda: _compare(cfg, segmenters),
                            "direct mode (first seed) against the DeepLab(s) on real/test"))
    return stages
