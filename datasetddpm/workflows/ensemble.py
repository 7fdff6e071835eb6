"""Direct mode on folders: train the pixel ensemble, segment images, evaluate on a labelled split."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..data.folders import read_images, read_labelled, resolve_split
from ..data.images import write_mask_png
from ..direct import Evaluation, FeatureSource, evaluate_labels, fit_ensemble, segment
from ..ensemble.model import PixelEnsemble, holds_ensemble, load_ensemble, recorded_model, save_ensemble
from ..ensemble.train import EnsembleTrainConfig
from ..errors import DatasetDDPMError, InputError, OptionError
from ..hooks import current_figures
from ..io import check_output_dir, read_json, remove_stale_temporaries, run_lock, write_json
from ..pipeline.annotate import attach_latents
from ..segmenters.model import load_segmenter, predict
from .problem import Problem, check_image_sizes, check_ensemble_size, source_for


def _ensemble_bytes(source: FeatureSource, num_classes: int, members: int) -> int:
    """Size of the checkpoint `train-ensemble` will write (float32 weights of every member)."""
    from ..ensemble.model import hidden_sizes
    dim = 27 if source.generator is None else sum(source.generator.feature_channels(source.spec))
    h1, h2 = hidden_sizes(num_classes)
    return 4 * members * (dim * h1 + h1 * h2 + h2 * num_classes + h1 + h2 + num_classes)


def _ensemble_inputs(data, out, problem: Problem, colour: bool, limit, train: EnsembleTrainConfig, device):
    """Every input of `train-ensemble` checked, before anything is written: (folder, labelled set, source)."""
    folder = resolve_split(data, "train")
    labelled = read_labelled(folder, problem.num_classes, problem.ignore_label, limit, resolution=problem.resolution)
    source = source_for(problem, colour=colour, device=device)
    check_image_sizes(source, labelled.images, labelled.paths, problem.resolution)
    attach_latents(source.generator, folder, labelled.images, labelled.paths)  # StyleGAN2: annotated samples
    check_output_dir(out, _ensemble_bytes(source, problem.num_classes, train.members), what="the ensemble")
    return folder, labelled, source


def plan_ensemble_folder(data: str | Path, out: str | Path, problem: Problem, *, colour: bool = False,
                         limit: int | None = None, train: EnsembleTrainConfig | None = None,
                         device: str | torch.device = "cpu"):
    """`train-ensemble --dry-run`: the checks of `train_ensemble_folder`, then a plan from timed steps."""
    from ..plans import plan_train_ensemble
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
    if "model" in stored:  # recorded relative to the ensemble's folder when both lie in one tree
        stored["model"] = recorded_model(meta, out)
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
                                     train=train, progress=progress, diagnose=True)
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
        current_figures().ensemble_curves(training, Path(out) / "training_curves.png")
    # Classes the labeller has too few pixels of or does not learn, said now rather than after sampling.
    from ..ensemble.diagnostics import class_warnings
    names = problem.class_names or tuple(str(k) for k in range(problem.num_classes))
    return {**log, "unchanged": unchanged, "class_names": list(names), "ignore_label": problem.ignore_label,
            "class_warnings": class_warnings(names, log["class_pixels"], log["training_recall"], problem.ignore_label)}


def segment_folder(images_dir: str | Path, out: str | Path, *, ensemble: str | Path | None = None,
                   segmenter: str | Path | None = None, model: str | None = None, generator: str | None = None,
                   device: str | torch.device = "cpu", progress: bool = True) -> int:
    """Images -> palette PNG masks `<stem>.png` in `out`, with an ensemble (direct DDPM mode) or a trained
    segmenter (no diffusion model needed). All inputs are read before anything is written; `generator`
    (a kind, `--generator`): the ensemble's model must be one."""
    if generator is not None and ensemble is not None:
        from ..generators.loading import resolve_model
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
        check_image_sizes(source, images, paths)
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
    check_image_sizes(source, labelled.images, labelled.paths)
    attach_latents(source.generator, folder, labelled.images, labelled.paths)
    seg = segment(source, ensemble.to(device), labelled.images, progress=progress)
    return evaluate_labels(seg.labels, labelled.masks, cfg.num_classes, cfg.ignore_label, cfg.class_names)


def ensemble_class_report(ensemble_dir: str | Path, cfg, confusion: np.ndarray) -> dict:
    """Per-class report of an ensemble's test confusion, split by the classes' shares of the pixels it was
    trained on (its JSON's `training.class_pixels`; else, for an older checkpoint, the test labels')."""
    from ..segmenters.class_report import class_report
    names = cfg.class_names or tuple(str(k) for k in range(cfg.num_classes))
    trained_on = read_json(Path(ensemble_dir) / "ensemble.json").get("training", {}).get("class_pixels")
    if trained_on:
        return class_report(confusion, names, cfg.ignore_label, trained_on, "the ensemble's training pixels")
    return class_report(confusion, names, cfg.ignore_label, confusion.sum(1).tolist(),
                        "the test labels (the ensemble records no training pixels)")


def evaluate_folder(ensemble_dir: str | Path, data: str | Path, out: str | Path | None = None, *,
                    model: str | None = None, limit: int | None = None, device: str | torch.device = "cpu",
                    progress: bool = True, class_report: bool = False) -> Evaluation:
    """`evaluate`; `class_report` adds the per-class report (IoU beside training pixels, small/large split)."""
    ensemble = load_ensemble(ensemble_dir)
    ev = evaluate_ensemble(ensemble, data, model=model, limit=limit, device=device, progress=progress)
    if class_report:
        ev.class_report = ensemble_class_report(ensemble_dir, ensemble.cfg, ev.confusion)
    if out is not None:
        from ..environment import provenance
        write_json(out, {"ensemble": str(ensemble_dir), "data": str(data), **ev.to_dict(), **provenance()})
    return ev
