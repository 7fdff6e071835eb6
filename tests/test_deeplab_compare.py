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


def test_train_deeplab_refuses_to_resume_on_pairs_finalized_otherwise(finished_run, tiny_dataset, tmp_path):
    """Re-finalizing with another cap keeps other pairs: the same --out is refused, not resumed on them."""
    from conftest import one_line_error
    import shutil
    from datasetddpm.pipeline.finalize import finalize_run
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    finalize_run(run, max_pairs=10)
    assert _train(run, tiny_dataset, tmp_path / "dl", 1).exit_code == 0
    finalize_run(run, max_pairs=8)
    before = sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "dl").rglob("*"))
    one_line_error(_train(run, tiny_dataset, tmp_path / "dl", 2), "dl", "different config")
    assert sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "dl").rglob("*")) == before
    finalize_run(run, max_pairs=10)  # the same pairs again: it resumes
    assert _train(run, tiny_dataset, tmp_path / "dl", 2).exit_code == 0


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

    # Several segmenters side by side (DatasetDDPM's and DatasetGAN's DeepLab): one row each, same images.
    r = runner.invoke(app, [str(a) for a in ["compare", "--ensemble", tiny_ensemble, "--segmenter",
                                             tmp_path / "full" / "best", "--segmenter",
                                             f"DatasetGAN mode={tmp_path / 'split' / 'best'}", "--data",
                                             tiny_dataset, "--out", tmp_path / "cmp2", "--quiet"]])
    assert r.exit_code == 0, r.output
    two = json.loads((tmp_path / "cmp2" / "compare.json").read_text())
    assert list(two["methods"]) == ["direct DDPM", "DeepLabV3 (synthetic)", "DatasetGAN mode"]
    assert two["methods"]["DatasetGAN mode"]["miou"] == report["methods"]["DeepLabV3 (synthetic)"]["miou"]  # same weights
    assert two["methods"]["direct DDPM"]["miou"] == report["methods"]["direct DDPM"]["miou"]

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


def test_real_images_mixed_into_every_epoch(tmp_path, tiny_model_dir, tiny_ensemble, tiny_dataset):
    from conftest import finished_run, one_line_error, run
    from datasetddpm.data.folders import read_labelled, resolve_split
    from datasetddpm.data.generated import GeneratedPairs, MixedPairs, real_repeat
    root = finished_run(tmp_path / "run", tiny_model_dir, tiny_ensemble, 8, 4)
    pairs = GeneratedPairs(root)
    real = read_labelled(resolve_split(tiny_dataset, "train"), 7, 255)
    repeat = real_repeat(len(pairs), len(real), 0.5)
    mixed = MixedPairs(pairs, real.images, real.masks, repeat)
    assert repeat * len(real) >= len(pairs) and len(mixed) == len(pairs) + repeat * len(real)
    assert (mixed[len(pairs)][0] == real.images[0]).all() and (mixed[len(mixed) - 1][1] == real.masks[-1]).all()
    assert (mixed[0][0] == pairs[0][0]).all()
    r = run("train-deeplab", "--run", root, "--val", tiny_dataset, "--out", tmp_path / "dl", "--epochs", 1,
            "--batch-size", 2, "--no-augment", "--real", tiny_dataset, "--real-fraction", 0.5, "--quiet")
    assert r.exit_code == 0, r.output
    trained = json.loads((tmp_path / "dl" / "best" / "config.json").read_text())["training"]
    assert trained["real_fraction"] == 0.5 and trained["real"].endswith(tiny_dataset.name)
    one_line_error(run("train-deeplab", "--run", root, "--val", tiny_dataset, "--out", tmp_path / "x", "--real",
                       tiny_dataset, "--real-fraction", 1.0), "--real-fraction: must be in (0, 1)")


