"""File-level workflows: folders in, checkpoints and reports out. The CLI commands call these."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.folders import read_images, read_labelled, resolve_split
from .data.images import write_mask_png
from .direct import Evaluation, FeatureSource, evaluate_labels, fit_ensemble, segment
from .ensemble.model import PixelEnsemble, holds_ensemble, load_ensemble, save_ensemble
from .ensemble.train import EnsembleTrainConfig
from .errors import DatasetDDPMError, InputError, OptionError
from .generators.base import FeatureSpec
from .generators.loading import load_generator
from .io import check_output_dir, read_json, remove_stale_temporaries, run_lock, write_json
from .pipeline.annotate import attach_latents
from .presets import get_preset
from .segmenters.model import load_segmenter, predict


@dataclass
class Problem:
    """Classes, ignore label, features, model and image size for a run: a preset with optional overrides."""

    class_names: tuple[str, ...]
    ignore_label: int
    spec: FeatureSpec
    model: str
    resolution: int | None = None  # image side the data must have; None: the model's own resolution

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def resolve_problem(preset: str = "embedded", *, model: str | None = None, blocks=None, steps=None,
                    noise_seed: int | None = None, ignore_label: int | None = None,
                    num_classes: int | None = None, resolution: int | None = None,
                    class_names=None, require_model: bool = True) -> Problem:
    """The preset's problem with overrides; `require_model=False` for the colour baseline (no features).

    Class names: `class_names` when given, else the preset's, or class_0.. when `num_classes` differs."""
    p = get_preset(preset)
    if model is None and p.model is None and require_model:
        raise OptionError("--model", f"preset {p.name} ships no model: give --model adm:{p.adm_flags}:<{p.checkpoint}> "
                                     "(the paper's ADM checkpoint) or a converted model folder")
    names = p.class_names
    if num_classes is not None and num_classes < 1:
        raise OptionError("--num-classes", f"must be >= 1, got {num_classes}")
    if class_names:
        names = tuple(class_names)
        if num_classes is not None and num_classes != len(names):
            raise OptionError("--class-names", f"{len(names)} names but --num-classes {num_classes}")
    elif num_classes is not None and num_classes != len(names):
        names = tuple(f"class_{k}" for k in range(num_classes))
    if resolution is not None and resolution < 1:
        raise OptionError("--resolution", f"must be >= 1, got {resolution}")
    # Paper presets define their data at a fixed size (256); the embedded preset's 32 px belongs to its
    # shipped model, so another model (a user's own DDPM) sets the size itself. No model, no constraint.
    if resolution is None and require_model and (p.model is None or model is None):
        resolution = p.resolution
    spec = FeatureSpec(tuple(blocks or p.features.blocks), tuple(steps or p.features.steps),
                       p.features.noise_seed if noise_seed is None else noise_seed)
    return Problem(names, p.ignore_label if ignore_label is None else ignore_label, spec, model or p.model or "",
                   resolution)


def source_for(problem_or_ensemble, *, colour: bool = False, model: str | None = None,
               device: str | torch.device = "cpu") -> FeatureSource:
    """The feature source a problem (for training) or an ensemble (for inference) needs, on `device`."""
    if isinstance(problem_or_ensemble, PixelEnsemble):
        cfg = problem_or_ensemble.cfg
        spec = cfg.feature_spec()
        if spec is None:
            return FeatureSource()
        return FeatureSource(load_generator(model or cfg.model, device), spec)
    if colour:
        return FeatureSource()
    problem = problem_or_ensemble
    generator = load_generator(model or problem.model, device)
    generator.check_spec(problem.spec)
    return FeatureSource(generator, problem.spec)


def _check_sizes(source: FeatureSource, images: np.ndarray, paths: list[Path], resolution: int | None = 0) -> None:
    """`resolution` None: the images must have the model's own resolution; 0: any size the UNet takes."""
    if source.generator is None:
        return
    side = source.generator.resolution
    if resolution is None and images.shape[1:3] != (side, side):
        raise InputError(paths[0], f"image is {images.shape[2]}x{images.shape[1]} but the model was trained at "
                                   f"{side}x{side}: resize the data or pass --resolution")
    reason = source.generator.check_image_size(*images.shape[1:3])
    if reason:
        raise InputError(paths[0], reason)


def ensemble_side(cfg) -> int | None:
    """The image side an ensemble's features mean what they meant in training: the resolution it was trained
    at (diffusion or StyleGAN2 features); None for the colour baseline (any size) or one that records none."""
    return cfg.resolution if cfg.feature_spec() is not None and cfg.resolution else None


