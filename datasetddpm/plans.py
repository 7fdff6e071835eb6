"""`--dry-run`: what a command would do and cost, from its real inputs and a few timed steps on this
device, with nothing written.

Each `plan_*` checks the command's inputs as the command itself does (so a dry run also finds the
mistakes), times a small piece of the real work, and extrapolates. Times assume the workers scale
linearly, which holds for GPUs and for CPU workers only while each has cores of its own.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .generators.loading import load_generator


@dataclass
class Plan:
    """Rows of (what, how much) a command would do, and the estimated wall time."""

    command: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    timed: str = ""  # what was timed, to read the estimate by

    def add(self, what: str, value) -> None:
        self.rows.append((what, str(value)))

    def to_dict(self) -> dict:
        return {"command": self.command, "rows": dict(self.rows), "estimated_seconds": round(self.seconds, 1),
                "timed": self.timed}

    def text(self) -> str:
        width = max([len("estimated time")] + [len(w) for w, _ in self.rows])
        lines = [f"dry run of `datasetddpm {self.command}` (nothing written):"]
        lines += [f"  {w:<{width}}  {v}" for w, v in self.rows]
        lines.append(f"  {'estimated time':<{width}}  {format_duration(self.seconds)} ({self.timed})")
        return "\n".join(lines)


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MiB" if n_bytes < 2**30 else f"{n_bytes / 2**30:.2f} GiB"


def _png_bytes(arrays) -> float:
    sizes = []
    for a in arrays:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        sizes.append(buf.tell())
    return float(np.mean(sizes))


def _timed(fn, *args, **kwargs) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def network_evaluations(generator, sampler: str, steps: int) -> int:
    """Network evaluations per sample: the sampler's own timesteps for a diffusion model, one for a GAN
    (whose `make_sampler` returns None)."""
    made = generator.make_sampler(sampler, steps)
    return 1 if made is None else len(made.timesteps)


def plan_sample(cfg, *, ensemble: str | Path | None = None, committed: int = 0, world: int = 1,
                device: str | torch.device = "cpu", trajectory_features: bool = False) -> Plan:
    """`sample` of `cfg` (already checked by `resolve_sample_config`), `committed` samples already done."""
    from .pipeline.config import sample_seed
    from .pipeline.generate import LABEL_BATCH, Labeller
    generator = load_generator(cfg.model, device)
    todo = cfg.n - committed
    evals = network_evaluations(generator, cfg.sampler, cfg.sampling_steps)
    probe = min(cfg.batch_size, 4)
    seeds = [sample_seed(cfg.seed, i) for i in range(probe)]
    timed_steps = min(2, cfg.sampling_steps)
    generator.sample(seeds[:1], sampler=cfg.sampler, num_steps=1)  # warm-up: allocator and kernel selection
    secs, images = _timed(generator.sample, seeds, sampler=cfg.sampler, num_steps=timed_steps)
    per_sample = secs / probe * (evals / timed_steps if evals > 1 else 1)
    images = images.permute(0, 2, 3, 1).numpy()
    plan = Plan("sample")
    plan.add("samples", f"{cfg.n} ({committed} already committed, {todo} to make) in {cfg.num_shards} shards of "
                        f"{cfg.shard_size}")
    plan.add("network evaluations", f"{evals} per sample ({cfg.sampler}, {cfg.sampling_steps} steps), "
                                    f"{evals * todo:,} in all, over {world} worker(s)")
    disk = _png_bytes(images) * todo
    if ensemble is not None:
        labeller = Labeller(ensemble, generator, device)
        if hasattr(labeller, "remember"):
            labeller.remember(images, seeds)
        labeller(images[:1])  # warm-up
        if trajectory_features:  # the head alone: the maps come with the sampling pass
            maps = generator.feature_maps(torch.from_numpy(images).permute(0, 3, 1, 2), labeller.source.spec)
            label_secs, seg = _timed(labeller.label_maps, images, maps)
            per_sample += label_secs / probe
        else:  # one full labelling batch (the labeller always runs full ones), the probe's samples repeated
            label_secs, seg = _timed(labeller, np.resize(images, (LABEL_BATCH, *images.shape[1:])))
            per_sample += label_secs / LABEL_BATCH
        disk += _png_bytes(seg.labels.astype(np.uint8)) * todo
        plan.add("labelling", f"ensemble {ensemble}: " + ("trajectory features, no extra network evaluation"
                                                          if trajectory_features else "one feature pass per sample"))
    plan.add("disk needed", f"about {_mib(disk)} (PNG sizes of the timed samples)")
    plan.seconds = per_sample * todo / world
    plan.timed = f"{timed_steps} step(s) on {probe} sample(s) on {device}"
    return plan


def plan_label(run: Path, cfg, ensemble: str | Path, *, world: int = 1, device: str | torch.device = "cpu") -> Plan:
    from .pipeline.generate import LABEL_BATCH, Labeller
    from .pipeline.shards import ShardStore
    store = ShardStore(run)
    ids, images = store.read_images(0)
    images = images[:LABEL_BATCH]
    generator = load_generator(cfg.model, device)
    labeller = Labeller(ensemble, generator, device)
    if hasattr(labeller, "remember"):
        labeller.remember(images, [r["seed"] for r in store.read_sidecar(0)["samples"]][:len(images)])
    labeller(images[:1])  # warm-up
    # one full labelling batch (the labeller always runs full ones), the shard's first images repeated
    secs, seg = _timed(labeller, np.resize(images, (LABEL_BATCH, *images.shape[1:])))
    todo = sum(len(cfg.shard_range(k)) for k in range(cfg.num_shards) if not store.committed(k, labels=True))
    plan = Plan("label")
    plan.add("samples to label", f"{todo} of {cfg.n}")
    plan.add("disk needed", f"about {_mib(_png_bytes(seg.labels.astype(np.uint8)) * todo)} of masks")
    plan.seconds = secs / LABEL_BATCH * todo / world
    plan.timed = f"labelling {LABEL_BATCH} sample(s) on {device}"
    return plan


def plan_train_ddpm(out: Path, cfg, *, device: str | torch.device = "cpu") -> Plan:
    """Two timed optimisation steps of the configured UNet at the configured batch size."""
    import json
    from diffusers import DDPMScheduler, UNet2DModel
    from .generators.train_ddpm import _load_pool, with_init
    cfg = with_init(cfg)[0].resolved()
    cfg.validate()
    if cfg.data != "embedded":
        _load_pool(cfg)  # the image folder is checked as the command checks it
    log = out / "train_log.jsonl"
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()] if log.is_file() else []
    done_steps = json.loads(lines[-1])["step"] if lines else 0
    torch.manual_seed(cfg.seed)
    unet = UNet2DModel(**cfg.unet).to(device)
    params = sum(p.numel() for p in unet.parameters())
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr)
    scheduler = DDPMScheduler(**cfg.scheduler)
    x = torch.randn(cfg.batch_size, 3, cfg.resolution, cfg.resolution, device=device)

    def step():
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), device=device)
        noise = torch.randn_like(x)
        loss = torch.nn.functional.mse_loss(unet(scheduler.add_noise(x, noise, t), t).sample, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    step()  # warm-up: allocator and kernel selection
    secs, _ = _timed(lambda: [step() for _ in range(2)])
    todo = max(cfg.steps - done_steps, 0)
    plan = Plan("train-ddpm")
    plan.add("UNet", f"{params / 1e6:.2f}M parameters, {cfg.resolution} px")
    plan.add("steps", f"{cfg.steps} ({done_steps} done, {todo} to go) at batch {cfg.batch_size}")
    plan.add("checkpoints", f"every {cfg.checkpoint_every} steps, about {_mib(params * 4 * 4)} of state")
    plan.seconds = secs / 2 * todo
    plan.timed = f"2 steps at batch {cfg.batch_size} on {device}"
    return plan


def plan_train_deeplab(pairs: int, image_side: int, num_classes: int, cfg, *, world: int = 1,
                       device: str | torch.device = "cpu") -> Plan:
    """Two timed training steps of the configured segmenter on random batches of the run's image size."""
    from .segmenters.model import SegmenterConfig, create_segmenter
    model = create_segmenter(SegmenterConfig(num_classes=num_classes, arch=cfg.arch, encoder=cfg.encoder,
                                             input_scale=cfg.input_scale)).to(device).train()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x = torch.randint(0, 256, (cfg.batch_size, 3, image_side, image_side), device=device, dtype=torch.uint8)
    y = torch.randint(0, num_classes, (cfg.batch_size, image_side, image_side), device=device)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    step()
    secs, _ = _timed(lambda: [step() for _ in range(2)])
    per_epoch = math.ceil(pairs / (cfg.batch_size * world))
    plan = Plan("train-deeplab")
    plan.add("segmenter", f"{cfg.arch} / {cfg.encoder}, {params / 1e6:.1f}M parameters, input x{cfg.input_scale}")
    plan.add("training", f"{pairs} kept pairs, {per_epoch} steps per epoch x {cfg.epochs} epochs, batch "
                         f"{cfg.batch_size} per worker x {world}")
    plan.add("checkpoints", f"every epoch, about {_mib(params * 4 * 3)} (model + Adam moments)")
    plan.seconds = secs / 2 * per_epoch * cfg.epochs
    plan.timed = f"2 steps at batch {cfg.batch_size} on {device}; validation passes not included"
    return plan


