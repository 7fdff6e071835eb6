"""Sampling and labelling loops of one worker, and the commands' library entry points."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from ..devices import resolve_device
from ..direct import FeatureSource, GivenMaps, segment
from ..distributed import Tasks, launch, resolve_world, shard_delay, torchrun_env
from ..ensemble.model import load_ensemble
from ..errors import DatasetDDPMError, InputError, OptionError
from ..io import check_output_dir, read_json, run_lock
from ..generators.loading import load_generator, resolve_precision, speed_up
from ..progress import progress_bar
from ..seeds import filled
from .class_shares import FirstShardReport
from .config import SampleConfig, claim_manifest, recorded_settings, sample_seed
from .part_lock import part_lock
from ..data.shards import ShardStore

FAULT_ENV = "DATASETDDPM_FAULT_AFTER_BATCHES"  # tests: SIGKILL this process after N sampled batches


def ensemble_hash(ensemble_dir: str | Path) -> str:
    h = hashlib.sha256()
    for name in ("ensemble.json", "ensemble.safetensors"):
        h.update((Path(ensemble_dir) / name).read_bytes())
    return h.hexdigest()[:16]


LABEL_BATCH = 8  # images per UNet pass when labelling (direct.segment's default)


class Labeller:
    """The ensemble and its generator on one device; labels a batch of images (numpy in, numpy out)."""

    def __init__(self, ensemble_dir: str | Path, generator=None, device: str | torch.device = "cpu",
                 precision: str = "fp32"):
        self.ensemble = load_ensemble(ensemble_dir).to(device)
        spec = self.ensemble.cfg.feature_spec()
        if spec is None:  # a colour ensemble (label-images) needs no generator
            generator = None
        elif generator is None:  # `label` over a finished run; `sample` passes its own (checked) generator
            generator = speed_up(load_generator(self.ensemble.cfg.model or "embedded", device), precision)
        self.source = FeatureSource(generator, spec)
        self.num_classes = self.ensemble.cfg.num_classes
        self.class_names = self.ensemble.cfg.class_names or tuple(str(k) for k in range(self.num_classes))

    def __call__(self, images: np.ndarray):
        n = len(images)  # the last batch filled with copies of the last image (see `filled`)
        padded = images if n % LABEL_BATCH == 0 else np.concatenate(
            [images, np.repeat(images[-1:], -n % LABEL_BATCH, axis=0)])
        return segment(self.source, self.ensemble, padded, batch_size=LABEL_BATCH, progress=False).first(n)

    def label_maps(self, images: np.ndarray, maps: list[torch.Tensor]):
        """Labels from maps the sampler already computed (trajectory features): no UNet pass."""
        return segment(GivenMaps(maps), self.ensemble, images, batch_size=len(images), progress=False)

    def sample_and_label(self, seeds: list[int], cfg: SampleConfig):
        """Trajectory mode: a batch of samples and their labels from the sampling UNet's own activations."""
        images, maps = self.source.generator.sample_with_features(seeds, self.source.spec, sampler=cfg.sampler,
                                                                  num_steps=cfg.sampling_steps)
        images = images.permute(0, 2, 3, 1).numpy()
        return images, self.label_maps(images, maps)

    def remember(self, images: np.ndarray, seeds: list[int]) -> None:
        """A latent-based generator (StyleGAN2) computes features from the seeds that made the images."""
        remember = getattr(self.source.generator, "remember_seeds", None)
        if remember is not None:
            remember(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), seeds)


def committed_samples(store: ShardStore, cfg: SampleConfig, labels: bool) -> int:
    return sum(len(cfg.shard_range(k)) for k in range(cfg.num_shards) if store.committed(k, labels))


WRITE_BEHIND = True  # benchmarks/writer_overlap.py turns it off to time the serial loop


class ShardWriter:
    """Shard k's PNG encoding, hashing and fsyncs run in one background thread while shard k+1 samples.

    One thread, first in first out: a shard's labels are written after its images, and shards commit in
    order. At most one shard waits to be written (`wait` before queueing the next), so memory stays at two
    shards. The same `ShardStore` calls as a serial loop, hence the same bytes; a write error is raised in
    the sampling thread at its next `wait`."""

    def __init__(self, enabled: bool = True):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="shard-writer") if enabled else None
        self._pending: list[Future] = []

    def submit(self, fn, *args, **kwargs) -> None:
        if self._pool is None:
            fn(*args, **kwargs)
        else:
            self._pending.append(self._pool.submit(fn, *args, **kwargs))

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)


