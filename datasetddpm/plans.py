"""`--dry-run`: what a command would do and cost, from its real inputs and a few timed steps on this
device, with nothing written.

Each `plan_*` checks the command's inputs as the command itself does (so a dry run also finds the
mistakes), times a small piece of the real work in the run's own configuration, and extrapolates:
sampling at the run's batch size (a warm-up call first, so that one-time costs are not multiplied;
a few denoising steps timed, scaled by the run's number of network evaluations), labelling in the
labeller's own batches, DeepLab steps at the run's batch on its own pairs (the real share included)
with a validation pass and a checkpoint per epoch. The loading a run repeats (models, the shard
read) is timed too, and from the command line the process's own start (imports) is counted once.
Times assume the workers scale linearly, which holds for GPUs and for CPU workers only while each has
cores of its own. What was timed is printed beside the estimate (`Plan.timed`).
"""

from __future__ import annotations

import io
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .generators.loading import load_generator

TIMING_BUDGET_S = 30.0  # timed work of one dry run beyond its warm-ups; past it, fewer steps or a smaller batch (said)


@dataclass
class Plan:
    """Rows of (what, how much) a command would do, and the estimated wall time with its parts."""

    command: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    timed: str = ""  # what was timed, to read the estimate by
    parts: list[tuple[str, float]] = field(default_factory=list)  # (what, seconds): they sum to `seconds`

    def add(self, what: str, value) -> None:
        self.rows.append((what, str(value)))

    def part(self, what: str, seconds: float) -> None:
        """`seconds` of the run spent on `what`, added to the estimate."""
        self.parts.append((what, seconds))
        self.seconds += seconds

    def to_dict(self) -> dict:
        return {"command": self.command, "rows": dict(self.rows), "estimated_seconds": round(self.seconds, 1),
                "parts": {what: round(s, 1) for what, s in self.parts}, "timed": self.timed}

    def text(self) -> str:
        rows = self.rows + ([("time by part", ", ".join(f"{what} {format_duration(s)}" for what, s in self.parts))]
                            if self.parts else [])
        width = max([len("estimated time")] + [len(w) for w, _ in rows])
        lines = [f"dry run of `datasetddpm {self.command}` (nothing written):"]
        lines += [f"  {w:<{width}}  {v}" for w, v in rows]
        total = format_duration(self.seconds)
        exact = f"{self.seconds:.0f} s in all; " if self.seconds >= 120 else ""
        lines.append(f"  {'estimated time':<{width}}  {total} ({exact}{self.timed})")
        return "\n".join(lines)


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def process_age() -> float:
    """Seconds since this process started (Linux's /proc; 0 elsewhere)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)


def from_command_line(make_plan) -> Plan:
    """A dry run of a command line: `make_plan()`'s plan plus the start this process made before it
    (interpreter, imports), which the run's own process makes again."""
    started = process_age()
    plan = make_plan()
    if started:
        plan.part("start-up", started)
    return plan


