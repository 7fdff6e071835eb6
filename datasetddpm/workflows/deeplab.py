"""`train-deeplab` on a run folder: its configuration, the input checks, the plan and the (distributed) run."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.folders import read_labelled, resolve_split
from ..errors import InputError
from ..hooks import current_figures
from ..io import check_output_dir, read_json
from ..presets import get_preset


def _deeplab_worker(rank: int, world: int, run: str, val, mixed, out: str, cfg_dict: dict, device: str,
                    amp: bool | str, progress: bool, figures) -> None:
    """One training process. `val` and `mixed` (LabelledSets) were read by the command before the process
    group existed: a rank spends nothing on them inside the group's timeout. `figures`: the command's (a
    spawned process has none installed)."""
    from ..data.generated import GeneratedPairs
    from ..devices import resolve_device
    from ..segmenters.train_deeplab import DeepLabTrainConfig, train_deeplab
    pairs = GeneratedPairs(run)  # streamed from the shards by the DataLoader, never all in memory
    card = pairs.card
    cfg = DeepLabTrainConfig(**cfg_dict)
    train_deeplab(_training_pairs(pairs, mixed, cfg), val.images, val.masks, out, cfg,
                  num_classes=len(card["classes"]), ignore_label=card["ignore_label"],
                  class_names=tuple(card["classes"]), data_key=_deeplab_data_key(card),
                  device=resolve_device(device, rank=rank), amp=amp, progress=progress, pairs_checked=True,
                  held_out=tuple(p.name for p in val.paths) if cfg.val_split else (), figures=figures)


def _training_pairs(pairs, mixed, cfg):
    """The generated pairs, followed by `mixed` (the --real images) repeated to their share when given."""
    if mixed is None:
        return pairs
    from ..data.generated import MixedPairs, real_repeat
    return MixedPairs(pairs, mixed.images, mixed.masks, real_repeat(len(pairs), len(mixed), cfg.real_fraction))


def _deeplab_data_key(card: dict) -> str:
    """What DeepLab trains on, for its resume hash: the run's generation config and its labels."""
    key = f"{card['config_hash']}/{card['labels_hash']}"
    if card.get("prefer_classes"):  # mined pairs are other pairs (keys of plain runs stay as they were)
        key += "/prefer:" + ",".join(card["prefer_classes"])
    # A run finalized again with another drop or cap keeps other pairs: resuming on them would mix two
    # trainings. Keys of runs finalized with the defaults stay as they were.
    if card.get("drop_fraction", 0.1) != 0.1 or card.get("max_pairs", 50_000) != 50_000:
        key += f"/drop:{card['drop_fraction']}/max:{card['max_pairs']}"
    return key


def deeplab_config(preset: str | None = None, **options):
    """The DeepLab training config: options given (not None) win over the preset's DeepLab settings, which
    win over `DeepLabTrainConfig`'s defaults."""
    from dataclasses import asdict
    from ..segmenters.train_deeplab import DeepLabTrainConfig
    base = asdict(get_preset(preset).deeplab) if preset else {}
    return DeepLabTrainConfig(**{**base, **{k: v for k, v in options.items() if v is not None}})


@dataclass
class _DeepLabInputs:
    """What train-deeplab checked and read before anything is written or any worker starts."""

    pairs: object  # GeneratedPairs of the run
    world: int
    backend: str
    device: str
    cfg: object  # the DeepLabTrainConfig as run: --encoder-weights resolved to a local file and its sha256
    val: object  # LabelledSet: the real images the epoch is chosen on
    mixed: object  # LabelledSet of --real, or None


def _check_deeplab_inputs(run, val, out, cfg, workers: int, gpus: int, device: str, amp: bool | str = False,
                          timeout_s: float | None = None) -> _DeepLabInputs:
    """The run, the options, the encoder weights and the real images, before anything is written."""
    from ..data.generated import GeneratedPairs
    from ..distributed import check_timeout, resolve_world
    from ..pipeline.verify import cheap_check
    from ..segmenters.train_deeplab import check_device_options, check_pairs, segmenter_config, split_validation
    pairs = GeneratedPairs(run)
    cheap_check(run, index=True)
    pairs.check_all()  # export's per-pair check (bytes vs the index, class ids) before anything is written
    world, backend, device = resolve_world(workers, gpus, device)
    check_device_options(cfg, world, torch.device(device).type, amp)
    check_timeout(timeout_s)
    k, ignore = len(pairs.card["classes"]), pairs.card["ignore_label"]
    seg_cfg = segmenter_config(cfg, k, ignore, tuple(pairs.card["classes"]))
    cfg = _with_encoder_weights(cfg, seg_cfg)
    real = read_labelled(resolve_split(val, "train"), k, ignore)
    mixed = _read_mixed(cfg.real, val, real, k, ignore)
    real, mixed = split_validation(real, mixed, cfg)  # --val-split: held-out images, the rest mixed in
    if mixed is not None and mixed.images.shape[1:3] != pairs[0][0].shape[:2]:  # batched together
        raise InputError(mixed.paths[0], f"is {mixed.images.shape[2]}x{mixed.images.shape[1]} but the run's "
                                         f"pairs are {pairs[0][0].shape[1]}x{pairs[0][0].shape[0]}")
    check_pairs(_training_pairs(pairs, mixed, cfg), cfg, seg_cfg, world)
    check_output_dir(out)
    return _DeepLabInputs(pairs, world, backend, device, cfg, real, mixed)


