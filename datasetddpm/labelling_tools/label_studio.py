"""Label Studio: the labelling config and tasks with pre-annotations (`annotate`, `suggest`), and the
annotations of its JSON export read back as class-id masks (`import-annotations`).

A task's `data.image` is a local-files URL (`/data/local-files/?d=<folder name>/<file>`, served when
Label Studio runs with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and the folder's parent as
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT); `data.datasetddpm_file` names the image, so that an export
finds its images again whatever URL the task ended up with. A pre-annotation is one prediction per
task: one `brushlabels` result per class present in the mask (brush RLE), and the image's uncertainty
as the prediction's score, so sorting the tasks by score puts the most uncertain first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError
from .rle import RLEError, decode_mask, encode_mask

CONFIG_FILE = "label_studio_config.xml"
TASKS_FILE = "label_studio_tasks.json"
BRUSH, POLYGON, IMAGE = "label", "polygon", "image"  # the config's control and object tag names


def hex_colour(rgb) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def labelling_config(classes: list[str], palette) -> str:
    """Brush and polygon tools over one image, one Label per class in id order (the ids the import uses)."""
    labels = "".join(f'    <Label value="{_xml(name)}" background="{hex_colour(rgb)}"/>\n'
                     for name, rgb in zip(classes, palette))
    return (f'<View>\n  <Image name="{IMAGE}" value="$image" zoom="true"/>\n'
            f'  <BrushLabels name="{BRUSH}" toName="{IMAGE}">\n{labels}  </BrushLabels>\n'
            f'  <PolygonLabels name="{POLYGON}" toName="{IMAGE}" strokeWidth="2">\n{labels}  </PolygonLabels>\n'
            '</View>\n')


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def classes_from_config(path: Path) -> list[str]:
    """The class names of a labelling config, in the order of its first BrushLabels/PolygonLabels' Labels."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as e:
        raise InputError(path, f"not a readable Label Studio labelling config ({e})") from None
    for tag in ("BrushLabels", "PolygonLabels"):
        control = root.find(f".//{tag}")
        if control is not None:
            names = [label.get("value") for label in control.findall("Label")]
            if names and all(names):
                return names
    raise InputError(path, "has no BrushLabels or PolygonLabels with Label values")


def brush_results(mask: np.ndarray, classes: list[str], ignore_label: int) -> list[dict]:
    """One brushlabels result per class present in `mask` (class ids), in id order; ignored pixels unpainted."""
    height, width = mask.shape
    results = []
    for k in np.unique(mask).tolist():
        if k == ignore_label or k >= len(classes):
            continue
        results.append({"id": f"c{k}", "type": "brushlabels", "from_name": BRUSH, "to_name": IMAGE,
                        "original_width": width, "original_height": height, "image_rotation": 0,
                        "value": {"format": "rle", "rle": encode_mask(mask == k), "brushlabels": [classes[k]]}})
    return results


def make_tasks(folder_name: str, files: list[str], classes: list[str], *, masks=None, scores=None,
               ignore_label: int = 255, model_version: str = "datasetddpm") -> list[dict]:
    """Label Studio tasks for `files` (images in a folder named `folder_name`); with `masks`, each gets the
    prediction (and `scores`, the prediction score)."""
    tasks = []
    for i, name in enumerate(files):
        task = {"data": {IMAGE: f"/data/local-files/?d={folder_name}/{name}", "datasetddpm_file": name}}
        if masks is not None:
            prediction = {"model_version": model_version, "result": brush_results(masks[i], classes, ignore_label)}
            if scores is not None:
                prediction["score"] = float(scores[i])
            task["predictions"] = [prediction]
        tasks.append(task)
    return tasks


def write_label_studio_import(folder: str | Path, files: list[str], classes: list[str], palette,
                              **task_options) -> None:
    """The config and the tasks beside the images in `folder` (see `make_tasks` for the options)."""
    from ..io import atomic_path
    folder = Path(folder)
    tasks = make_tasks(folder.resolve().name, files, classes, **task_options)
    for name, text in ((CONFIG_FILE, labelling_config(classes, palette)), (TASKS_FILE, json.dumps(tasks) + "\n")):
        with atomic_path(folder / name) as tmp:
            Path(tmp).write_text(text)


# --- reading an export ---------------------------------------------------------------------------------

UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio renames uploaded files to <8 hex>-<name>


def image_name(task: dict) -> str:
    """The image file a task is about: the name we wrote, else the basename of its URL (upload prefix off)."""
    data = task.get("data") or {}
    if data.get("datasetddpm_file"):
        return str(data["datasetddpm_file"])
    url = str(data.get(IMAGE) or next((v for v in data.values() if isinstance(v, str)), ""))
    return UPLOAD_PREFIX.sub("", url.split("?d=")[-1].rsplit("/", 1)[-1])


def final_annotation(task: dict) -> dict | None:
    """The task's last submitted (not cancelled) annotation, as Label Studio lists them; None if none."""
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    return done[-1] if done else None


def _polygon(points, height: int, width: int) -> np.ndarray:
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon([(x * width / 100, y * height / 100) for x, y in points], fill=1)
    return np.asarray(canvas, dtype=bool)


def result_region(result: dict, height: int, width: int) -> tuple[str, np.ndarray] | None:
    """(label name, boolean region) of one result; None for results that are no region (e.g. a choice)."""
    value = result.get("value") or {}
    if result.get("type") == "brushlabels" and value.get("format") == "rle":
        return (value.get("brushlabels") or [""])[0], decode_mask(value["rle"], height, width)
    if result.get("type") == "polygonlabels":
        return (value.get("polygonlabels") or [""])[0], _polygon(value.get("points") or [], height, width)
    return None


def annotation_mask(annotation: dict, size: tuple[int, int], classes: list[str], ignore_label: int,
                    where: str) -> np.ndarray:
    """Class ids (H x W) from one annotation: results paint in the order listed (later over earlier);
    unpainted pixels get the ignore label. Unknown labels, wrong sizes and bad RLE are refused."""
    height, width = size
    mask = np.full((height, width), ignore_label, dtype=np.int64)
    for result in annotation.get("result") or []:
        shape = (result.get("original_height", height), result.get("original_width", width))
        if shape != (height, width):
            raise InputError(where, f"annotated at {shape[1]}x{shape[0]} but its image is {width}x{height}")
        try:
            region = result_region(result, height, width)
        except RLEError as e:
            raise InputError(where, str(e)) from None
        if region is None:
            continue
        name, painted = region
        if name not in classes:
            raise InputError(where, f"label {name!r} is not one of the classes ({', '.join(classes)})")
        mask[painted] = classes.index(name)
    if (mask == ignore_label).all():
        raise InputError(where, "the annotation paints no pixel (an empty mask): label it or remove the task")
    return mask


def read_export(path: Path) -> list[dict]:
    """The tasks of a Label Studio JSON export (a list of tasks with `data` and `annotations`)."""
    try:
        tasks = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"not a readable JSON file ({e})") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and "data" in t for t in tasks):
        raise InputError(path, "not a Label Studio JSON export (a list of tasks with 'data'): export as 'JSON'")
    return tasks