def owned_shards(cfg: SampleConfig, rank: int, world: int) -> list[int]:
    """The shards of global rank `rank` of `world`: k % world == rank."""
    return [k for k in range(cfg.num_shards) if k % world == rank]


def _sample_shard(k: int, cfg: SampleConfig, generator, labeller, trajectory: bool, on_batch) -> tuple:
    """Shard k's images (and, in trajectory mode, its labels): full batches only (see `filled`)."""
    ids = list(cfg.shard_range(k))
    chunks, segs = [], []
    for b in range(0, len(ids), cfg.batch_size):
        batch = ids[b:b + cfg.batch_size]
        seeds = filled([sample_seed(cfg.seed, i) for i in batch], cfg.batch_size)
        if trajectory:
            images, seg = labeller.sample_and_label(seeds, cfg)
            chunks.append(images[:len(batch)])
            segs.append(seg.first(len(batch)))
        else:
            chunks.append(generator.sample(seeds, sampler=cfg.sampler, num_steps=cfg.sampling_steps)
                          .permute(0, 2, 3, 1).numpy()[:len(batch)])
        on_batch(b + len(batch))
    return ids, np.concatenate(chunks), segs


def _work(rank: int, world: int, run_dir: str, cfg_dict: dict, ensemble_dir: str | None, labels_hash: str,
          do_sample: bool, device: str, progress: bool, trajectory: bool = False, tasks: Tasks = Tasks(),
          precision: str = "fp32") -> None:
    cfg = SampleConfig(**cfg_dict)
    device, grank, gworld, store, mine = worker_start(rank, world, run_dir, cfg, device, tasks)
    fault_after, delay = int(os.environ.get(FAULT_ENV, "0")), shard_delay(grank)
    generator = speed_up(load_generator(cfg.model, device), cfg.precision, cfg.compile) if do_sample else None
    labeller = Labeller(ensemble_dir, generator, device, precision) if ensemble_dir else None
    first_shard = FirstShardReport(ensemble_dir, labeller.class_names if labeller else (), grank == 0,
                                   labeller.ensemble.cfg.ignore_label if labeller else None)
    batches_done = [0]
    with progress_bar(progress and grank == 0) as bar, ShardWriter(WRITE_BEHIND) as writer:
        task = bar.add_task("sample" if do_sample else "label", total=cfg.n,
                            completed=committed_samples(store, cfg, labels=not do_sample), info="")
        t0, made = time.time(), [0]
        for k in mine:
            need_images = do_sample and not store.committed(k, run_hash=cfg.hash())
            need_labels = labeller is not None and (need_images or not store.committed(k, True, labels_hash))
            if not need_images and not need_labels:
                continue
            time.sleep(delay)
            # Trajectory labels come from the sampling pass itself: a shard sampled but not yet labelled
            # is sampled again (the same seeds: the same images).
            need_images = need_images or (trajectory and need_labels)

            def on_batch(done: int) -> None:
                batches_done[0] += 1
                made[0] += cfg.batch_size
                if fault_after and batches_done[0] >= fault_after:
                    os.kill(os.getpid(), signal.SIGKILL)
                rate = made[0] / max(time.time() - t0, 1e-9)
                bar.update(task, completed=committed_samples(store, cfg, False) + done,
                           info=f"{rate * gworld:.2f} samples/s")
            if need_images:
                ids, images, segs = _sample_shard(k, cfg, generator, labeller, trajectory, on_batch)
                writer.wait()  # shard k-1 written: at most one shard behind
                writer.submit(store.write_samples, k, ids, [sample_seed(cfg.seed, i) for i in ids], images, cfg.hash())
            else:
                writer.wait()
                ids, images = store.read_images(k)
                if labeller is not None:
                    labeller.remember(images, [r["seed"] for r in store.read_sidecar(k)["samples"]])
            if need_labels:
                if trajectory:
                    labels = np.concatenate([s.labels for s in segs])
                    scores = np.concatenate([s.image_uncertainty for s in segs])
                else:
                    seg = labeller(images)
                    labels, scores = seg.labels, seg.image_uncertainty
                writer.submit(store.write_labels, k, ids, labels, scores, labeller.num_classes, labels_hash)
                first_shard(labels, k)  # a class the labeller misses shows now, not at finalize
            if grank == 0:
                bar.update(task, completed=committed_samples(store, cfg, labels=not do_sample))