def _read_mixed(real_dir: str, val_dir, val_set, k: int, ignore: int):
    """The --real images (None without it); when --real names the --val folder (the usual recipe), the set
    already read for validation: each image is read once."""
    if not real_dir:
        return None
    folder = resolve_split(real_dir, "train")
    if folder.resolve() == resolve_split(val_dir, "train").resolve():
        return val_set
    return read_labelled(folder, k, ignore)


def _with_encoder_weights(cfg, seg_cfg):
    """`cfg` with --encoder-weights as a local file (`imagenet`: downloaded now, not in the workers) and its
    sha256, its keys and shapes checked against the segmenter's encoder (built on the meta device)."""
    if not cfg.encoder_weights:
        return cfg
    from dataclasses import replace
    from ..segmenters.encoder_weights import load_encoder_weights, resolve_encoder_weights
    from ..segmenters.model import create_segmenter
    path, digest = resolve_encoder_weights(cfg.encoder_weights, cfg.encoder)
    with torch.device("meta"):
        encoder = create_segmenter(seg_cfg).net.encoder
    load_encoder_weights(encoder, path, meta=True)
    return replace(cfg, encoder_weights=path, encoder_weights_sha256=digest)


def plan_deeplab_run(run: str | Path, val: str | Path, out: str | Path, cfg, *, workers: int = 1, gpus: int = 0,
                     device: str = "cpu", amp: bool | str = False, threads: int | None = None):
    """`train-deeplab --dry-run`: the checks of `train_deeplab_run` (timed: the run makes them too), then a
    plan from steps timed on the run's own pairs, real share included, and its validation images."""
    import time
    from ..devices import resolve_device
    from ..plans import plan_train_deeplab
    t0 = time.perf_counter()
    i = _check_deeplab_inputs(run, val, out, cfg, workers, gpus, device, amp)
    checks = time.perf_counter() - t0
    card = i.pairs.card
    plan = plan_train_deeplab(len(i.pairs), i.pairs[0][0].shape[0], len(card["classes"]), i.cfg, world=i.world,
                              device=resolve_device(i.device), real=len(i.mixed) if i.mixed is not None else 0,
                              training=_training_pairs(i.pairs, i.mixed, i.cfg), val=(i.val.images, i.val.masks),
                              ignore_label=card["ignore_label"], amp=amp, threads=threads)
    plan.part("input checks", checks)
    return plan


def train_deeplab_run(run: str | Path, val: str | Path, out: str | Path, cfg, *, workers: int = 1, gpus: int = 0,
                      device: str = "cpu", amp: bool | str = False, threads: int | None = None,
                      timeout_s: float | None = None, progress: bool = True) -> dict:
    """DeepLabV3 on a finalized run's kept pairs, epoch chosen on real labelled images; data-parallel
    over `workers` CPU processes (gloo) or `gpus` GPUs (NCCL), `cfg.batch_size` images per process.
    `amp`: True (--amp: bf16 on CPU, fp16 on GPU), "bf16" or "fp16"; `timeout_s`: the process group's.
    Returns {best_epoch, best_val_miou}, read back from `out/best/config.json`: the workers that trained
    may be other processes."""
    from dataclasses import asdict
    from ..distributed import launch, torchrun_env
    from ..rundir import training_dir
    from ..segmenters.train_deeplab import RESUME_SHOWN
    # Everything slow (the pair check, real images, encoder weights) happens here, before a process group
    # exists: inside it a rank only opens the run and builds its model before the first collective.
    i = _check_deeplab_inputs(run, val, out, cfg, workers, gpus, device, amp, timeout_s)
    run_hash = i.cfg.hash(_deeplab_data_key(i.pairs.card), i.world, amp, torch.device(i.device).type)
    with training_dir(out, run_hash, subdirs=("best",), shown=RESUME_SHOWN,
                      can_overwrite=False, lock=not torchrun_env() or os.environ.get("RANK") == "0"):
        launch(_deeplab_worker, (str(run), i.val, i.mixed, str(out), asdict(i.cfg), i.device, amp, progress,
                                 current_figures()),
               world=i.world, backend=i.backend, threads=threads, timeout_s=timeout_s)
    best = read_json(Path(out) / "best" / "config.json")["training"]
    return {"best_epoch": best["epoch"], "best_val_miou": best["val_miou"], "val_images": len(i.val),
            "val_held_out": bool(i.cfg.val_split), "val_also_trained": i.mixed is i.val}