def plan_sample_run(run_dir: str | Path, cfg, *, ensemble: str | Path | None = None, workers: int = 1, gpus: int = 0,
                    device: str = "cpu", trajectory_features: bool = False, precision: str | None = None,
                    compile: bool | None = None, threads: int | None = None) -> Plan:
    """`sample --dry-run`: the checks `sample_run` makes before writing, then `plan_sample`."""
    from .devices import resolve_device
    from .distributed import resolve_world
    from .io import check_output_dir, read_json
    from .pipeline.generate import committed_samples, first_shard_bytes, resolve_sample_config, resolve_settings
    from .pipeline.shards import ShardStore
    world, _, device = resolve_world(workers, gpus, device)
    run = Path(run_dir)
    cfg = resolve_settings(run, cfg, device, precision=precision, compile=compile, threads=threads)
    cfg, resolution = resolve_sample_config(cfg, ensemble, trajectory_features)
    check_output_dir(run, first_shard_bytes(cfg, resolution))
    manifest = run / "manifest.json"
    same_run = manifest.is_file() and read_json(manifest).get("hash") == cfg.hash()
    committed = committed_samples(ShardStore(run), cfg, False) if same_run else 0
    return plan_sample(cfg, ensemble=ensemble, committed=committed, world=world, device=resolve_device(device),
                       trajectory_features=trajectory_features)