def check_labeller(ensemble_dir: str | Path, generator) -> None:
    """An ensemble fits a generator: same model, same image size, features it can compute with the
    dimension its weights take. One line naming the ensemble and the mismatch otherwise."""
    ens = load_ensemble(ensemble_dir).cfg
    where = Path(ensemble_dir) / "ensemble.json"
    if ens.model and ens.model != generator.source:
        raise InputError(where, f"was trained on features of {ens.model}, not of --model {generator.source}; "
                                "leave --model out to use the ensemble's own model")
    if ens.resolution and ens.resolution != generator.resolution:
        raise InputError(where, f"was trained at {ens.resolution} px but the model makes {generator.resolution} px images")
    spec = ens.feature_spec()
    if spec is not None:
        dim = sum(generator.feature_channels(spec))
        if dim != ens.in_dim:
            raise InputError(where, f"lists blocks {list(spec.blocks)} x steps {list(spec.steps)} = {dim} features, "
                                    f"but its weights take {ens.in_dim}: the JSON does not match the weights")


def labelling_hash(ensemble_dir: str | Path, trajectory: bool = False, precision: str = "fp32") -> str:
    """What a shard's labels were made with: the ensemble's weights, whether from trajectory features, and
    the feature pass's precision (fp32 adds nothing: the key labels had before precision was an option)."""
    return (ensemble_hash(ensemble_dir) + ("-trajectory" if trajectory else "")
            + (f"-{precision}" if precision != "fp32" else ""))


def resolve_settings(run: Path, cfg: SampleConfig, device: str, *, precision: str | None, compile: bool | None,
                     threads: int | None) -> SampleConfig:
    """The bit-shaping settings of a run: given options win; left out, an existing run's recorded ones
    (a resume needs no flags repeated), else this device's defaults (fp32 and the CPU's thread count on a
    CPU, the CUDA default precision on a GPU). A run whose manifest records no thread count (made before it
    was recorded, or on a GPU) keeps none: --threads then only sets this process's threads, as it did."""
    recorded = recorded_settings(run / "manifest.json")
    on_cpu = torch.device(device if device != "auto" else "cpu").type == "cpu"
    if recorded and not recorded["threads"]:
        threads = 0
    elif threads is None:
        threads = cfg.threads or recorded.get("threads") or (torch.get_num_threads() if on_cpu else 0)
    if precision is None and cfg.precision != "fp32":  # a library caller's config says it
        precision = cfg.precision
    return replace(cfg, precision=resolve_precision(precision, device, recorded.get("precision")),
                   compile=(cfg.compile or recorded.get("compile", False)) if compile is None else compile,
                   threads=threads if on_cpu else 0)


def resolve_sample_config(cfg: SampleConfig, ensemble: str | Path | None,
                          trajectory: bool = False) -> tuple[SampleConfig, int]:
    """Check every input of a run before anything is written; returns the config with the model resolved,
    and the model's image side.

    No --model (cfg.model empty) means the ensemble's own model, else the embedded one; the model is
    recorded as an absolute path, so the run can be continued from any working directory. The model is
    built on the meta device from its config and weight headers: the parent of G workers holds no weights."""
    cfg.validate()
    if not cfg.model:
        cfg = replace(cfg, model=load_ensemble(ensemble).cfg.model or "embedded" if ensemble else "embedded")
    generator = load_generator(cfg.model, "meta")
    generator.make_sampler(cfg.sampler, cfg.sampling_steps)  # unknown sampler / step count: one line
    speed_up(generator, cfg.precision)  # a StyleGAN2 refuses bf16 here, before anything is written
    if ensemble is not None:
        check_labeller(ensemble, generator)
    if trajectory:
        if ensemble is None:
            raise OptionError("--trajectory-features", "labels samples as they are made: needs --ensemble")
        if not hasattr(generator, "sample_with_features"):
            raise OptionError("--trajectory-features", f"needs a diffusion model; {generator.source} is not one")
        spec = load_ensemble(ensemble).cfg.feature_spec()
        if spec is None:
            raise OptionError("--trajectory-features", f"{ensemble} is a colour ensemble: it takes no UNet features")
        generator.check_trajectory_spec(spec, cfg.sampler, cfg.sampling_steps)
    return replace(cfg, model=generator.source), generator.resolution