@contextmanager
def torch_threads(threads: int | None):
    """Torch on `threads` threads inside (what the run's workers set; None or 0: unchanged), as before after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


def busiest_worker(cfg, shards: list[int], world: int) -> tuple[int, int]:
    """(batches, samples) of the worker with the most batches: shard k is worker k % world's (as
    `owned_shards`), each shard made in full batches (its last one filled up)."""
    work = [(0, 0)] * world
    for k in shards:
        size = len(cfg.shard_range(k))
        batches, samples = work[k % world]
        work[k % world] = (batches + math.ceil(size / cfg.batch_size), samples + size)
    return max(work)


def _ramp_up(call, full: int, budget: float) -> tuple[int, float]:
    """`call(b)` at b = 1, 2, 4, ... up to `full` while the next one (about twice as long) fits in `budget`
    seconds with those before: the first call pays the one-time costs, each warms up the next size.
    Returns the last b and the seconds of its call."""
    b, spent = 1, 0.0
    while True:
        secs = _timed(call, b)[0]
        spent += secs
        if b >= full or spent + secs * min(2 * b, full) / b > budget:
            return b, secs
        b = min(2 * b, full)


def time_sampling(generator, cfg, seeds: list[int]) -> tuple[float, float, np.ndarray, str]:
    """(seconds of one of the run's batches, the one-time costs of its first batch, the timed batch's images
    (B, H, W, 3), what was timed). One step at batch 1, 2, 4, ... up to the run's batch (warm-ups; the last is
    the first call at that batch), then 1 and 1 + k steps there: their difference over k is a step without the
    per-call costs, scaled to the run's network evaluations (and to its batch when the budget stopped the
    ramp short); what the first call took beyond a warm one is paid once."""
    evals = network_evaluations(generator, cfg.sampler, cfg.sampling_steps)
    gan = evals == 1  # one pass whatever the steps

    def call(b: int, steps: int):
        return _timed(generator.sample, seeds[:b], sampler=cfg.sampler, num_steps=steps)
    batch, cold = _ramp_up(lambda b: generator.sample(seeds[:b], sampler=cfg.sampler,
                                                      num_steps=cfg.sampling_steps if gan else 1),
                           cfg.batch_size, TIMING_BUDGET_S / 2)
    scale = cfg.batch_size / batch
    where = f"at batch {batch}" + (f" of the run's {cfg.batch_size}, scaled" if scale > 1 else " (the run's)")
    if gan:
        secs, images = call(batch, cfg.sampling_steps)
        return secs * scale, max(cold - secs, 0.0), images.permute(0, 2, 3, 1).numpy(), f"one pass timed {where}"
    k = max(1, min(4, int(TIMING_BUDGET_S / 2 / max(cold, 1e-9)) - 2))
    one, _ = call(batch, 1)
    more, images = call(batch, 1 + k)
    added = network_evaluations(generator, cfg.sampler, 1 + k) - network_evaluations(generator, cfg.sampler, 1)
    per_eval = (more - one) / added
    if per_eval <= 0:  # the machine's load changed between the calls: the plain average
        per_eval = more / (1 + added)
    per_call = max(one - per_eval, 0.0)  # the noise drawn, the images converted
    what = f"samplings of 1 and {1 + k} steps timed {where}, scaled to the run's {evals} network evaluations"
    return (per_call + per_eval * evals) * scale, max(cold - one, 0.0), images.permute(0, 2, 3, 1).numpy(), what


def time_labelling(labeller, images: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(seconds per image of `labeller` in its own batches of LABEL_BATCH, what its first batch took beyond
    the others (paid once), the labels of the timed batch): one batch as warm-up, then up to 4 more within
    the budget (the images repeated to fill them)."""
    from .pipeline.generate import LABEL_BATCH
    one = np.resize(images, (LABEL_BATCH, *images.shape[1:]))
    first, seg = _timed(labeller, one)
    batches = min(4, int(TIMING_BUDGET_S / 2 / max(first, 1e-9)))
    if batches < 1:  # a batch takes longer than the budget: the warm-up is the timing (one-time costs and all)
        return first / LABEL_BATCH, 0.0, seg.labels
    secs, seg = _timed(labeller, np.resize(images, (batches * LABEL_BATCH, *images.shape[1:])))
    return secs / (batches * LABEL_BATCH), max(first - secs / batches, 0.0), seg.labels[:LABEL_BATCH]


def import_seconds(module: str) -> float:
    """Seconds to import `module` where this process has not yet (the run imports it once), else 0."""
    import importlib
    import sys
    return 0.0 if module in sys.modules else _timed(importlib.import_module, module)[0]


def _sample_labelling(generator, cfg, ensemble, images: np.ndarray, seeds: list[int], device,
                      trajectory: bool) -> tuple[float, float, np.ndarray]:
    """(seconds paid once: loading the labeller, its first batch's extra; seconds per sample of labelling;
    labels) of `sample --ensemble`."""
    from .pipeline.generate import Labeller
    load, labeller = _timed(Labeller, ensemble, generator, device, cfg.precision)
    labeller.remember(images, seeds[:len(images)])
    if not trajectory:
        per_sample, first, labels = time_labelling(labeller, images)
        return load + first, per_sample, labels
    # the head alone: the maps come with the sampling pass
    maps = generator.feature_maps(torch.from_numpy(images).permute(0, 3, 1, 2), labeller.source.spec)
    labeller.label_maps(images, maps)  # warm-up
    secs, seg = _timed(labeller.label_maps, images, maps)
    return load, secs / len(images), seg.labels


