"""Draw docs/labelling_tools/*.png (docs/labelling_tools.md) with the toolkit's own commands:

    .venv/bin/python docs/labelling_tools/make_pictures.py [--work runs/labelling_tools_pictures]

The embedded domain (20 labelled images, 24 unlabelled), an ensemble trained on it, `suggest --k 4`
with its Label Studio import (drawn: preannotations.png; its scores: suggestions.json), then what an
annotator sends back (every pre-annotation accepted, a polygon added on the last image) through
`import-annotations` (drawn: imported.png). A few minutes on a CPU; the work folder is reused."""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
POLYGON = [[30, 30], [70, 30], [70, 70], [30, 70]]  # percent of the image: a square over its centre


def toolkit(*args) -> None:
    subprocess.run([sys.executable, "-m", "datasetddpm", *map(str, args)], check=True)


def annotators_export(folder: Path) -> Path:
    """What Label Studio exports once an annotator accepted each pre-annotation (and drew one polygon)."""
    tasks = json.loads((folder / "label_studio_tasks.json").read_text())
    export = []
    for n, task in enumerate(tasks):
        result = list(task["predictions"][0]["result"])
        if n == len(tasks) - 1:
            size = {k: result[0][k] for k in ("original_width", "original_height")}
            result.append({"type": "polygonlabels", "from_name": "polygon", "to_name": "image", **size,
                           "value": {"points": POLYGON, "closed": True, "polygonlabels": ["eye"]}})
        export.append({"id": n + 1, "data": task["data"], "annotations": [{"id": n + 1, "result": result}]})
    (folder / "export.json").write_text(json.dumps(export))
    return folder / "export.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/labelling_tools_pictures"))
    work = parser.parse_args().work
    if not (work / "ens" / "ensemble.json").is_file():
        shutil.rmtree(work, ignore_errors=True)
        toolkit("make-dataset", "--out", work / "data", "--train", 20, "--test", 4, "--unlabelled", 24)
        toolkit("train-ensemble", "--data", work / "data", "--out", work / "ens", "--quiet")
    for folder in ("to_label", "labelled"):
        shutil.rmtree(work / folder, ignore_errors=True)
    toolkit("suggest", "--images", work / "data" / "unlabelled", "--ensemble", work / "ens", "--k", 4,
            "--out", work / "to_label", "--quiet")
    from datasetddpm.data.procedural import CLASS_NAMES
    from datasetddpm.labelling_tools.render import preview_labelled, preview_tasks
    preview_tasks(work / "to_label").save(HERE / "preannotations.png", optimize=True)
    shutil.copyfile(work / "to_label" / "suggestions.json", HERE / "suggestions.json")
    toolkit("import-annotations", annotators_export(work / "to_label"), "--out", work / "labelled")
    preview_labelled(work / "labelled", len(CLASS_NAMES)).save(HERE / "imported.png", optimize=True)
    print(f"wrote {HERE / 'preannotations.png'}, {HERE / 'imported.png'} and {HERE / 'suggestions.json'}")


if __name__ == "__main__":
    main()