def check_ensemble_size(cfg, images: np.ndarray, paths: list[Path]) -> None:
    """The one size check of every command that runs an ensemble on images (segment, evaluate, suggest):
    they must have the side it was trained at."""
    side = ensemble_side(cfg)
    if side and images.shape[1:3] != (side, side):
        raise InputError(paths[0], f"image is {images.shape[2]}x{images.shape[1]} but this run expects {side}x{side} "
                                   "(set by the ensemble, trained at that size): resize the data")


def _ensemble_bytes(source: FeatureSource, num_classes: int, members: int) -> int:
    """Size of the checkpoint `train-ensemble` will write (float32 weights of every member)."""
    from .ensemble.model import hidden_sizes
    dim = 27 if source.generator is None else sum(source.generator.feature_channels(source.spec))
    h1, h2 = hidden_sizes(num_classes)
    return 4 * members * (dim * h1 + h1 * h2 + h2 * num_classes + h1 + h2 + num_classes)


def _ensemble_inputs(data, out, problem: Problem, colour: bool, limit, train: EnsembleTrainConfig, device):
    """Every input of `train-ensemble` checked, before anything is written: (folder, labelled set, source)."""
    folder = resolve_split(data, "train")
    labelled = read_labelled(folder, problem.num_classes, problem.ignore_label, limit, resolution=problem.resolution)
    source = source_for(problem, colour=colour, device=device)
    _check_sizes(source, labelled.images, labelled.paths, problem.resolution)
    attach_latents(source.generator, folder, labelled.images, labelled.paths)  # StyleGAN2: annotated samples
    check_output_dir(out, _ensemble_bytes(source, problem.num_classes, train.members), what="the ensemble")
    return folder, labelled, source


def plan_ensemble_folder(data: str | Path, out: str | Path, problem: Problem, *, colour: bool = False,
                         limit: int | None = None, train: EnsembleTrainConfig | None = None,
                         device: str | torch.device = "cpu"):
    """`train-ensemble --dry-run`: the checks of `train_ensemble_folder`, then a plan from timed steps."""
    from .plans import plan_train_ensemble
    train = train or EnsembleTrainConfig()
    _, labelled, source = _ensemble_inputs(data, out, problem, colour, limit, train, device)
    return plan_train_ensemble(source, labelled, problem.num_classes, problem.ignore_label, train, device=device)


SAME_TRAINING = ("images", "pixels", "seed", "members", "epochs", "iterations")  # what made the weights, not its time


def _ensemble_options(folder: Path, labelled, source: FeatureSource, problem: Problem,
                      train: EnsembleTrainConfig) -> dict:
    """What train-ensemble's options fix about the ensemble it writes (its weights follow from these)."""
    return {"data": str(Path(folder).resolve()), "images": len(labelled), "seed": train.seed, "members": train.members,
            "num_classes": problem.num_classes, "class_names": list(problem.class_names),
            "ignore_label": problem.ignore_label, "features": source.describe(), "model": source.model_name(),
            "resolution": int(labelled.images.shape[1])}


def check_ensemble_replace(out: str | Path, options: dict, overwrite: bool) -> None:
    """Refuse to replace an ensemble trained with other options unless `overwrite`: runs labelled with it
    name this folder in their card, so another model here would silently change what they point at."""
    meta_file = Path(out) / "ensemble.json"
    if overwrite or not meta_file.is_file():
        return
    meta = read_json(meta_file)
    stored = {**(meta.get("ensemble") or {}), **(meta.get("training") or {})}
    if "data" in stored:
        stored["data"] = str(Path(stored["data"]).resolve())
    stored = json.loads(json.dumps({k: stored[k] for k in options if k in stored}))  # older records lack some
    differ = [k for k, v in json.loads(json.dumps(options)).items() if k in stored and stored[k] != v]
    if differ:
        shown = ", ".join(f"{k} {stored[k]!r} != {options[k]!r}" for k in differ[:3])
        raise DatasetDDPMError(f"{out}: holds an ensemble trained with other options ({shown}); pass --overwrite to "
                               "replace it (runs labelled with it then point at another model), or choose another --out")


