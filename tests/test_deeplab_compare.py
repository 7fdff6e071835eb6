import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import finished_run as make_finished_run
from datasetddpm.cli.main import get_app
from datasetddpm.io import load_tensors

runner = CliRunner()
app = get_app()


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tiny_ensemble, tmp_path_factory):
    return make_finished_run(tmp_path_factory.mktemp("run"), tiny_model_dir, tiny_ensemble, n=16, batch=8)


def _train(run, data, out, epochs):
    return runner.invoke(app, [str(a) for a in ["train-deeplab", "--run", run, "--val", data, "--out", out,
                                                "--epochs", epochs, "--threads", "1", "--quiet"]])


def test_train_deeplab_resume_equals_uninterrupted_and_compare(finished_run, tiny_dataset, tiny_ensemble, tmp_path):
    r = _train(finished_run, tiny_dataset, tmp_path / "full", 2)
    assert r.exit_code == 0, r.output
    assert _train(finished_run, tiny_dataset, tmp_path / "split", 1).exit_code == 0
    assert _train(finished_run, tiny_dataset, tmp_path / "split", 2).exit_code == 0  # resumes at epoch 1
    a = load_tensors(tmp_path / "full" / "train_state.safetensors")
    b = load_tensors(tmp_path / "split" / "train_state.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [0, 1]

    r = runner.invoke(app, [str(a) for a in ["compare", "--ensemble", tiny_ensemble, "--segmenter",
                                             tmp_path / "full" / "best", "--data", tiny_dataset, "--out",
                                             tmp_path / "cmp", "--quiet"]])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert set(report["methods"]) == {"direct DDPM", "DeepLabV3 (synthetic)"}
    for m in report["methods"].values():
        assert 0 <= m["miou"] <= 1 and m["seconds_per_image"] > 0
    assert (tmp_path / "cmp" / "compare.md").read_text().startswith("| method | mIoU")
    assert (tmp_path / "cmp" / "compare_grid.png").is_file()

    r = runner.invoke(app, [str(a) for a in ["segment", "--segmenter", tmp_path / "full" / "best", "--images",
                                             tiny_dataset / "real" / "test", "--out", tmp_path / "m", "--quiet"]])
    assert r.exit_code == 0, r.output
    with Image.open(sorted((tmp_path / "m").glob("*.png"))[0]) as im:
        assert im.mode == "P" and np.asarray(im).max() < 7


def test_segment_needs_exactly_one_model(tiny_dataset, tmp_path):
    r = runner.invoke(app, ["segment", "--images", str(tiny_dataset / "real" / "test"), "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "--ensemble/--segmenter: give exactly one of them" in r.output


def test_train_deeplab_without_finalize_is_a_clear_error(tmp_path, tiny_dataset):
    r = _train(tmp_path, tiny_dataset, tmp_path / "o", 1)
    assert r.exit_code == 2 and "index.jsonl" in r.output and "finalize" in r.output


def test_train_deeplab_data_parallel_on_two_gloo_workers_with_amp(finished_run, tiny_dataset, tmp_path):
    r = runner.invoke(app, [str(a) for a in ["train-deeplab", "--run", finished_run, "--val", tiny_dataset, "--out",
                                             tmp_path / "ddp", "--epochs", 1, "--workers", 2, "--batch-size", 4,
                                             "--amp", "--threads", 1, "--quiet"]])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "ddp" / "train_config.json").read_text())
    assert meta["world"] == 2 and meta["amp"] is True and meta["global_batch_size"] == 8
    assert (tmp_path / "ddp" / "best" / "model.safetensors").is_file()
    assert len((tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()) == 1  # rank 0 logs once


def test_train_deeplab_gpus_without_gpus(finished_run, tiny_dataset, tmp_path):
    r = runner.invoke(app, [str(a) for a in ["train-deeplab", "--run", finished_run, "--val", tiny_dataset, "--out",
                                             tmp_path / "g2", "--gpus", 2, "--quiet"]])
    assert r.exit_code == 2 and "--gpus: asked for 2 GPU worker(s)" in r.output
