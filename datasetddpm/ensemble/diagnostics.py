"""Early class diagnostics: the classes a freshly trained labeller has too few pixels of, or does not learn.

A class the ensemble never predicts is missing from every synthetic label, and the first sign of it used to
be `finalize`, after the sampling. `train-ensemble` therefore checks each class right after training, on
the pixels it was trained on (cheap: a seeded sample of at most `RECALL_SAMPLE` pixels per class, one
forward pass, no UNet):

- too few labelled pixels: fewer than `MIN_CLASS_PIXELS`, or under `MIN_CLASS_SHARE` of all labelled
  pixels (after annotation hygiene). The reference trains on batches of 64 pixels drawn from all of them,
  so such a class enters about one batch in ten or fewer and is usually outvoted by its neighbours;
- not learned: the ensemble's vote gives the class to under `MIN_TRAINING_RECALL` of its own training
  pixels. Recall on the training pixels is an upper bound of what it does on new images: a class it
  misses here it misses in the samples too.

Both limits were chosen so the embedded default (smallest class: beak, 0.8 % and ~160 pixels of 20
labelled 32 px images) raises no warning, while the few-dozen-pixel class of issue #38 (well under 0.1 %)
does. The remedy is the same for both: annotate more of the class (docs/custom_data.md, "Classes the
labeller cannot learn").
"""

from __future__ import annotations

import numpy as np
import torch

from .predict import predict_pixels

MIN_CLASS_PIXELS = 100  # labelled pixels of a class, all images together
MIN_CLASS_SHARE = 0.001  # a class's share of all labelled pixels
MIN_TRAINING_RECALL = 0.5  # share of a class's own training pixels the ensemble's vote gives to it
RECALL_SAMPLE = 2000  # training pixels per class the recall is measured on (all of them when fewer)
REMEDY = ("annotate more of it (more images that show it; see docs/custom_data.md, 'Classes the labeller "
          "cannot learn'), retrain the ensemble and check again before sampling")


@torch.no_grad()
def training_recall(ensemble, bank, num_classes: int, ignore_label: int, *, per_class: int = RECALL_SAMPLE,
                    seed: int = 0) -> list[float | None]:
    """Per class: the share of (a seeded sample of) its labelled pixels in `bank` that the ensemble's vote
    gives to it; None for a class without labelled pixels (and for the ignore label, when it is a class id).
    Draws no number from torch's generator."""
    device = bank.stacked[0].device
    masks = bank.mask_tensor
    picks, owners = [], []
    for k in range(num_classes):
        where = (masks == k).nonzero() if k != ignore_label else masks.new_zeros((0, 3))  # (P_k, 3) n, y, x
        if len(where) > per_class:
            where = where[torch.from_numpy(np.sort(np.random.default_rng([seed, k]).choice(
                len(where), per_class, replace=False)))]
        picks.append(where)
        owners.append(torch.full((len(where),), k, dtype=torch.long))
    pixels, owner = torch.cat(picks).to(device), torch.cat(owners)
    if len(pixels) == 0:
        return [None] * num_classes
    voted = predict_pixels(ensemble, bank.gather(pixels[:, 0], pixels[:, 1], pixels[:, 2]))[0].cpu()
    hits = torch.bincount(owner[voted == owner], minlength=num_classes).tolist()
    sizes = torch.bincount(owner, minlength=num_classes).tolist()
    return [round(hits[k] / sizes[k], 4) if sizes[k] else None for k in range(num_classes)]


def class_warnings(names: tuple[str, ...], class_pixels: list[int], recall: list[float | None] | None,
                   ignore_label: int | None = None) -> list[str]:
    """One line per class the labeller cannot be trusted with: its problem(s) and the remedy. The ignore
    label, when it is a class id (e.g. 0 = unlabelled), is no class to learn."""
    total = max(sum(class_pixels), 1)
    lines = []
    for k, name in enumerate(names):
        if k == ignore_label:
            continue
        count, share = class_pixels[k], class_pixels[k] / total
        problems = []
        if count == 0:
            problems.append("has no labelled pixels (none, or all dropped as specks under 20 px per 256^2)")
        elif count < MIN_CLASS_PIXELS or share < MIN_CLASS_SHARE:
            problems.append(f"has only {count} labelled pixels ({100 * share:.3g} % of {total}; "
                            f"want >= {MIN_CLASS_PIXELS} and >= {100 * MIN_CLASS_SHARE:g} %)")
        r = recall[k] if recall else None
        if r is not None and r < MIN_TRAINING_RECALL:
            problems.append(("is never predicted" if r == 0 else "is rarely predicted")
                            + f" on its own training pixels (recall {100 * r:.1f} % < {100 * MIN_TRAINING_RECALL:g} %)")
        if problems:
            lines.append(f"class {name!r} " + " and ".join(problems) + f": the labeller will miss it; {REMEDY}")
    return lines


def class_summary(names: tuple[str, ...], class_pixels: list[int], recall: list[float | None] | None,
                  ignore_label: int | None = None) -> list[str]:
    """One console line per class (the ignore label left out): labelled pixels, share and training recall."""
    total = max(sum(class_pixels), 1)
    lines = []
    for k, name in enumerate(names):
        if k == ignore_label:
            continue
        r = recall[k] if recall else None
        shown = "-" if r is None else f"{100 * r:.1f} %"
        lines.append(f"  {name:>16}: {class_pixels[k]:>9} labelled pixels ({100 * class_pixels[k] / total:6.2f} %), "
                     f"recall on them {shown}")
    return lines