def train_ensemble_folder(data: str | Path, out: str | Path, problem: Problem, *, colour: bool = False,
                          limit: int | None = None, train: EnsembleTrainConfig | None = None,
                          device: str | torch.device = "cpu", overwrite: bool = False, progress: bool = True) -> dict:
    """Labelled folder -> ensemble checkpoint (`ensemble.safetensors` + `ensemble.json`) in `out`. The inputs
    are checked, then the folder is locked, then an ensemble of other options there is refused (unless
    `overwrite`), then it trains and writes."""
    train = train or EnsembleTrainConfig()
    folder, labelled, source = _ensemble_inputs(data, out, problem, colour, limit, train, device)
    with run_lock(out):
        check_ensemble_replace(out, _ensemble_options(folder, labelled, source, problem, train), overwrite)
        t0 = time.time()
        ensemble, log = fit_ensemble(source, labelled.images, labelled.masks, num_classes=problem.num_classes,
                                     ignore_label=problem.ignore_label, class_names=problem.class_names,
                                     train=train, progress=progress)
        log["seconds_total"] = round(time.time() - t0, 2)
        remove_stale_temporaries(out)
        training = {**log, "data": str(folder), "images": len(labelled), "seed": train.seed, "members": train.members}
        # A rerun that reproduces the checkpoint bit for bit leaves its files as they are: runs labelled with it
        # record a hash of those files (training log included), which rewriting them would change. The stored
        # log must describe this training too (a kill between the weights and the JSON leaves another's).
        stored = read_json(Path(out) / "ensemble.json").get("training", {}) if holds_ensemble(out, ensemble) else {}
        unchanged = bool(stored) and all(stored.get(k) == training[k] for k in SAME_TRAINING)
        if unchanged:  # the plot shows the training log stored with these files
            training = stored
        else:
            save_ensemble(out, ensemble, {"training": training})
        from .reporting.figures import plot_ensemble_log
        plot_ensemble_log(training, Path(out) / "training_curves.png")
    return {**log, "unchanged": unchanged}


def segment_folder(images_dir: str | Path, out: str | Path, *, ensemble: str | Path | None = None,
                   segmenter: str | Path | None = None, model: str | None = None, generator: str | None = None,
                   device: str | torch.device = "cpu", progress: bool = True) -> int:
    """Images -> palette PNG masks `<stem>.png` in `out`, with an ensemble (direct DDPM mode) or a trained
    segmenter (no diffusion model needed). All inputs are read before anything is written; `generator`
    (a kind, `--generator`): the ensemble's model must be one."""
    if generator is not None and ensemble is not None:
        from .generators.loading import resolve_model
        resolve_model(model, generator, load_ensemble(ensemble).cfg.model or "embedded")
    if (ensemble is None) == (segmenter is None):
        raise OptionError("--ensemble/--segmenter", "give exactly one of them")
    images, paths = read_images(images_dir)
    out = check_output_dir(out)
    if segmenter is not None:
        seg_model = load_segmenter(segmenter).to(device)
        reason = seg_model.check_size(*images.shape[1:3])
        if reason:
            raise InputError(paths[0], reason)
        labels = predict(seg_model, torch.from_numpy(images).permute(0, 3, 1, 2).to(device)).cpu().numpy()
        num_classes = seg_model.cfg.num_classes
    else:
        ens = load_ensemble(ensemble).to(device)
        check_ensemble_size(ens.cfg, images, paths)
        source = source_for(ens, model=model, device=device)
        _check_sizes(source, images, paths)
        attach_latents(source.generator, images_dir, images, paths)
        seg = segment(source, ens, images, progress=progress)
        labels, num_classes = seg.labels, ens.cfg.num_classes
        write_json(out / "uncertainty.json", {p.stem: float(s) for p, s in zip(paths, seg.image_uncertainty)})
    for p, mask in zip(paths, labels):
        write_mask_png(out / f"{p.stem}.png", mask, num_classes)
    return len(paths)


def evaluate_ensemble(ensemble: PixelEnsemble, data: str | Path, *, model: str | None = None, limit: int | None = None,
                      device: str | torch.device = "cpu", progress: bool = True) -> Evaluation:
    cfg = ensemble.cfg
    folder = resolve_split(data, "test")
    # Features only mean what they meant in training at the training size.
    labelled = read_labelled(folder, cfg.num_classes, cfg.ignore_label, limit)
    check_ensemble_size(cfg, labelled.images, labelled.paths)
    source = source_for(ensemble, model=model, device=device)
    _check_sizes(source, labelled.images, labelled.paths)
    attach_latents(source.generator, folder, labelled.images, labelled.paths)
    seg = segment(source, ensemble.to(device), labelled.images, progress=progress)
    return evaluate_labels(seg.labels, labelled.masks, cfg.num_classes, cfg.ignore_label, cfg.class_names)