def plan_sample(cfg, *, ensemble: str | Path | None = None, shards: list[int] | None = None, world: int = 1,
                device: str | torch.device = "cpu", trajectory_features: bool = False) -> Plan:
    """`sample` of `cfg` (already checked by `resolve_sample_config`); `shards`: those still to make (all when
    None). Timed with the run's batch size, precision and thread count (torch.compile is not timed)."""
    from .generators.loading import speed_up
    from .pipeline.config import sample_seed
    shards = list(range(cfg.num_shards)) if shards is None else shards
    todo = sum(len(cfg.shard_range(k)) for k in shards)
    batches, samples = busiest_worker(cfg, shards, world)
    evals = network_evaluations(load_generator(cfg.model, "meta"), cfg.sampler, cfg.sampling_steps)
    plan = Plan("sample")
    plan.add("samples", f"{cfg.n} ({cfg.n - todo} already committed, {todo} to make) in {cfg.num_shards} shards of "
                        f"{cfg.shard_size}")
    plan.add("network evaluations", f"{evals} per sample ({cfg.sampler}, {cfg.sampling_steps} steps), "
                                    f"{evals * todo:,} in all, over {world} worker(s)")
    plan.add("batches", f"{batches} of {cfg.batch_size} samples each on the busiest of {world} worker(s)")
    with torch_threads(cfg.threads):
        load, generator = _timed(lambda: speed_up(load_generator(cfg.model, device), cfg.precision))
        seeds = [sample_seed(cfg.seed, i) for i in range(cfg.batch_size)]
        batch_secs, first, images, timed = time_sampling(generator, cfg, seeds)
        plan.part("loading", load)
        plan.part("sampling", first + batch_secs * batches)
        disk = _png_bytes(images) * todo
        if ensemble is not None:
            load, per_sample, labels = _sample_labelling(generator, cfg, ensemble, images, seeds, device,
                                                         trajectory_features)
            plan.part("labelling", load + per_sample * samples)
            disk += _png_bytes(labels.astype(np.uint8)) * todo
            how = "trajectory features, no extra network evaluation" if trajectory_features else \
                "one feature pass per sample"
            plan.add("labelling", f"ensemble {ensemble}: {how}")
    plan.part("preview", import_seconds("matplotlib.figure"))  # its drawing is not timed
    plan.add("disk needed", f"about {_mib(disk)} (PNG sizes of the timed samples)")
    threads = f", {cfg.threads} threads" if cfg.threads else ""
    eager = ", eager (torch.compile not timed)" if cfg.compile else ""
    plan.timed = f"{timed}, after warm-ups (their extra counted once); {cfg.precision}{threads}{eager}; shards written behind; on {device}"
    return plan


def plan_label(run: Path, cfg, ensemble: str | Path, *, world: int = 1, device: str | torch.device = "cpu",
               precision: str = "fp32") -> Plan:
    """`label` of a sampled run: the first shard read and labelled in the labeller's own batches, timed."""
    from .data.shards import ShardStore
    from .pipeline.generate import LABEL_BATCH, Labeller
    store = ShardStore(run)
    shards = [k for k in range(cfg.num_shards) if not store.committed(k, labels=True)]
    _, samples = busiest_worker(cfg, shards, world)
    with torch_threads(cfg.threads):
        read, (_, images) = _timed(store.read_images, 0)
        load, labeller = _timed(Labeller, ensemble, None, device, precision)
        labeller.remember(images, [r["seed"] for r in store.read_sidecar(0)["samples"]])
        per_sample, first, labels = time_labelling(labeller, images)
        preview = import_seconds("matplotlib.figure")
    todo = sum(len(cfg.shard_range(k)) for k in shards)
    plan = Plan("label")
    plan.add("samples to label", f"{todo} of {cfg.n}")
    plan.add("disk needed", f"about {_mib(_png_bytes(labels.astype(np.uint8)) * todo)} of masks")
    plan.part("loading", load)
    plan.part("reading shards", read / len(images) * samples)
    plan.part("labelling", first + per_sample * samples)
    plan.part("preview", preview)
    threads = f", {cfg.threads} threads" if cfg.threads else ""
    plan.timed = (f"shard 0 read; labelling timed in batches of {LABEL_BATCH} after a warm-up batch (its extra "
                  "counted once); "
                  f"{precision}{threads}; labels written behind; on {device}")
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