def test_lr_schedules_decay_as_documented():
    from datasetddpm.segmenters.train_deeplab import DeepLabTrainConfig, lr_at
    const, cos, poly = (DeepLabTrainConfig(lr=1e-3, lr_schedule=s) for s in ("constant", "cosine", "poly"))
    assert [lr_at(const, i, 100) for i in (0, 50, 99)] == [1e-3] * 3
    assert lr_at(cos, 0, 100) == pytest.approx(1e-3) and lr_at(cos, 50, 100) == pytest.approx(5e-4)
    assert lr_at(cos, 100, 100) == pytest.approx(0, abs=1e-12)
    assert lr_at(poly, 0, 100) == pytest.approx(1e-3) and lr_at(poly, 50, 100) == pytest.approx(1e-3 * 0.5 ** 0.9)
    assert all(lr_at(cos, i, 100) > lr_at(cos, i + 1, 100) for i in range(99))


def test_lr_schedule_resume_key_and_final_rate(finished_run, tiny_dataset, tmp_path):
    """A constant run keeps its pre-schedule resume key (epochs may grow); a cosine run's key holds its
    epochs, since the schedule spans them, so a rerun with other epochs is refused, not resumed; the
    optimiser ends at the schedule's rate for its last step."""
    import hashlib
    from dataclasses import asdict
    from conftest import one_line_error
    from datasetddpm.segmenters.train_deeplab import DeepLabTrainConfig, lr_at
    cfg = DeepLabTrainConfig()
    old = {k: v for k, v in asdict(cfg).items() if k not in ("epochs", "loader_workers", "real", "real_fraction",
                                                             "lr_schedule", "sync_bn", "encoder_weights",
                                                             "encoder_weights_sha256", "val_split")}
    old.update(data="k", world=1, amp=False)
    assert cfg.hash("k") == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    assert DeepLabTrainConfig(epochs=3).hash("k") == cfg.hash("k")
    cos = DeepLabTrainConfig(lr_schedule="cosine")
    assert cos.hash("k") != cfg.hash("k") and DeepLabTrainConfig(lr_schedule="cosine", epochs=3).hash("k") != cos.hash("k")

    args = ["train-deeplab", "--run", finished_run, "--val", tiny_dataset, "--out", tmp_path / "cos", "--threads", "1",
            "--quiet", "--lr-schedule", "cosine", "--batch-size", "4"]
    r = runner.invoke(app, [str(a) for a in args + ["--epochs", "2"]])
    assert r.exit_code == 0, r.output
    state = load_tensors(tmp_path / "cos" / "train_state.safetensors")
    from datasetddpm.io import tensor_json
    kept = json.loads((finished_run / "dataset_card.json").read_text())["counts"]["kept"]
    steps = 2 * (kept // 4)
    expected = lr_at(DeepLabTrainConfig(lr_schedule="cosine", epochs=2), steps - 1, steps)
    assert 0 < expected < 1e-4  # the last step's rate, near the end of the decay
    assert tensor_json(state["opt.meta"])["param_groups"][0]["lr"] == pytest.approx(expected)
    one_line_error(runner.invoke(app, [str(a) for a in args + ["--epochs", "3"]]), "cos", "different config")
    one_line_error(runner.invoke(app, [str(a) for a in args[:-4] + ["--lr-schedule", "linear"]]), "--lr-schedule",
                   "unknown schedule")


def test_compare_names_an_unnamed_segmenter_by_its_architecture(tmp_path):
    from datasetddpm.compare import segmenter_name
    from datasetddpm.segmenters.model import SegmenterConfig, create_segmenter, save_segmenter
    for arch, name in (("unet", "U-Net"), ("deeplabv3", "DeepLabV3")):
        save_segmenter(tmp_path / arch, create_segmenter(SegmenterConfig(num_classes=3, arch=arch)), {})
        assert segmenter_name(tmp_path / arch) == f"{name} (synthetic)"
        assert segmenter_name(tmp_path / arch, "run-b") == f"{name} (run-b)"
    assert segmenter_name(tmp_path / "missing") == "segmenter (synthetic)"  # loading it then says what is wrong
