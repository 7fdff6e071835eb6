"""The annotation loop: `annotate`/`suggest` write Label Studio (and CVAT) imports with the ensemble's masks
as pre-annotations; `import-annotations` reads the tools' exports back into a labelled folder that
`train-ensemble` accepts. Brush RLE is exact both ways and agrees with Label Studio's own converter."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import one_line_error, run, tree_state
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from datasetddpm.labelling_tools.rle import decode_mask, decode_values, encode_mask, encode_values

CLASSES = list("abcdefg")  # the tiny ensemble's class names
LABEL_STUDIO_PY = Path(sys.prefix) / "labelstudio" / "bin" / "python"  # `make install` makes this venv


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_brush_rle_round_trips_exactly(mask):
    assert np.array_equal(decode_mask(encode_mask(mask), *mask.shape), mask)


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.integers(0, 300)))
def test_rle_values_round_trip_exactly(values):
    assert np.array_equal(decode_values(encode_values(values)), values)


def test_a_long_run_is_split_and_the_header_is_label_studios():
    values = np.zeros(200_000, np.uint8)  # longer than one 16-bit run field
    data = encode_values(values)
    assert np.array_equal(decode_values(data), values)
    assert int.from_bytes(bytes(data[:4]), "big") == 200_000 and data[4] >> 3 == 7  # count, then word size - 1


CONVERTER = """
import json, sys
import numpy as np
from label_studio_sdk.converter.brush import decode_rle, mask2rle
job = json.loads(sys.stdin.read())
decoded = [decode_rle(r).tolist() for r in job["ours"]]
theirs = [mask2rle(np.array(m, dtype=np.uint8)) for m in job["masks"]]
print(json.dumps({"decoded": decoded, "theirs": [list(map(int, t)) for t in theirs]}))
"""


def label_studio_converter(ours: list, masks: list) -> dict:
    """Label Studio's converter (label-studio-sdk, in its own venv: its pins are not ours) on our RLEs and masks."""
    assert LABEL_STUDIO_PY.is_file(), f"{LABEL_STUDIO_PY} is missing: run `make install`"
    done = subprocess.run([str(LABEL_STUDIO_PY), "-c", CONVERTER], input=json.dumps({"ours": ours, "masks": masks}),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_rle_agrees_with_label_studios_converter():
    rng = np.random.default_rng(0)
    masks = [rng.random((23, 31)) > 0.5, np.ones((8, 8), bool), np.zeros((5, 7), bool),
             np.pad(np.ones((20, 30), bool), 10), rng.random((64, 64)) > 0.97]
    got = label_studio_converter([encode_mask(m) for m in masks], [(m * 255).astype(int).tolist() for m in masks])
    for mask, decoded, theirs in zip(masks, got["decoded"], got["theirs"]):
        assert np.array_equal(np.array(decoded).reshape(*mask.shape, 4)[..., 3] > 0, mask)  # their decoder, our RLE
        assert np.array_equal(decode_mask(theirs, *mask.shape), mask)  # our decoder, their RLE (literal chunks too)
    # Grey levels and literal chunks: their encoder's output decodes to the same values with ours.
    values = rng.integers(0, 256, (9, 11)).astype(np.uint8)
    theirs = label_studio_converter([], [values.tolist()])["theirs"][0]
    assert np.array_equal(decode_values(theirs), np.repeat(values.ravel(), 4))


# --- pre-annotations --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def suggested(tiny_ensemble, tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("suggest") / "to_label"
    result = run("suggest", "--images", tiny_dataset / "real" / "test", "--ensemble", tiny_ensemble, "--k", 3,
                 "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "label_studio_tasks.json" in result.output
    return out


def ensemble_masks(tiny_ensemble, folder: Path, files: list[str]):
    from datasetddpm.direct import segment
    from datasetddpm.ensemble.model import load_ensemble
    from datasetddpm.workflows import source_for
    from datasetddpm.data.images import read_image
    ensemble = load_ensemble(tiny_ensemble)
    images = np.stack([read_image(folder / f) for f in files])
    return segment(source_for(ensemble), ensemble, images, progress=False)


def test_suggest_writes_a_label_studio_import_with_the_ensembles_masks(suggested, tiny_ensemble):
    from datasetddpm.labelling_tools.label_studio import classes_from_config
    assert classes_from_config(suggested / "label_studio_config.xml") == CLASSES
    tasks = json.loads((suggested / "label_studio_tasks.json").read_text())
    rows = json.loads((suggested / "suggestions.json").read_text())["suggestions"]
    files = [r["file"] for r in rows]
    assert [t["data"]["datasetddpm_file"] for t in tasks] == files
    assert all(t["data"]["image"] == f"/data/local-files/?d={suggested.name}/{f}" for t, f in zip(tasks, files))
    expected = ensemble_masks(tiny_ensemble, suggested, files)
    for task, row, labels in zip(tasks, rows, expected.labels):
        prediction = task["predictions"][0]
        assert prediction["score"] == pytest.approx(row["uncertainty"], abs=1e-6)
        rebuilt = np.full(labels.shape, 255)
        for result in prediction["result"]:
            assert result["type"] == "brushlabels" and result["from_name"] == "label"
            assert (result["original_height"], result["original_width"]) == labels.shape
            painted = decode_mask(result["value"]["rle"], *labels.shape)
            rebuilt[painted] = CLASSES.index(result["value"]["brushlabels"][0])
        assert np.array_equal(rebuilt, labels)
    assert zipfile.ZipFile(suggested / "cvat_preannotations.zip").namelist()[0] == "ImageSets/Segmentation/default.txt"


def test_annotate_with_an_ensemble_pre_annotates_its_samples(tiny_model_dir, tiny_ensemble, tmp_path):
    out = tmp_path / "ann"
    result = run("annotate", "--out", out, "--k", 2, "--sampling-steps", 2, "--ensemble", tiny_ensemble,
                 "--device", "cpu")  # the samples come from the ensemble's own model (the tiny one)
    assert result.exit_code == 0, result.output
    tasks = json.loads((out / "label_studio_tasks.json").read_text())
    assert [t["data"]["datasetddpm_file"] for t in tasks] == ["sample_00000.png", "sample_00001.png"]
    expected = ensemble_masks(tiny_ensemble, out, ["sample_00000.png", "sample_00001.png"])
    assert [t["predictions"][0]["score"] for t in tasks] == pytest.approx(expected.image_uncertainty.tolist(), abs=1e-6)


def test_annotate_on_the_embedded_domain_writes_tasks_with_its_classes(tmp_path):
    out = tmp_path / "ann"
    result = run("annotate", "--out", out, "--k", 1, "--sampling-steps", 2, "--oracle-annotate", "--device", "cpu")
    assert result.exit_code == 0, result.output
    from datasetddpm.data.procedural import CLASS_NAMES
    from datasetddpm.labelling_tools.label_studio import classes_from_config
    assert classes_from_config(out / "label_studio_config.xml") == list(CLASS_NAMES)
    (task,) = json.loads((out / "label_studio_tasks.json").read_text())
    oracle = np.load(out / "sample_00000.npy")
    rebuilt = np.full(oracle.shape, 255)
    for r in task["predictions"][0]["result"]:
        rebuilt[decode_mask(r["value"]["rle"], *oracle.shape)] = CLASS_NAMES.index(r["value"]["brushlabels"][0])
    assert np.array_equal(rebuilt, oracle)


# --- import-annotations -----------------------------------------------------------------------------------

def as_label_studio_export(tasks: list[dict]) -> list[dict]:
    """What Label Studio exports after an annotator accepts every prediction (ids as the server gives them)."""
    return [{"id": i + 1, "data": t["data"], "annotations": [{"id": 100 + i, "was_cancelled": False,
                                                             "result": t["predictions"][0]["result"]}],
             "predictions": t["predictions"]} for i, t in enumerate(tasks)]


@pytest.fixture()
def exported_tasks(suggested, tmp_path):
    """A copy of the suggested folder with a Label Studio export of the accepted predictions in it."""
    folder = tmp_path / "to_label"
    shutil.copytree(suggested, folder)
    tasks = json.loads((folder / "label_studio_tasks.json").read_text())
    (folder / "export.json").write_text(json.dumps(as_label_studio_export(tasks)))
    return folder


def imported_masks(out: Path) -> dict[str, np.ndarray]:
    return {p.name[:-len("_mask.png")]: np.asarray(Image.open(p)) for p in sorted(out.glob("*_mask.png"))}


def test_import_a_label_studio_export_gives_a_folder_train_ensemble_accepts(exported_tasks, tiny_ensemble, tmp_path):
    out = tmp_path / "labelled"
    result = run("import-annotations", exported_tasks / "export.json", "--out", out)
    assert result.exit_code == 0, result.output
    files = [t["data"]["datasetddpm_file"] for t in json.loads((exported_tasks / "export.json").read_text())]
    expected = ensemble_masks(tiny_ensemble, exported_tasks, files).labels
    got = imported_masks(out)
    assert sorted(got) == sorted(Path(f).stem for f in files)
    for f, labels in zip(files, expected):
        assert np.array_equal(got[Path(f).stem], labels)
        assert (out / f).read_bytes() == (exported_tasks / f).read_bytes()
    trained = run("train-ensemble", "--data", out, "--out", tmp_path / "ens", "--colour", "--num-classes", 7,
                  "--class-names", ",".join(CLASSES), "--members", 1, "--quiet")
    assert trained.exit_code == 0, trained.output


def test_import_polygons_and_uploaded_file_names(exported_tasks, tmp_path):
    """A polygon annotation (percent coordinates) on a task whose image was uploaded (Label Studio renames it
    `<8 hex>-<name>`); pixels no region covers are unlabelled (the ignore label)."""
    export = json.loads((exported_tasks / "export.json").read_text())[:1]
    name = export[0]["data"].pop("datasetddpm_file")
    export[0]["data"]["image"] = f"/data/upload/1/0badcafe-{name}"
    export[0]["annotations"] = [{"result": [{"type": "polygonlabels", "from_name": "polygon", "to_name": "image",
                                             "original_width": 32, "original_height": 32,
                                             "value": {"points": [[25, 25], [75, 25], [75, 75], [25, 75]],
                                                       "polygonlabels": ["c"]}}]}]
    (exported_tasks / "export.json").write_text(json.dumps(export))
    out = tmp_path / "labelled"
    assert run("import-annotations", exported_tasks / "export.json", "--out", out).exit_code == 0
    mask = imported_masks(out)[Path(name).stem]
    expected = np.full((32, 32), 255)
    expected[8:25, 8:25] = 2  # PIL fills the polygon's closed outline: pixels 8..24 for 8.0..24.0
    assert np.array_equal(mask, expected)


def test_cvat_preannotations_import_back_exactly(suggested, tiny_ensemble, tmp_path):
    out = tmp_path / "from_cvat"
    result = run("import-annotations", suggested / "cvat_preannotations.zip", "--out", out)
    assert result.exit_code == 0, result.output
    files = [r["file"] for r in json.loads((suggested / "suggestions.json").read_text())["suggestions"]]
    expected = ensemble_masks(tiny_ensemble, suggested, files).labels
    got = imported_masks(out)
    assert all(np.array_equal(got[Path(f).stem], m) for f, m in zip(files, expected)) and len(got) == len(files)


def _edit_first_result(folder: Path, change) -> None:
    export = json.loads((folder / "export.json").read_text())
    change(export[0]["annotations"][0]["result"], export)
    (folder / "export.json").write_text(json.dumps(export))


def _unknown_label(results, export):
    results[0]["value"]["brushlabels"] = ["zebra"]


def _truncated_rle(results, export):
    results[0]["value"]["rle"] = results[0]["value"]["rle"][:5]


def _empty(results, export):
    results.clear()


def _missing_image(results, export):
    export[0]["data"]["datasetddpm_file"] = "gone.png"


def _wrong_size(results, export):
    for r in results:
        r["original_width"] = 64


def _nothing_annotated(results, export):
    for task in export:
        task["annotations"] = [{"was_cancelled": True, "result": []}]


def _not_an_export(folder: Path) -> None:
    (folder / "export.json").write_text(json.dumps({"tasks": []}))


def _no_config(folder: Path) -> None:
    (folder / "label_studio_config.xml").unlink()


def _out_not_empty(folder: Path) -> None:
    (folder.parent / "labelled").mkdir()
    (folder.parent / "labelled" / "mine.txt").write_text("the user's")


def _bad_cvat_colour(folder: Path) -> None:
    with zipfile.ZipFile(folder / "cvat_preannotations.zip") as z:
        files = {n: z.read(n) for n in z.namelist()}
    files["labelmap.txt"] = b"# label:color_rgb:parts:actions\na:0,0,0::\n"
    with zipfile.ZipFile(folder / "cvat_preannotations.zip", "w") as z:
        for n, data in files.items():
            z.writestr(n, data)


BAD = {  # damage to the folder, the export file's name in it, extra arguments, what the one line must say
    "unknown label": (lambda f: _edit_first_result(f, _unknown_label), "export.json", [],
                      ["task 1", "label 'zebra' is not one of the classes (a, b, c, d, e, f, g)"]),
    "bad rle": (lambda f: _edit_first_result(f, _truncated_rle), "export.json", [], ["task 1", "truncated"]),
    "empty mask": (lambda f: _edit_first_result(f, _empty), "export.json", [], ["task 1", "an empty mask"]),
    "missing image": (lambda f: _edit_first_result(f, _missing_image), "export.json", [],
                      ["task 1", "image 'gone.png' not found", "--images"]),
    "wrong size": (lambda f: _edit_first_result(f, _wrong_size), "export.json", [], ["annotated at 64x32", "32x32"]),
    "nothing annotated": (lambda f: _edit_first_result(f, _nothing_annotated), "export.json", [],
                          ["no task has a submitted annotation"]),
    "not an export": (_not_an_export, "export.json", [], ["export.json", "not a Label Studio JSON export"]),
    "no classes": (_no_config, "export.json", [], ["--classes", "label_studio_config.xml is missing"]),
    "classes that do not fit": (None, "export.json", ["--classes", "a,b"],
                                ["label 'c' is not one of the classes (a, b)"]),
    "out not empty": (_out_not_empty, "export.json", [], ["--out", "exists and is not empty"]),
    "missing export": (None, "nope.json", [], ["nope.json: not found"]),
    "cvat colour not in the labelmap": (_bad_cvat_colour, "cvat_preannotations.zip", [], ["is not in labelmap.txt"]),
    "ignore label out of range": (None, "export.json", ["--ignore-label", "300"], ["--ignore-label", "[0, 255]"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_imports_are_one_line_and_write_nothing(exported_tasks, tmp_path, case):
    damage, name, extra, needles = BAD[case]
    if damage:
        damage(exported_tasks)
    before = tree_state(tmp_path)
    one_line_error(run("import-annotations", exported_tasks / name, "--out", tmp_path / "labelled", *extra), *needles)
    assert tree_state(tmp_path) == before


# --- the round trip through a real Label Studio server ------------------------------------------------------

def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def label_studio_server(tmp_path):
    """`label-studio start` on 127.0.0.1 (its own venv, data in tmp_path), with a user and an API token;
    stopped (its process group) at the end."""
    import os
    import signal
    import time
    import urllib.request
    binary = LABEL_STUDIO_PY.parent / "label-studio"
    assert binary.is_file(), f"{binary} is missing: run `make install`"
    port, token = free_port(), "datasetddpm-test-token"
    env = {k: v for k, v in os.environ.items() if k != "HOST"}  # HOST would override the address it serves
    env.update(LABEL_STUDIO_BASE_DATA_DIR=str(tmp_path / "label-studio-data"))
    server = subprocess.Popen([str(binary), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port",
                               str(port), "--username", "annotator@example.com", "--password", "not-secret-123",
                               "--user-token", token, "--enable-legacy-api-token"],
                              env=env, stdout=open(tmp_path / "label-studio.log", "wb"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # about 30 s on an idle machine; minutes on a busy one
            try:
                if b"UP" in urllib.request.urlopen(f"{url}/health", timeout=2).read():
                    break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "label-studio.log").read_text()[-3000:]
            time.sleep(1)
        else:
            pytest.fail("Label Studio did not answer /health in 4 minutes")
        yield url, token
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


@pytest.mark.slow
def test_round_trip_through_a_real_label_studio_server(suggested, tiny_ensemble, label_studio_server, tmp_path):
    """Project from our config, our tasks imported with their pre-annotations, the annotator's submissions
    (the predictions accepted; a polygon added on the last task) exported as JSON, imported back: exact."""
    url, token = label_studio_server
    folder = tmp_path / "to_label"
    shutil.copytree(suggested, folder)
    done = subprocess.run([str(LABEL_STUDIO_PY), str(Path(__file__).parent / "label_studio_driver.py"), url, token,
                           str(folder), str(folder / "export.json")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["tasks"] == counts["predictions"] == counts["exported"] == 3
    export = json.loads((folder / "export.json").read_text())
    scores = [t["predictions"][0]["score"] for t in json.loads((folder / "label_studio_tasks.json").read_text())]
    assert counts["scores"] == pytest.approx(scores)  # the server keeps the uncertainty as the prediction score
    out = tmp_path / "labelled"
    result = run("import-annotations", folder / "export.json", "--out", out)
    assert result.exit_code == 0, result.output
    files = [t["data"]["datasetddpm_file"] for t in export]
    expected = ensemble_masks(tiny_ensemble, folder, files).labels.copy()
    expected[-1][8:25, 8:25] = 0  # the polygon (first class) over the last task's prediction
    got = imported_masks(out)
    assert len(got) == 3 and all(np.array_equal(got[Path(f).stem], m) for f, m in zip(files, expected))


def test_the_docs_picture_draws_each_tasks_decoded_pre_annotation(suggested, tiny_ensemble):
    from datasetddpm.data.images import read_image
    from datasetddpm.labelling_tools.render import overlay, preview_tasks
    picture = np.asarray(preview_tasks(suggested, scale=2, limit=2))
    tasks = json.loads((suggested / "label_studio_tasks.json").read_text())[:2]
    files = [t["data"]["datasetddpm_file"] for t in tasks]
    labels = ensemble_masks(tiny_ensemble, suggested, files).labels
    assert picture.shape == (2 * 32 * 2, 2 * 32 * 2 + 150, 3)
    for n, (f, mask) in enumerate(zip(files, labels)):
        image = read_image(suggested / f)
        row = picture[n * 64:(n + 1) * 64, :128:2][::2]  # undo the 2x enlargement
        assert np.array_equal(row[:, :32], image) and np.array_equal(row[:, 32:], overlay(image, mask, len(CLASSES)))


@pytest.mark.parametrize("case", ["missing ensemble", "ensemble of another model"])
def test_annotate_refuses_an_ensemble_it_cannot_use_in_one_line(tiny_ensemble, tmp_path, case):
    ensemble, needles = ((tmp_path / "nope", ["nope/ensemble.json", "not found"]) if case == "missing ensemble"
                         else (tiny_ensemble, ["ensemble.json", "was trained on features of",
                                               "not of --model embedded"]))
    before = tree_state(tmp_path)
    one_line_error(run("annotate", "--out", tmp_path / "ann", "--k", 1, "--sampling-steps", 2, "--ensemble", ensemble,
                       "--model", "embedded", "--device", "cpu"), *needles)
    assert tree_state(tmp_path) == before