def evaluate_folder(ensemble_dir: str | Path, data: str | Path, out: str | Path | None = None, *,
                    model: str | None = None, limit: int | None = None, device: str | torch.device = "cpu",
                    progress: bool = True) -> Evaluation:
    ev = evaluate_ensemble(load_ensemble(ensemble_dir), data, model=model, limit=limit, device=device,
                           progress=progress)
    if out is not None:
        from .environment import provenance
        write_json(out, {"ensemble": str(ensemble_dir), "data": str(data), **ev.to_dict(), **provenance()})
    return ev


def _deeplab_worker(rank: int, world: int, run: str, val, mixed, out: str, cfg_dict: dict, device: str,
                    amp: bool | str, progress: bool) -> None:
    """One training process. `val` and `mixed` (LabelledSets) were read by the command before the process
    group existed: a rank spends nothing on them inside the group's timeout."""
    from .data.generated import GeneratedPairs
    from .devices import resolve_device
    from .segmenters.train_deeplab import DeepLabTrainConfig, train_deeplab
    pairs = GeneratedPairs(run)  # streamed from the shards by the DataLoader, never all in memory
    card = pairs.card
    cfg = DeepLabTrainConfig(**cfg_dict)
    train_deeplab(_training_pairs(pairs, mixed, cfg), val.images, val.masks, out, cfg,
                  num_classes=len(card["classes"]), ignore_label=card["ignore_label"],
                  class_names=tuple(card["classes"]), data_key=_deeplab_data_key(card),
                  device=resolve_device(device, rank=rank), amp=amp, progress=progress)


def _training_pairs(pairs, mixed, cfg):
    """The generated pairs, followed by `mixed` (the --real images) repeated to their share when given."""
    if mixed is None:
        return pairs
    from .data.generated import MixedPairs, real_repeat
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
    from .segmenters.train_deeplab import DeepLabTrainConfig
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
    from .data.generated import GeneratedPairs
    from .distributed import check_timeout, resolve_world
    from .pipeline.verify import cheap_check
    from .segmenters.train_deeplab import check_device_options, check_pairs, segmenter_config
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
    mixed = read_labelled(resolve_split(cfg.real, "train"), k, ignore) if cfg.real else None
    if mixed is not None and mixed.images.shape[1:3] != pairs[0][0].shape[:2]:  # batched together
        raise InputError(mixed.paths[0], f"is {mixed.images.shape[2]}x{mixed.images.shape[1]} but the run's "
                                         f"pairs are {pairs[0][0].shape[1]}x{pairs[0][0].shape[0]}")
    check_pairs(_training_pairs(pairs, mixed, cfg), cfg, seg_cfg, world)
    check_output_dir(out)
    return _DeepLabInputs(pairs, world, backend, device, cfg, real, mixed)


def _with_encoder_weights(cfg, seg_cfg):
    """`cfg` with --encoder-weights as a local file (`imagenet`: downloaded now, not in the workers) and its
    sha256, its keys and shapes checked against the segmenter's encoder (built on the meta device)."""
    if not cfg.encoder_weights:
        return cfg
    from dataclasses import replace
    from .segmenters.encoder_weights import load_encoder_weights, resolve_encoder_weights
    from .segmenters.model import create_segmenter
    path, digest = resolve_encoder_weights(cfg.encoder_weights, cfg.encoder)
    with torch.device("meta"):
        encoder = create_segmenter(seg_cfg).net.encoder
    load_encoder_weights(encoder, path, meta=True)
    return replace(cfg, encoder_weights=path, encoder_weights_sha256=digest)


def plan_deeplab_run(run: str | Path, val: str | Path, out: str | Path, cfg, *, workers: int = 1, gpus: int = 0,
                     device: str = "cpu", amp: bool | str = False):
    """`train-deeplab --dry-run`: the checks of `train_deeplab_run`, then a plan from two timed steps."""
    from .devices import resolve_device
    from .plans import plan_train_deeplab
    inputs = _check_deeplab_inputs(run, val, out, cfg, workers, gpus, device, amp)
    pairs = inputs.pairs
    side = pairs[0][0].shape[0]
    return plan_train_deeplab(len(pairs), side, len(pairs.card["classes"]), inputs.cfg, world=inputs.world,
                              device=resolve_device(inputs.device))


