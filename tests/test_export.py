"""`datasetddpm export`: each format loads back with its library (datasets, webdataset, mmsegmentation's
dataset class) and yields exactly the run's kept pairs, byte for byte, with the class
names; bad inputs are one line, exit 2, and leave every file as it was."""

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
    from datasetddpm import export
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