def deeplab_steps_per_epoch(pairs: int, real: int, cfg, world: int = 1) -> int:
    """Optimisation steps of one epoch as `train_deeplab` runs them: the kept pairs and, with --real, the
    `real` images repeated to their share (`MixedPairs`); each of `world` workers takes its equal share in
    full batches (the partial one dropped)."""
    from .data.generated import real_repeat
    mixed = real_repeat(pairs, real, cfg.real_fraction) * real if cfg.real and real else 0
    return (pairs + mixed) // world // cfg.batch_size


def _deeplab_batches(training, cfg, side: int, num_classes: int, ignore_label: int, world: int, device):
    """The run's batches of its first epoch: its own loader over `training` (shards read, pairs augmented);
    random batches of the pairs' size when there are no pairs yet (`reproduce --dry-run`)."""
    if training is None:
        x = torch.randint(0, 256, (cfg.batch_size, 3, side, side), dtype=torch.uint8)
        y = torch.randint(0, num_classes, (cfg.batch_size, side, side))
        return iter(lambda: (x, y), None)
    from dataclasses import replace
    from .segmenters.train_deeplab import AugmentedPairs, auto_loader_workers, make_loader
    if cfg.loader_workers is None:  # as `train_deeplab` resolves it for pairs streamed from the shards
        cfg = replace(cfg, loader_workers=auto_loader_workers(world, device.type, True))
    dataset = AugmentedPairs(training, augment=cfg.augment, seed=cfg.seed, ignore_label=ignore_label)
    return iter(make_loader(dataset, cfg, 0, pin_memory=device.type == "cuda"))


def _time_deeplab_steps(run, batches, amp_dtype: str, ignore_label: int, device) -> tuple[float, int, float]:
    """(seconds per step, steps timed, what the first step took beyond the others: paid once): one step as
    warm-up, then up to 10 within the budget, each loading its batch as the run does."""
    from itertools import islice
    from .segmenters.train_deeplab import train_one_epoch

    def steps(k: int) -> float:
        return _timed(train_one_epoch, run, islice(batches, k), device, amp_dtype, ignore_label, lambda losses: None)[0]
    first = steps(1)
    k = min(10, int(TIMING_BUDGET_S / 2 / max(first, 1e-9)))
    if k < 1:
        return first, 1, 0.0
    secs = steps(k) / k
    return secs, k, max(first - secs, 0.0)


def _time_epoch_end(run, val, num_classes: int, ignore_label: int, device) -> tuple[float, float]:
    """(seconds of one validation pass over `val` = (images, masks), from up to 64 images after a warm-up;
    seconds to serialise what an epoch saves: the training state and the best model, assumed bettered every
    epoch; the disk writes themselves are not timed)."""
    from safetensors.torch import save
    from .rundir import model_state
    from .segmenters.train_deeplab import validate
    images, masks = val
    val_secs = 0.0
    if len(images):
        m = min(len(images), 64)
        validate(run.model, images[:2], masks[:2], device, num_classes, ignore_label)  # warm-up
        val_secs = _timed(validate, run.model, images[:m], masks[:m], device, num_classes, ignore_label)[0]
        val_secs *= len(images) / m

    def serialise():
        for state in (model_state(run.model, run.opt, epoch=1), run.model.state_dict()):
            save({k: v.detach().contiguous().cpu() for k, v in state.items()})
    return val_secs, _timed(serialise)[0]