def resolve_run_model(model: str | None, generator: str | None, ensemble: str | Path | None) -> str | None:
    """`sample`'s --model given --generator: without --model, the ensemble's own model must be of that kind."""
    from ..generators.loading import resolve_model
    if generator is not None and model is None and ensemble is not None:
        return resolve_model(model, generator, load_ensemble(ensemble).cfg.model or "embedded")
    return resolve_model(model, generator)


def check_run_generator(run_dir: str | Path, generator: str | None) -> None:
    """`label --generator KIND`: the run's own model must be of that kind."""
    if generator is not None:
        from ..generators.loading import resolve_model
        resolve_model(None, generator, read_json(Path(run_dir) / "manifest.json")["config"]["model"])


def claim_labels(run: Path, ensemble_dir: str | Path, cfg: SampleConfig, store: ShardStore, labels_hash: str,
                 overwrite: bool, trajectory: bool = False, precision: str = "fp32") -> None:
    config = {"ensemble": str(Path(ensemble_dir).resolve())}
    if trajectory:  # labels from the sampler's own activations: another labelling than `label`'s
        config["features"] = "trajectory"
    if precision != "fp32":
        config["precision"] = precision
    if claim_manifest(run / "labels_manifest.json", "labels", config, labels_hash, overwrite=overwrite):
        for k in range(cfg.num_shards):
            store.discard(k, labels_only=True)


def writer_lock(run: Path, tasks: Tasks, world: int):
    """The run lock of a run's only writer; a part lock per torchrun rank or batch task, which share it."""
    if torchrun_env():
        return part_lock(run, f"rank-{tasks.global_rank(int(os.environ['RANK']), world)}")
    if tasks.count > 1:
        return part_lock(run, f"task-{tasks.index}")
    return run_lock(run)


def clean_before_start(store: ShardStore, tasks: Tasks) -> None:
    """Leftovers of interrupted writes: the run's only writer (or torchrun's rank 0, before any rank starts)
    deletes every one. With several tasks each worker deletes only those of its own shards when it starts
    (`worker_start`): another task may be writing its own right now."""
    if tasks.count == 1:
        store.clean_partials()


def worker_start(rank: int, world: int, run_dir: str, cfg: SampleConfig, device: str, tasks: Tasks):
    """What every generation worker does first: its device, the thread count that shaped the run's bits,
    its global rank and world among all tasks, its shards (their leftovers of interrupted writes deleted).
    Returns (device, global rank, global world, store, shards)."""
    device = resolve_device(device, rank=rank)
    if cfg.threads and device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    grank, gworld = tasks.global_rank(rank, world), tasks.global_world(world)
    store = ShardStore(run_dir)
    mine = owned_shards(cfg, grank, gworld)
    store.clean_partials(mine)
    return device, grank, gworld, store, mine


def labels_precision(run: Path, precision: str | None, device: str) -> str:
    """--precision of a labelling: given, else the run's labels manifest's (fp32 for labels made before it was
    recorded), else the device's default."""
    path = run / "labels_manifest.json"
    recorded = read_json(path).get("config", {}).get("precision", "fp32") if path.is_file() else None
    return resolve_precision(precision, device, recorded)


def check_tasks(tasks: Tasks, overwrite: bool) -> None:
    if tasks.count > 1 and overwrite:
        raise OptionError("--overwrite", "would discard the run while other tasks write it; discard it once "
                                         "(delete the folder) before starting the tasks")


def first_shard_bytes(cfg: SampleConfig, resolution: int) -> int:
    return 2 * min(cfg.shard_size, cfg.n) * 3 * resolution * resolution  # images + masks, PNG at worst raw


