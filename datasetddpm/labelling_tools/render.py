"""Pictures of what the annotator sees: a Label Studio task's pre-annotation (its brush RLE, decoded)
drawn over its image, and a labelled folder's masks over theirs (docs/labelling_tools.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..data.images import palette_for, read_image
from .label_studio import CONFIG_FILE, TASKS_FILE, classes_from_config
from .rle import decode_mask

UNPAINTED = 255


def task_mask(task: dict, classes: list[str], shape: tuple[int, int]) -> np.ndarray:
    """Class ids of a task's first prediction (UNPAINTED where no brush result paints)."""
    mask = np.full(shape, UNPAINTED, dtype=np.int64)
    for result in task["predictions"][0]["result"]:
        mask[decode_mask(result["value"]["rle"], *shape)] = classes.index(result["value"]["brushlabels"][0])
    return mask


def overlay(image: np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.55) -> np.ndarray:
    """The mask's class colours blended over the image; unpainted pixels show the image alone."""
    colours = np.array(palette_for(num_classes) + [(0, 0, 0)] * (256 - num_classes), dtype=np.float32)
    painted = (mask != UNPAINTED)[..., None]
    blended = (1 - alpha) * image + alpha * colours[np.minimum(mask, 255)]
    return np.where(painted, blended, image).round().astype(np.uint8)


def preview_tasks(folder: str | Path, scale: int = 4, limit: int = 4) -> Image.Image:
    """Rows of (image, pre-annotation over it) for the first `limit` tasks of `folder`'s Label Studio import,
    each labelled with its file and prediction score, enlarged `scale` times (nearest neighbour)."""
    folder = Path(folder)
    classes = classes_from_config(folder / CONFIG_FILE)
    tasks = json.loads((folder / TASKS_FILE).read_text())[:limit]
    rows = []
    for task in tasks:
        image = read_image(folder / task["data"]["datasetddpm_file"])
        mask = task_mask(task, classes, image.shape[:2])
        rows.append(np.concatenate([image, overlay(image, mask, len(classes))], 1))
    grid = Image.fromarray(np.concatenate(rows, 0))
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    canvas = Image.new("RGB", (grid.width + 150, grid.height), "white")
    canvas.paste(grid, (0, 0))
    draw, step = ImageDraw.Draw(canvas), grid.height // len(rows)
    for n, task in enumerate(tasks):
        score = task["predictions"][0].get("score")
        draw.text((grid.width + 6, n * step + 6), task["data"]["datasetddpm_file"], fill="black")
        if score is not None:
            draw.text((grid.width + 6, n * step + 20), f"score {score:.3f}", fill="black")
    return canvas


def preview_labelled(folder: str | Path, num_classes: int, ignore_label: int = 255, scale: int = 4) -> Image.Image:
    """Rows of (image, its mask over it) of a labelled folder (as `read_labelled` reads it), enlarged."""
    from ..data.folders import read_labelled
    labelled = read_labelled(folder, num_classes, ignore_label)
    masks = np.where(labelled.masks == ignore_label, UNPAINTED, labelled.masks)
    rows = [np.concatenate([im, overlay(im, m, num_classes)], 1) for im, m in zip(labelled.images, masks)]
    grid = Image.fromarray(np.concatenate(rows, 0))
    return grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
