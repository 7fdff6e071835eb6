"""A segmenter trained on generated pairs (DeepLabV3 or U-Net) vs direct DDPM mode on a real labelled test split.

Reports per-class IoU, mIoU (reference protocol) and seconds per image for each: direct mode needs
the diffusion model (several UNet passes per image), the segmenter is one standard forward pass. Writes
compare.json, compare.md, compare_grid.png and compare.html (everything in one self-contained page).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .data.folders import read_labelled, resolve_split
from .direct import evaluate_labels, segment
from .environment import provenance
from .ensemble.model import load_ensemble, recorded_model
from .errors import DatasetDDPMError, InputError
from .hooks import current_figures
from .io import atomic_path, check_output_dir, read_json, write_json
from .segmenters.model import ARCH_NAMES, load_segmenter, predict




def segmenter_name(folder: str | Path, what: str = "synthetic") -> str:
    """An unnamed segmenter's row name: its architecture (from its config.json), e.g. "U-Net (synthetic)".
    A folder without a readable config is named "segmenter (...)"; loading it then says what is wrong."""
    try:
        arch = read_json(Path(folder) / "config.json")["segmenter"]["arch"]
    except (DatasetDDPMError, OSError, KeyError, TypeError):
        arch = "segmenter"
    return f"{ARCH_NAMES.get(arch, arch)} ({what})"


def compare(ensemble_dir: str | Path, segmenter_dir: str | Path | dict, data: str | Path, out_dir: str | Path, *,
            model: str | None = None, limit: int | None = None, device: str | torch.device = "cpu",
            progress: bool = True) -> dict:
    """Direct mode (the ensemble) against one or more trained segmenters (`{name: folder}`, e.g.
    DatasetDDPM's DeepLab and DatasetGAN's) on the same real test images."""
    from .workflows import source_for
    folders = segmenter_dir if isinstance(segmenter_dir, dict) else {segmenter_name(segmenter_dir): segmenter_dir}
    ensemble = load_ensemble(ensemble_dir).to(device)
    cfg = ensemble.cfg
    segmenters = {name: load_segmenter(d).to(device) for name, d in folders.items()}
    for name, seg in segmenters.items():
        _check_same_classes(cfg, seg.cfg, Path(folders[name]) / "config.json")
    check_output_dir(out_dir)
    test = read_labelled(resolve_split(data, "test"), cfg.num_classes, cfg.ignore_label, limit)
    n = len(test)
    source = source_for(ensemble, model=model, device=device)
    t = time.perf_counter()
    predictions = {"direct DDPM": segment(source, ensemble, test.images, progress=progress).labels}
    seconds = {"direct DDPM": (time.perf_counter() - t) / n}
    images = torch.from_numpy(test.images).permute(0, 3, 1, 2).to(device)
    for name, seg in segmenters.items():
        t = time.perf_counter()
        predictions[name] = predict(seg, images, batch_size=8).cpu().numpy()
        seconds[name] = (time.perf_counter() - t) / n  # on a GPU: includes the copy back, as a user's would
    rows = {}
    for name, pred in predictions.items():
        ev = evaluate_labels(pred, test.masks, cfg.num_classes, cfg.ignore_label, cfg.class_names)
        rows[name] = {"miou": ev.miou, "iou": ev.iou, "seconds_per_image": seconds[name]}
    report = {"test_images": n, "data": str(data), "ensemble": str(ensemble_dir),
              "segmenter": str(next(iter(folders.values()))), "segmenters": {k: str(v) for k, v in folders.items()},
              "protocol": "reference mIoU: per-class intersections/unions summed over the test set; ignore label "
                          "skipped; absent classes count as 0", "methods": rows, **provenance()}
    _write_outputs(Path(out_dir), report, test, predictions, cfg, folders, model=model, limit=limit, device=device)
    return report


def _write_outputs(out: Path, report: dict, test, predictions: dict, cfg, folders: dict, **options) -> None:
    write_json(out / "compare.json", report)
    with atomic_path(out / "compare.md") as tmp:
        tmp.write_text(compare_markdown(report))
    config = resolved_config(report["ensemble"], folders, report["data"], test_images=len(test), **options)
    current_figures().compare_page(out, report, config, test.images, {"ground truth": test.masks, **predictions},
                                   class_names=cfg.class_names, num_classes=cfg.num_classes)


def resolved_config(ensemble_dir, segmenters: dict, data, *, model, limit, device, test_images: int) -> dict:
    """What the numbers came from: this command's options and the models' recorded configs."""
    ensemble = read_json(Path(ensemble_dir) / "ensemble.json")
    configs = {name: read_json(Path(d) / "config.json") for name, d in segmenters.items()}
    return {"compare": {"ensemble": str(ensemble_dir), "segmenters": {k: str(v) for k, v in segmenters.items()},
                        "data": str(data), "model": model or recorded_model(ensemble, ensemble_dir), "limit": limit,
                        "device": str(device), "test_images": test_images},
            "ensemble": {k: ensemble.get(k) for k in ("ensemble", "training")},
            **{f"segmenter: {name}": {k: c.get(k) for k in ("segmenter", "training")} for name, c in configs.items()}}


def _check_same_classes(ensemble_cfg, segmenter_cfg, where: Path) -> None:
    """Both methods must label the same classes, or their IoU columns would silently mean different things."""
    theirs, ours = segmenter_cfg.num_classes, ensemble_cfg.num_classes
    if theirs != ours:
        raise InputError(where, f"the segmenter predicts {theirs} classes but the ensemble {ours}: compare models "
                                "trained on the same classes")
    names_a, names_b = tuple(segmenter_cfg.class_names), tuple(ensemble_cfg.class_names)
    if names_a and names_b and names_a != names_b:
        raise InputError(where, f"the segmenter's classes {list(names_a)} differ from the ensemble's {list(names_b)}")


def compare_markdown(report: dict) -> str:
    """compare.json's numbers for people: mIoU and every class's IoU in % (one decimal), as on the console
    (the header keeps its words: the committed results pages render this table)."""
    methods = report["methods"]
    names = list(next(iter(methods.values()))["iou"])
    lines = ["| method | mIoU | s / image | " + " | ".join(names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for m, r in methods.items():
        lines.append(f"| {m} | {100 * r['miou']:.1f} | {r['seconds_per_image']:.4f} | "
                     + " | ".join(f"{100 * r['iou'][c]:.1f}" for c in names) + " |")
    return "\n".join(lines) + "\n"
