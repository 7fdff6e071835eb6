"""Run by the Label Studio venv's Python (its SDK's pins are not ours) in the slow round-trip test: what an
annotator does through the API. Usage: label_studio_driver.py URL TOKEN FOLDER EXPORT_FILE

Creates a project with FOLDER's label_studio_config.xml, imports label_studio_tasks.json (with their
predictions), submits for every task an annotation equal to its prediction (the annotator accepts the
model's masks) and, on the last task, a polygon of the first class over the image's centre on top of
it (POLYGON), and writes the project's JSON export to EXPORT_FILE. Prints the project id and counts."""

import json
import sys
from pathlib import Path

from label_studio_sdk import LabelStudio

POLYGON = [[25, 25], [75, 25], [75, 75], [25, 75]]  # percent of the width and height


def first_class(folder: Path) -> str:
    from xml.etree import ElementTree
    root = ElementTree.parse(folder / "label_studio_config.xml").getroot()
    return root.find(".//PolygonLabels/Label").get("value")


def main(url: str, token: str, folder: str, export_file: str) -> None:
    folder = Path(folder)
    client = LabelStudio(base_url=url, api_key=token)
    project = client.projects.create(title="datasetddpm round trip",
                                     label_config=(folder / "label_studio_config.xml").read_text())
    tasks = json.loads((folder / "label_studio_tasks.json").read_text())
    client.projects.import_tasks(id=project.id, request=tasks)
    imported = list(client.tasks.list(project=project.id, fields="all"))
    predicted, scores = 0, []
    for n, task in enumerate(imported):
        predictions = client.predictions.list(task=task.id)
        predicted += len(predictions)
        scores.append(predictions[0].score)
        result = list(predictions[0].result)
        if n == len(imported) - 1:
            first = result[0]
            result.append({"id": "poly", "type": "polygonlabels", "from_name": "polygon", "to_name": "image",
                           "original_width": first["original_width"], "original_height": first["original_height"],
                           "value": {"points": POLYGON, "closed": True, "polygonlabels": [first_class(folder)]}})
        client.annotations.create(id=task.id, result=result, was_cancelled=False)
    data = b"".join(client.projects.exports.download_sync(id=project.id, export_type="JSON"))
    Path(export_file).write_bytes(data)
    print(json.dumps({"project": project.id, "tasks": len(imported), "predictions": predicted, "scores": scores,
                      "exported": len(json.loads(data))}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
