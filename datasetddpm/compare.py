"""DeepLabV3-from-synthetic vs direct DDPM mode on a real labelled test split.

Reports per-class IoU, mIoU (reference protocol) and seconds per image for each: direct mode needs
the diffusion model (several UNet passes per image), DeepLab is one standard forward pass.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .data.folders import read_labelled, resolve_split
from .direct import evaluate_labels, segment
from .ensemble.model import load_ensemble
from .io import atomic_path, write_json
from .report import colour_mask, image_grid, save_png
from .segmenters.model import load_segmenter, predict


def compare(ensemble_dir: str | Path, segmenter_dir: str | Path, data: str | Path, out_dir: str | Path, *,
            model: str | None = None, limit: int | None = None, device: str | torch.device = "cpu",
            progress: bool = True) -> dict:
    from .workflows import source_for
    ensemble = load_ensemble(ensemble_dir).to(device)
    segmenter = load_segmenter(segmenter_dir).to(device)
    cfg = ensemble.cfg
    test = read_labelled(resolve_split(data, "test"), cfg.num_classes, cfg.ignore_label, limit)
    n = len(test)

    source = source_for(ensemble, model=model, device=device)
    t = time.perf_counter()
    direct = segment(source, ensemble, test.images, progress=progress).labels
    direct_s = (time.perf_counter() - t) / n
    t = time.perf_counter()
    images = torch.from_numpy(test.images).permute(0, 3, 1, 2).to(device)
    deeplab = predict(segmenter, images, batch_size=8).cpu().numpy()
    deeplab_s = (time.perf_counter() - t) / n  # on a GPU: includes the copy back, as a user's would

    rows = {}
    for name, pred, secs in (("direct DDPM", direct, direct_s), ("DeepLabV3 (synthetic)", deeplab, deeplab_s)):
        ev = evaluate_labels(pred, test.masks, cfg.num_classes, cfg.ignore_label, cfg.class_names)
        rows[name] = {"miou": ev.miou, "iou": ev.iou, "seconds_per_image": secs}
    report = {"test_images": n, "data": str(data), "ensemble": str(ensemble_dir), "segmenter": str(segmenter_dir),
              "protocol": "reference mIoU: per-class intersections/unions summed over the test set; ignore label "
                          "skipped; absent classes count as 0", "methods": rows}
    out = Path(out_dir)
    write_json(out / "compare.json", report)
    with atomic_path(out / "compare.md") as tmp:
        tmp.write_text(compare_markdown(report))
    tiles = []
    for i in range(min(8, n)):
        tiles += [test.images[i], colour_mask(test.masks[i], cfg.num_classes),
                  colour_mask(direct[i], cfg.num_classes), colour_mask(deeplab[i], cfg.num_classes)]
    save_png(out / "compare_grid.png", image_grid(tiles, 4, scale=3))
    return report


def compare_markdown(report: dict) -> str:
    methods = report["methods"]
    names = list(next(iter(methods.values()))["iou"])
    lines = ["| method | mIoU | s / image | " + " | ".join(names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for m, r in methods.items():
        lines.append(f"| {m} | {100 * r['miou']:.1f} | {r['seconds_per_image']:.4f} | "
                     + " | ".join(f"{100 * r['iou'][c]:.1f}" for c in names) + " |")
    return "\n".join(lines) + "\n"