def plan_label_run(run_dir: str | Path, ensemble: str | Path, *, workers: int = 1, gpus: int = 0,
                   device: str = "cpu") -> Plan:
    """`label --dry-run`: the checks `label_run` makes before writing, then `plan_label`."""
    from .devices import resolve_device
    from .distributed import resolve_world
    from .io import read_json
    from .pipeline.config import SampleConfig
    from .pipeline.generate import check_labeller
    run = Path(run_dir)
    cfg = SampleConfig(**read_json(run / "manifest.json")["config"])
    world, _, device = resolve_world(workers, gpus, device)
    check_labeller(ensemble, load_generator(cfg.model, "meta"))
    return plan_label(run, cfg, ensemble, world=world, device=resolve_device(device))


def plan_train_ensemble(source, labelled, num_classes: int, ignore_label: int, train, *,
                        device: str | torch.device = "cpu") -> Plan:
    """Features of one image and a few ensemble steps on random features of the right width, timed."""
    from .ensemble.model import EnsembleConfig, PixelEnsemble
    n = len(labelled)
    one = torch.from_numpy(labelled.images[:1]).permute(0, 3, 1, 2)
    source.maps(one)  # warm-up
    feature_secs, maps = _timed(source.maps, one)
    dim = sum(m.shape[1] for m in maps)
    pixels = int((labelled.masks != ignore_label).sum())
    cfg = EnsembleConfig(in_dim=dim, num_classes=num_classes, members=train.members)
    ensemble = PixelEnsemble(cfg, seed=train.seed).to(device).train()
    opt = torch.optim.Adam(ensemble.parameters(), lr=train.lr)
    x = torch.randn(train.members, train.batch_size, dim, device=device)
    y = torch.randint(0, num_classes, (train.members * train.batch_size,), device=device)

    def step():
        loss = torch.nn.functional.cross_entropy(ensemble(x).reshape(len(y), -1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    step()
    step_secs, _ = _timed(lambda: [step() for _ in range(5)])
    per_epoch = pixels // train.batch_size
    epoch_secs = step_secs / 5 * per_epoch
    low, high = train.min_epochs + 1, train.max_epochs
    plan = Plan("train-ensemble")
    plan.add("labelled images", f"{n} ({pixels:,} labelled pixels, {dim} features per pixel)")
    plan.add("ensemble", f"{train.members} MLPs, {per_epoch:,} steps per epoch at batch {train.batch_size}; early "
                         f"stopping ends it after {low} to {high} epochs")
    plan.add("features", f"{format_duration(feature_secs * n)} for the {n} images")
    plan.add("training", f"{format_duration(epoch_secs)} per epoch: {format_duration(epoch_secs * low)} to "
                         f"{format_duration(epoch_secs * high)}")
    plan.seconds = feature_secs * n + epoch_secs * low
    plan.timed = f"features of 1 image and 5 ensemble steps on {device}; the least training early stopping allows"
    return plan
