"""`datasetddpm label-images`: the ensemble labels a folder of the user's own unlabelled real images
into the layout of a generation run (shards, JS scores, labels manifest), so `finalize`, `verify`,
`train-deeplab`, `export` and `label` (relabel with another ensemble) work on it unchanged.

Real images avoid the generator's weak spots (blurry samples, missing small parts) at the price of
needing the images; a DeepLab trained on them distils the ensemble (DreamTeacher-style). Sample i of
the run is the i-th image of the folder in name order; its shard sidecar names the file it came from.
A StyleGAN2 ensemble cannot label real images: its features come from latents.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..data.images import list_images, read_image
from ..distributed import Tasks, launch, resolve_world
from ..ensemble.model import load_ensemble
from ..errors import InputError, OptionError, name_bytes
from ..generators.loading import load_generator, speed_up
from ..io import check_output_dir
from ..progress import progress_bar
from .config import SampleConfig, claim_manifest
from .generate import (WRITE_BEHIND, Labeller, ShardWriter, check_labeller, check_tasks, claim_labels,
                       clean_before_start, committed_samples, first_shard_bytes, labelling_hash, labels_precision,
                       resolve_settings, run_summary, worker_start, writer_lock)
from ..data.shards import ShardStore

SAMPLER = "real-images"  # the manifest's sampler field for a run made from real images


def select_images(images_dir: str | Path, limit: int = 0, files: str | Path | None = None) -> list[Path]:
    """The folder's images to label, in name order: all of them, those `files` lists (one path per line,
    relative to the folder; blank lines skipped) and/or the first `limit`. A bad list is one line naming
    the list file, its line and the problem."""
    if limit < 0:
        raise OptionError("--limit", f"must be >= 1, got {limit}")
    paths = list_images(images_dir)
    if not paths:
        raise InputError(images_dir, "no .png/.jpg images found")
    if files is not None:
        paths = _listed(paths, images_dir, Path(files))
    return paths[:limit] if limit else paths


def _listed(paths: list[Path], images_dir: str | Path, files: Path) -> list[Path]:
    try:
        lines = files.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(files, f"unreadable file list ({getattr(e, 'strerror', None) or e.__class__.__name__})"
                         ) from None
    by_name, chosen = {p.name: p for p in paths}, {}
    for number, line in enumerate(lines, 1):
        name = os.path.normpath(line.strip()) if line.strip() else ""
        if not name:
            continue
        if name not in by_name:
            raise InputError(files, f"line {number}: {line.strip()!r} is not an image (.png/.jpg) directly in "
                                    f"{images_dir} (one path per line, relative to --images)")
        if name in chosen:
            raise InputError(files, f"line {number}: {name!r} is listed twice")
        chosen[name] = by_name[name]
    if not chosen:
        raise InputError(files, "lists no images (one path per line, relative to --images)")
    return sorted(chosen.values())


def scan_images(images_dir: str | Path, resolution: int | None, paths: list[Path] | None = None
                ) -> tuple[list[Path], str, int]:
    """Every image of the folder (or of `paths`, a selection of it) decodes and is `resolution` px square (any
    one size when None; one line naming the first that is not); returns the paths in name order, a digest of
    their names and bytes, and the side. Each file is read once, and images are not kept: a large folder is
    never held whole."""
    paths = select_images(images_dir) if paths is None else paths
    digest = hashlib.sha256()
    for p in paths:
        try:
            data = p.read_bytes()
        except OSError as e:
            raise InputError(p, f"unreadable image ({e.strerror or e.__class__.__name__})") from None
        image = read_image(p, data)
        resolution = resolution or image.shape[0]
        if image.shape[:2] != (resolution, resolution):
            raise InputError(p, f"image is {image.shape[1]}x{image.shape[0]} but the ensemble takes "
                                f"{resolution}x{resolution} (square) images: resize the images")
        digest.update(name_bytes(p.name) + b"\0" + hashlib.sha256(data).digest())
    return paths, digest.hexdigest()[:16], resolution


def images_config(images_dir: str | Path, ensemble_dir: str | Path, *, batch_size: int = 50,
                  shard_size: int = 500, limit: int = 0, files: str | Path | None = None
                  ) -> tuple[SampleConfig, list[Path], int]:
    """The run config of labelling `images_dir` (or its `files` / first `limit` images) with `ensemble_dir`,
    the image paths and their side; every input checked, nothing written. A colour ensemble needs no
    generator."""
    selected = select_images(images_dir, limit, files)
    ens = load_ensemble(ensemble_dir).cfg
    model, resolution = "", ens.resolution or None
    if ens.feature_spec() is not None:
        generator = load_generator(ens.model or "embedded", "meta")  # shapes only: workers load the weights
        if getattr(generator, "latent_based", False):
            raise InputError(Path(ensemble_dir) / "ensemble.json",
                             "is a StyleGAN2 (DatasetGAN) ensemble: its features come from latents, and real images "
                             "have none (that would need GAN inversion, which is not supported); label real images "
                             "with an ensemble on diffusion features")
        check_labeller(ensemble_dir, generator)
        model, resolution = generator.source, generator.resolution
    paths, digest, resolution = scan_images(images_dir, resolution, selected)
    cfg = SampleConfig(model=model, n=len(paths), seed=0, sampler=SAMPLER, sampling_steps=0,
                       batch_size=batch_size, shard_size=shard_size, images=str(Path(images_dir).resolve()),
                       images_digest=digest, limit=limit, files=str(Path(files).resolve()) if files else "")
    cfg.validate()
    return cfg, paths, resolution


def label_images_run(images_dir: str | Path, ensemble_dir: str | Path, run_dir: str | Path, *,
                     batch_size: int = 50, shard_size: int = 500, device: str = "cpu", overwrite: bool = False,
                     progress: bool = True, workers: int = 1, gpus: int = 0, threads: int | None = None,
                     precision: str | None = None, tasks: Tasks = Tasks(), timeout_s: float | None = None,
                     limit: int = 0, files: str | Path | None = None) -> dict:
    """Label every image of `images_dir` (or those the list file `files` names, and/or the first `limit`)
    into the run folder `run_dir`, a shard at a time; resumable (rerun the same command), and a changed
    folder, selection or ensemble is refused unless `overwrite`. Workers, torchrun ranks and tasks own
    shards as in `sample`."""
    world, backend, device = resolve_world(workers, gpus, device)
    check_tasks(tasks, overwrite)
    cfg, paths, resolution = images_config(images_dir, ensemble_dir, batch_size=batch_size, shard_size=shard_size,
                                           limit=limit, files=files)
    run = Path(run_dir)
    cfg = resolve_settings(run, cfg, device, precision="fp32", compile=False, threads=threads)  # threads only
    precision = labels_precision(run, precision, device)
    check_output_dir(run, first_shard_bytes(cfg, resolution))
    store = ShardStore(run)
    labels_hash = labelling_hash(ensemble_dir, precision=precision)

    def prepare() -> None:
        if claim_manifest(run / "manifest.json", "images", asdict(cfg), cfg.hash(), overwrite=overwrite):
            shutil.rmtree(store.root, ignore_errors=True)  # another folder or settings: start from nothing
        clean_before_start(store, tasks)
        claim_labels(run, ensemble_dir, cfg, store, labels_hash, overwrite, precision=precision)

    with writer_lock(run, tasks, world):
        main = launch(_work, (str(run), asdict(cfg), [str(p) for p in paths], str(ensemble_dir), labels_hash, device,
                              progress, tasks, precision), world=world, backend=backend,
                      threads=cfg.threads or threads, prepare=prepare, collective=False, timeout_s=timeout_s)
    return {"images": cfg.n, **run_summary(store, cfg, True, main, tasks)}


def _work(rank: int, world: int, run_dir: str, cfg_dict: dict, paths: list[str], ensemble_dir: str, labels_hash: str,
          device: str, progress: bool, tasks: Tasks, precision: str) -> None:
    cfg = SampleConfig(**cfg_dict)
    device, grank, _, store, mine = worker_start(rank, world, run_dir, cfg, device, tasks)
    images = [Path(p) for p in paths]
    generator = speed_up(load_generator(cfg.model, device), precision) if cfg.model else None
    labeller = Labeller(ensemble_dir, generator, device, precision)
    with progress_bar(progress and grank == 0) as bar, ShardWriter(WRITE_BEHIND) as writer:
        task = bar.add_task("label-images", total=cfg.n, completed=committed_samples(store, cfg, True), info="")
        for k in mine:
            _label_shard(store, cfg, k, images, labeller, labels_hash, writer)
            bar.update(task, completed=committed_samples(store, cfg, True))


def _label_shard(store: ShardStore, cfg: SampleConfig, k: int, paths: list[Path], labeller: Labeller,
                 labels_hash: str, writer: ShardWriter) -> None:
    need_images = not store.committed(k, run_hash=cfg.hash())
    if not need_images and store.committed(k, True, labels_hash):
        return
    ids = list(cfg.shard_range(k))
    writer.wait()  # the previous shard written: at most one behind
    if need_images:
        images = np.stack([read_image(paths[i]) for i in ids])
        writer.submit(store.write_samples, k, ids, [None] * len(ids), images, cfg.hash(),
                      sources=[paths[i].name for i in ids])
    else:
        ids, images = store.read_images(k)
    seg = labeller(images)
    writer.submit(store.write_labels, k, ids, seg.labels, seg.image_uncertainty, labeller.num_classes, labels_hash)
