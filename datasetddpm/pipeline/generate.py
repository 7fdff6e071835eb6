"""Sampling and labelling loops of one worker, and the commands' library entry points."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..direct import FeatureSource, segment
from ..distributed import launch, resolve_world
from ..ensemble.model import load_ensemble
from ..generators.diffusion import load_generator
from ..progress import progress_bar
from .config import SampleConfig, claim_manifest, sample_seed
from .shards import ShardStore

FAULT_ENV = "DATASETDDPM_FAULT_AFTER_BATCHES"  # tests: SIGKILL this process after N sampled batches


def _ensemble_hash(ensemble_dir: str | Path) -> str:
    h = hashlib.sha256()
    for name in ("ensemble.json", "ensemble.safetensors"):
        h.update((Path(ensemble_dir) / name).read_bytes())
    return h.hexdigest()[:16]


class _Labeller:
    def __init__(self, ensemble_dir: str | Path, generator=None, device: str = "cpu"):
        self.ensemble = load_ensemble(ensemble_dir)
        spec = self.ensemble.cfg.feature_spec()
        if generator is None or generator.source != self.ensemble.cfg.model:
            generator = load_generator(self.ensemble.cfg.model, device)
        self.source = FeatureSource(generator, spec)
        self.num_classes = self.ensemble.cfg.num_classes

    def __call__(self, images: np.ndarray):
        return segment(self.source, self.ensemble, images, progress=False)


def _committed_samples(store: ShardStore, cfg: SampleConfig, labels: bool) -> int:
    return sum(len(cfg.shard_range(k)) for k in range(cfg.num_shards) if store.committed(k, labels))


def _work(rank: int, world: int, run_dir: str, cfg_dict: dict, ensemble_dir: str | None, labels_hash: str,
          do_sample: bool, device: str, progress: bool) -> None:
    cfg = SampleConfig(**cfg_dict)
    store = ShardStore(run_dir)
    fault_after = int(os.environ.get(FAULT_ENV, "0"))
    generator = load_generator(cfg.model, device) if do_sample else None
    labeller = _Labeller(ensemble_dir, generator, device) if ensemble_dir else None
    mine = [k for k in range(cfg.num_shards) if k % world == rank]
    batches_done = 0
    with progress_bar(progress and rank == 0) as bar:
        task = bar.add_task("sample" if do_sample else "label", total=cfg.n,
                            completed=_committed_samples(store, cfg, labels=not do_sample), info="")
        t0, made = time.time(), 0
        for k in mine:
            need_images = do_sample and not store.committed(k)
            need_labels = labeller is not None and not store.committed(k, labels=True)
            if not need_images and not need_labels:
                continue
            ids = list(cfg.shard_range(k))
            if need_images:
                chunks = []
                for b in range(0, len(ids), cfg.batch_size):
                    batch = ids[b:b + cfg.batch_size]
                    seeds = [sample_seed(cfg.seed, i) for i in batch]
                    chunks.append(generator.sample(seeds, sampler=cfg.sampler, num_steps=cfg.sampling_steps)
                                  .permute(0, 2, 3, 1).numpy())
                    batches_done += 1
                    made += len(batch)
                    if fault_after and batches_done >= fault_after:
                        os.kill(os.getpid(), signal.SIGKILL)
                    if rank == 0:
                        rate = made / max(time.time() - t0, 1e-9)
                        bar.update(task, completed=_committed_samples(store, cfg, False) + len(batch) + b,
                                   info=f"{rate * world:.2f} samples/s")
                images = np.concatenate(chunks)
                store.write_samples(k, ids, [sample_seed(cfg.seed, i) for i in ids], images, cfg.hash())
            else:
                ids, images = store.read_images(k)
            if need_labels:
                seg = labeller(images)
                store.write_labels(k, ids, seg.labels, seg.image_uncertainty, labeller.num_classes, labels_hash)
            if rank == 0:
                bar.update(task, completed=_committed_samples(store, cfg, labels=not do_sample))


def _prepare_labels(run: Path, ensemble_dir: str | Path, cfg: SampleConfig, store: ShardStore, overwrite: bool) -> str:
    labels_hash = _ensemble_hash(ensemble_dir)
    if claim_manifest(run / "labels_manifest.json", "labels", {"ensemble": str(ensemble_dir)}, labels_hash,
                      overwrite=overwrite):
        for k in range(cfg.num_shards):
            store.discard(k, labels_only=True)
    return labels_hash


def sample_run(run_dir: str | Path, cfg: SampleConfig, *, ensemble: str | Path | None = None, workers: int = 1,
               gpus: int = 0, device: str = "cpu", threads: int | None = None, overwrite: bool = False,
               progress: bool = True) -> dict:
    """Generate `cfg.n` samples into `run_dir` (labelling each shard when `ensemble` is given); resumable."""
    cfg.validate()
    world, backend, device = resolve_world(workers, gpus, device)
    run = Path(run_dir)
    store = ShardStore(run)
    if claim_manifest(run / "manifest.json", "sample", asdict(cfg), cfg.hash(), overwrite=overwrite):
        shutil.rmtree(store.root, ignore_errors=True)  # a different run: start from nothing
    store.clean_partials()
    labels_hash = _prepare_labels(run, ensemble, cfg, store, overwrite) if ensemble else ""
    launch(_work, (str(run), asdict(cfg), str(ensemble) if ensemble else None, labels_hash, True, device, progress),
           world=world, backend=backend, threads=threads)
    return {"samples": _committed_samples(store, cfg, False),
            "labelled": _committed_samples(store, cfg, True) if ensemble else 0}


def label_run(run_dir: str | Path, ensemble: str | Path, *, workers: int = 1, gpus: int = 0, device: str = "cpu",
              threads: int | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Label every committed shard of an existing sample run that has no labels yet; resumable."""
    from ..io import read_json
    run = Path(run_dir)
    cfg = SampleConfig(**read_json(run / "manifest.json")["config"])
    world, backend, device = resolve_world(workers, gpus, device)
    store = ShardStore(run)
    store.clean_partials()
    missing = [k for k in range(cfg.num_shards) if not store.committed(k)]
    if missing:
        from ..errors import DatasetDDPMError
        raise DatasetDDPMError(f"{run}: {len(missing)} shard(s) not sampled yet (first: {missing[0]}); "
                               f"finish `datasetddpm sample` first")
    labels_hash = _prepare_labels(run, ensemble, cfg, store, overwrite)
    launch(_work, (str(run), asdict(cfg), str(ensemble), labels_hash, False, device, progress),
           world=world, backend=backend, threads=threads)
    return {"labelled": _committed_samples(store, cfg, True)}