def train_deeplab_run(run: str | Path, val: str | Path, out: str | Path, cfg, *, workers: int = 1, gpus: int = 0,
                      device: str = "cpu", amp: bool | str = False, threads: int | None = None,
                      timeout_s: float | None = None, progress: bool = True) -> dict:
    """DeepLabV3 on a finalized run's kept pairs, epoch chosen on real labelled images; data-parallel
    over `workers` CPU processes (gloo) or `gpus` GPUs (NCCL), `cfg.batch_size` images per process.
    `amp`: True (--amp: bf16 on CPU, fp16 on GPU), "bf16" or "fp16"; `timeout_s`: the process group's.
    Returns {best_epoch, best_val_miou}, read back from `out/best/config.json`: the workers that trained
    may be other processes."""
    from dataclasses import asdict
    from .distributed import launch, torchrun_env
    from .rundir import training_dir
    from .segmenters.train_deeplab import RESUME_SHOWN
    # Everything slow (the pair check, real images, encoder weights) happens here, before a process group
    # exists: inside it a rank only opens the run and builds its model before the first collective.
    i = _check_deeplab_inputs(run, val, out, cfg, workers, gpus, device, amp, timeout_s)
    run_hash = i.cfg.hash(_deeplab_data_key(i.pairs.card), i.world, amp, torch.device(i.device).type)
    with training_dir(out, run_hash, subdirs=("best",), shown=RESUME_SHOWN,
                      can_overwrite=False, lock=not torchrun_env() or os.environ.get("RANK") == "0"):
        launch(_deeplab_worker, (str(run), i.val, i.mixed, str(out), asdict(i.cfg), i.device, amp, progress),
               world=i.world, backend=i.backend, threads=threads, timeout_s=timeout_s)
    best = read_json(Path(out) / "best" / "config.json")["training"]
    return {"best_epoch": best["epoch"], "best_val_miou": best["val_miou"]}


def probe_folder(data: str | Path, out: str | Path, *, test: str | Path | None = None, preset: str = "embedded",
                 model: str | None = None, generator: str | None = None, blocks: tuple[int, ...] | None = None,
                 steps: tuple[int, ...] = (0, 25, 50, 100, 150, 250, 400, 600, 800),
                 train_images: int = 20, test_images: int = 20, ignore_label: int | None = None,
                 num_classes: int | None = None, seed: int = 0, device: str | torch.device = "cpu",
                 progress: bool = True) -> dict:
    """`datasetddpm probe`: one MLP per (block, step) on a labelled folder, scored on held-out images
    (`blocks` None: every block of the model)."""
    from .generators.loading import resolve_model
    from .probe import run_probe, save_probe
    problem = resolve_problem(preset, model=resolve_model(model, generator), ignore_label=ignore_label,
                              num_classes=num_classes)
    gen = load_generator(problem.model, device)
    block_ids = tuple(range(len(gen.blocks))) if blocks is None else tuple(blocks)
    # A StyleGAN2 has one "step" (its layers are the grid's blocks); --steps applies to diffusion only.
    step_ids = (0,) if getattr(gen, "latent_based", False) else tuple(steps)
    gen.check_spec(FeatureSpec(block_ids, step_ids))
    train_dir, test_dir = resolve_split(data, "train"), test or resolve_split(data, "test")
    train = read_labelled(train_dir, problem.num_classes, problem.ignore_label, train_images)
    held = read_labelled(test_dir, problem.num_classes, problem.ignore_label, test_images)
    for folder, labelled in ((train_dir, train), (test_dir, held)):  # StyleGAN2: annotated generated samples
        attach_latents(gen, folder, labelled.images, labelled.paths)
    check_output_dir(out)
    result = run_probe(gen, train.images, train.masks, held.images, held.masks, blocks=block_ids, steps=step_ids,
                       num_classes=problem.num_classes, ignore_label=problem.ignore_label,
                       noise_seed=problem.spec.noise_seed, seed=seed, progress=progress)
    result["model"] = problem.model
    save_probe(result, out)
    return result


def check_samples_run(out: str | Path, *, model: str = "embedded", oracle: str = "embedded", n: int = 200,
                      sampler: str = "ddim", sampling_steps: int = 50, seed: int = 0,
                      device: str | torch.device = "cpu", progress: bool = True) -> dict:
    """`datasetddpm check-samples`: the oracle's numbers on a model's samples vs on real images, with a
    grid, in `out/sample_report.json` (with its command, date and machine)."""
    from .data.oracle import check_samples
    from .environment import provenance
    from .paths import EMBEDDED_ORACLE_DIR
    generator = load_generator(model, device)
    generator.make_sampler(sampler, sampling_steps)
    segmenter = load_segmenter(EMBEDDED_ORACLE_DIR if oracle == "embedded" else oracle).to(device)
    check_output_dir(out)
    report = check_samples(generator, segmenter, out, n=n, sampler=sampler, num_steps=sampling_steps, seed=seed,
                           progress=progress)
    report.update(provenance())
    write_json(Path(out) / "sample_report.json", report)
    return report