def plan_train_deeplab(pairs: int, image_side: int, num_classes: int, cfg, *, world: int = 1,
                       device: str | torch.device = "cpu", real: int = 0, training=None, val=0,
                       ignore_label: int = 255, amp: bool | str = False, threads: int | None = None) -> Plan:
    """`train-deeplab` of `cfg` on `pairs` kept pairs and `real` real images mixed in (--real): steps at the
    run's batch timed on `training` (the run's own pairs and real images, through its loader; random
    batches of the pairs' size when None), a validation pass on `val` ((images, masks) or a count of
    images of that size) and the checkpoints, each per epoch."""
    from dataclasses import replace
    from .segmenters.train_deeplab import amp_dtype_name, build, segmenter_config
    device = torch.device(device)
    amp_dtype = amp_dtype_name(amp, device.type)
    per_epoch = deeplab_steps_per_epoch(pairs, real, cfg, world)
    if isinstance(val, int):
        val = (np.random.default_rng(0).integers(0, 256, (val, image_side, image_side, 3), dtype=np.uint8),
               np.zeros((val, image_side, image_side), dtype=np.int64))
    with torch_threads(threads):
        seg_cfg = segmenter_config(cfg, num_classes, ignore_label)
        build_secs, run = _timed(build, replace(cfg, sync_bn=False), seg_cfg, device, amp_dtype, False)
        batches = _deeplab_batches(training, cfg, image_side, num_classes, ignore_label, world, device)
        step_secs, steps, first = _time_deeplab_steps(run, batches, amp_dtype, ignore_label, device)
        val_secs, save_secs = _time_epoch_end(run, val, num_classes, ignore_label, device)
    params = sum(p.numel() for p in run.model.parameters())
    plan = Plan("train-deeplab")
    plan.add("segmenter", f"{cfg.arch} / {cfg.encoder}, {params / 1e6:.1f}M parameters, input x{cfg.input_scale}")
    mixed = f" + {real} real images at {cfg.real_fraction:.0%}" if cfg.real and real else ""
    plan.add("training", f"{pairs} kept pairs{mixed}, {per_epoch} steps per epoch x {cfg.epochs} epochs, batch "
                         f"{cfg.batch_size} per worker x {world}")
    plan.add("checkpoints", f"every epoch, about {_mib(params * 4 * 3)} (model + Adam moments)")
    plan.part("model build", build_secs + import_seconds("matplotlib.figure"))  # and the curves' imports
    plan.part("training steps", first + step_secs * per_epoch * cfg.epochs)
    plan.part("validation", val_secs * cfg.epochs)
    plan.part("checkpoints", save_secs * cfg.epochs)
    source = "the run's pairs through its loader" if training is not None else "random batches of the pairs' size"
    plan.timed = (f"{steps} step(s) at batch {cfg.batch_size} on {source} after a warm-up step (its extra counted "
                  "once)"
                  + (f", {amp_dtype} autocast" if amp_dtype else "") + f"; validation on {len(val[0])} image(s); "
                  f"checkpoints serialised, disk writes and curves not timed; on {device}")
    return plan


def plan_sample_run(run_dir: str | Path, cfg, *, ensemble: str | Path | None = None, workers: int = 1, gpus: int = 0,
                    device: str = "cpu", trajectory_features: bool = False, precision: str | None = None,
                    compile: bool | None = None, threads: int | None = None) -> Plan:
    """`sample --dry-run`: the checks `sample_run` makes before writing, then `plan_sample`."""
    from .devices import resolve_device
    from .distributed import resolve_world
    from .io import check_output_dir, read_json
    from .pipeline.generate import first_shard_bytes, resolve_sample_config, resolve_settings
    from .data.shards import ShardStore
    world, _, device = resolve_world(workers, gpus, device)
    run = Path(run_dir)
    cfg = resolve_settings(run, cfg, device, precision=precision, compile=compile, threads=threads)
    cfg, resolution = resolve_sample_config(cfg, ensemble, trajectory_features)
    check_output_dir(run, first_shard_bytes(cfg, resolution))
    manifest = run / "manifest.json"
    same_run = manifest.is_file() and read_json(manifest).get("hash") == cfg.hash()
    store = ShardStore(run)
    shards = [k for k in range(cfg.num_shards) if not (same_run and store.committed(k))]
    return plan_sample(cfg, ensemble=ensemble, shards=shards, world=world, device=resolve_device(device),
                       trajectory_features=trajectory_features)


def plan_label_run(run_dir: str | Path, ensemble: str | Path, *, workers: int = 1, gpus: int = 0,
                   device: str = "cpu", threads: int | None = None, precision: str | None = None) -> Plan:
    """`label --dry-run`: the checks `label_run` makes before writing, then `plan_label` with the run's
    precision and threads (a run's recorded thread count wins over `threads`, as in `label_run`)."""
    from dataclasses import replace
    from .devices import resolve_device
    from .distributed import resolve_world
    from .io import read_json
    from .pipeline.config import SampleConfig
    from .pipeline.generate import check_labeller, labels_precision
    run = Path(run_dir)
    cfg = SampleConfig(**read_json(run / "manifest.json")["config"])
    world, _, device = resolve_world(workers, gpus, device)
    check_labeller(ensemble, load_generator(cfg.model, "meta"))
    precision = labels_precision(run, precision, device)
    return plan_label(run, replace(cfg, threads=cfg.threads or threads), ensemble, world=world,
                      device=resolve_device(device), precision=precision)


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
