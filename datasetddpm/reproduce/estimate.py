"""Time and disk per stage for `reproduce --dry-run`, from the timed steps of the commands' own dry runs
(datasetddpm/plans.py): ensemble training, sampling and DeepLab steps are timed on this device; labelling,
evaluating and comparing are one feature pass per image, timed once. Nothing is written: the embedded
preset's procedural data, when it is still to be made, is drawn in a temporary folder."""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from .config import ReproduceConfig, kept_pairs
from .stages import Stage, _train_cfg, problem_for


class Estimator:
    def __init__(self, cfg: ReproduceConfig):
        self.cfg = cfg
        self.world = max(cfg.gpus, 1)
        self.timed = "times from a few timed steps on this device; workers assumed to scale linearly"
        self._tmp = None
        self._cache: dict[str, object] = {}

    def __enter__(self):
        if not self.cfg.data_dir.is_dir():  # embedded, data not made yet: a throwaway copy to time on
            from ..data.folders import write_procedural_dataset
            self._tmp = tempfile.TemporaryDirectory(prefix="datasetddpm-plan-")
            write_procedural_dataset(Path(self._tmp.name) / "data", train=20, test=200)
            self.cfg = replace(self.cfg, data=str(Path(self._tmp.name) / "data"))
        return self

    def __exit__(self, *exc):
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def device(self):
        from ..devices import resolve_device
        return resolve_device(self.cfg.device)

    def _count(self, split: str) -> int:
        from .stages import _count_images
        return _count_images(self.cfg.data_dir / "real" / split)

    def feature_seconds(self) -> float:
        """One image's feature pass (the preset's blocks and steps) with the diffusion model."""
        if "features" not in self._cache:
            import torch
            from ..data.folders import read_images
            from ..workflows import source_for
            source = source_for(problem_for(self.cfg), device=self.device)
            images = read_images(self.cfg.data_dir / "real" / "train", 1)[0]
            one = torch.from_numpy(images[:1]).permute(0, 3, 1, 2)
            source.maps(one)  # warm-up
            t = time.perf_counter()
            source.maps(one)
            self._cache["features"] = time.perf_counter() - t
        return self._cache["features"]

    def sample_plan(self, stage: Stage, model: str):
        from ..pipeline.config import SampleConfig
        from ..plans import plan_sample_run
        cfg = self.cfg
        sample_cfg = SampleConfig(model=model, n=cfg.n, sampler=cfg.sampler, sampling_steps=cfg.sampling_steps,
                                  batch_size=cfg.batch_size, shard_size=cfg.sample_shard_size)
        return plan_sample_run(stage.folder, sample_cfg, gpus=cfg.gpus, device=cfg.device)

    def __call__(self, stage: Stage, samples: int | None = None) -> tuple[float, int, str]:
        """(seconds, bytes, note) of one stage; `samples`: a batch task's share of a sample or label stage."""
        if samples is not None and stage.kind in ("sample", "label"):
            seconds, disk, note = self(stage)
            share = samples / max(self.cfg.n, 1)
            return seconds * share, int(disk * share), note
        kind = stage.name.rsplit(": ", 1)[-1]
        method = stage.name.split(":")[0]
        model = self.cfg.stylegan2 if method == "DatasetGAN" else problem_for(self.cfg).model
        side = problem_for(self.cfg).resolution or 256
        if stage.name == "data":
            return 0.0, 220 * 32 * 32 * 4, "procedural, seconds"
        if kind in ("train-ensemble", "labeller"):
            return self._ensemble(stage, model, method)
        if kind == "evaluate":
            return self.feature_seconds() * self._count("test"), 1 << 12, "one feature pass per test image"
        if kind in ("annotate", "sample"):
            n = self._annotated() if kind == "annotate" else self.cfg.n
            per = self._per_sample(stage, model)
            return per * n / (1 if kind == "annotate" else self.world), n * side * side * 3, "timed sampling steps"
        if kind == "label":
            if method == "DatasetGAN":
                return self._per_sample(stage, model) * self.cfg.n / self.world, self.cfg.n * side * side, "one pass"
            return self.feature_seconds() * self.cfg.n / self.world, self.cfg.n * side * side, "one feature pass per sample"
        if kind == "finalize":
            return 0.0, 0, "ranks the samples by uncertainty"
        if kind == "train-deeplab":
            return self._deeplab(side)
        return self.feature_seconds() * self._count("test"), 1 << 20, "direct mode and DeepLab on real/test"

    def _annotated(self) -> int:
        return self.cfg.annotated or self._count("train")

    def _per_sample(self, stage: Stage, model: str) -> float:
        key = f"sample:{model}"
        if key not in self._cache:
            folder = self.cfg.root / ("datasetgan" if "stylegan" in model else "datasetddpm") / "generated"
            plan = self.sample_plan(replace(stage, folder=folder), model)
            self._cache[key] = plan.seconds * self.world / max(self.cfg.n, 1)
        return self._cache[key]

    def _ensemble(self, stage: Stage, model: str, method: str) -> tuple[float, int, str]:
        from ..workflows import plan_ensemble_folder
        if method == "DatasetGAN":
            return 0.0, 1 << 20, "not estimated: a StyleGAN2 labeller needs its annotated samples' latents"
        data = self.cfg.data_dir
        plan = plan_ensemble_folder(data, stage.folder, problem_for(self.cfg), train=_train_cfg(self.cfg, 0),
                                    device=self.device)
        return plan.seconds, self._ensemble_bytes(plan), "timed feature pass and ensemble steps" + (
            " (on real/train: the annotated samples are made by an earlier stage)" if method == "DatasetDDPM" else "")

    def _ensemble_bytes(self, plan) -> int:
        """float32 weights of every MLP, as `train-ensemble` writes them."""
        from ..ensemble.model import hidden_sizes
        dim = int(re.search(r"(\d+) features per pixel", dict(plan.rows)["labelled images"]).group(1))
        k = len(problem_for(self.cfg).class_names)
        h1, h2 = hidden_sizes(k)
        return 4 * self.cfg.members * (dim * h1 + h1 * h2 + h2 * k + h1 + h2 + k)

    def _deeplab(self, side: int) -> tuple[float, int, str]:
        from ..plans import plan_train_deeplab
        from ..workflows import deeplab_config
        cfg = deeplab_config(self.cfg.preset, epochs=self.cfg.deeplab_epochs)
        kept = kept_pairs(self.cfg.n)
        k = len(problem_for(self.cfg).class_names)
        plan = plan_train_deeplab(max(kept, 1), side, k, cfg, world=self.world, device=self.device,
                                  val=self._count("train"))  # the epoch is chosen on real/train
        millions = float(re.search(r"([\d.]+)M parameters", dict(plan.rows)["segmenter"]).group(1))
        # float32 weights and two Adam moments, in the resume checkpoint and the best epoch's folder
        return plan.seconds, int(2 * 3 * 4 * millions * 1e6), f"{cfg.arch}/{cfg.encoder}, {cfg.epochs} epochs on {kept} pairs"