def sample_run(run_dir: str | Path, cfg: SampleConfig, *, ensemble: str | Path | None = None, workers: int = 1,
               gpus: int = 0, device: str = "cpu", threads: int | None = None, overwrite: bool = False,
               trajectory_features: bool = False, progress: bool = True, precision: str | None = None,
               compile: bool | None = None, tasks: Tasks = Tasks(), timeout_s: float | None = None) -> dict:
    """Generate `cfg.n` samples into `run_dir` (labelling each shard when `ensemble` is given); resumable.
    With `trajectory_features` the labels come from the sampling UNet's own decoder activations at the
    ensemble's steps (which the sampler must visit): no feature pass. Every input is checked before anything
    is written. Under torchrun (any number of nodes) every rank runs this; rank 0 alone writes the manifests.
    With `tasks` this command is one of several independent ones writing the run (shard k: task
    k % (count * world) // world)."""
    world, backend, device = resolve_world(workers, gpus, device)
    check_tasks(tasks, overwrite)
    run = Path(run_dir)
    cfg = resolve_settings(run, cfg, device, precision=precision, compile=compile, threads=threads)
    cfg, resolution = resolve_sample_config(cfg, ensemble, trajectory_features)
    check_output_dir(run, first_shard_bytes(cfg, resolution))
    store = ShardStore(run)
    labels_hash = labelling_hash(ensemble, trajectory_features, cfg.precision) if ensemble else ""

    def prepare() -> None:
        if claim_manifest(run / "manifest.json", "sample", asdict(cfg), cfg.hash(), overwrite=overwrite):
            shutil.rmtree(store.root, ignore_errors=True)  # a different run: start from nothing
        clean_before_start(store, tasks)
        if ensemble:
            claim_labels(run, ensemble, cfg, store, labels_hash, overwrite, trajectory_features, cfg.precision)

    with writer_lock(run, tasks, world):
        main = launch(_work, (str(run), asdict(cfg), str(ensemble) if ensemble else None, labels_hash, True, device,
                              progress, trajectory_features, tasks, cfg.precision), world=world, backend=backend,
                      threads=cfg.threads or threads, prepare=prepare, collective=False, timeout_s=timeout_s)
    return run_summary(store, cfg, ensemble is not None, main, tasks)


def run_summary(store: ShardStore, cfg: SampleConfig, labelled: bool, main: bool, tasks: Tasks) -> dict:
    missing = [k for k in range(cfg.num_shards) if not store.committed(k, labels=labelled)]
    return {"samples": committed_samples(store, cfg, False), "labelled": committed_samples(store, cfg, True)
            if labelled else 0, "main": main, "complete": not missing, "missing_shards": missing,
            "task": tasks.index, "tasks": tasks.count}


def label_run(run_dir: str | Path, ensemble: str | Path, *, workers: int = 1, gpus: int = 0, device: str = "cpu",
              threads: int | None = None, overwrite: bool = False, progress: bool = True,
              precision: str | None = None, tasks: Tasks = Tasks(), timeout_s: float | None = None) -> dict:
    """Label every committed shard of an existing sample run that has no labels yet; resumable. The
    ensemble is checked against the run's model before any label is written or (--overwrite) deleted."""
    from .selection import read_run_config
    run = Path(run_dir)
    cfg = read_run_config(run)  # an edited manifest: one line naming the key
    world, backend, device = resolve_world(workers, gpus, device)
    check_tasks(tasks, overwrite)
    store = ShardStore(run)
    missing = [k for k in range(cfg.num_shards) if not store.committed(k)]
    if missing:
        raise DatasetDDPMError(f"{run}: {len(missing)} shard(s) not sampled yet (first: {missing[0]}); "
                               f"finish `datasetddpm sample` first")
    generator = load_generator(cfg.model, "meta")
    check_labeller(ensemble, generator)
    precision = labels_precision(run, precision, device)
    speed_up(generator, precision)
    check_output_dir(run, first_shard_bytes(cfg, generator.resolution))
    labels_hash = labelling_hash(ensemble, precision=precision)

    def prepare() -> None:
        clean_before_start(store, tasks)
        claim_labels(run, ensemble, cfg, store, labels_hash, overwrite, precision=precision)

    with writer_lock(run, tasks, world):
        main = launch(_work, (str(run), asdict(cfg), str(ensemble), labels_hash, False, device, progress, False, tasks,
                              precision), world=world, backend=backend, threads=cfg.threads or threads,
                      prepare=prepare, collective=False, timeout_s=timeout_s)
    return run_summary(store, cfg, True, main, tasks)
