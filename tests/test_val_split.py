"""train-deeplab --val-split K: K of the real images held out of training, the epoch chosen on them alone;
the default (0) keeps its resume key and files."""

import hashlib
import json

import numpy as np
import pytest
import torch

from conftest import finished_run as make_finished_run
from conftest import one_line_error, run, tree_state
from datasetddpm.data.folders import read_labelled, resolve_split
from datasetddpm.segmenters import train_deeplab as td
from datasetddpm.segmenters.metrics import confusion_matrix, mean_iou
from datasetddpm.segmenters.model import load_segmenter, predict


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tiny_ensemble, tmp_path_factory):
    return make_finished_run(tmp_path_factory.mktemp("run"), tiny_model_dir, tiny_ensemble, n=16, batch=8)


def _train(run_dir, data, out, *extra):
    return run("train-deeplab", "--run", run_dir, "--val", data, "--out", out, "--epochs", 2, "--batch-size", 4,
               "--loader-workers", 0, "--threads", 1, "--quiet", *extra)


def _digest(image) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def test_held_out_images_are_never_trained_on_and_choose_the_epoch(finished, tiny_dataset, tmp_path, monkeypatch):
    trained, validated = [], []
    real_getitem, real_validate = td.AugmentedPairs.__getitem__, td.validate

    def spy_getitem(self, i):  # the pair as the loader reads it, before augmentation
        trained.append(_digest(self.pairs[i][0]))
        return real_getitem(self, i)

    def spy_validate(model, images, masks, *args):
        validated.append(sorted(_digest(im) for im in images))
        return real_validate(model, images, masks, *args)
    monkeypatch.setattr(td.AugmentedPairs, "__getitem__", spy_getitem)
    monkeypatch.setattr(td, "validate", spy_validate)
    out = tmp_path / "split"
    r = _train(finished, tiny_dataset, out, "--real", tiny_dataset, "--real-fraction", 0.5, "--val-split", 2)
    assert r.exit_code == 0, r.output
    assert "held-out real images, never trained on" in r.output

    real = read_labelled(resolve_split(tiny_dataset, "train"), 7, 255)
    held = td.held_out_indices(len(real), 2, 0)
    names = [real.paths[i].name for i in held]
    config = json.loads((out / "train_config.json").read_text())
    assert config["val_held_out"] == names and config["config"]["val_split"] == 2
    held_digests = {_digest(real.images[i]) for i in held}
    kept_digests = {_digest(real.images[i]) for i in range(len(real)) if i not in held}
    assert trained and not held_digests & set(trained)  # never in a training batch
    assert kept_digests & set(trained)  # the other real images are (the spy sees real images at all)
    assert validated == [sorted(held_digests)] * 2  # every epoch chosen on the held-out images alone

    # The chosen epoch's score is the saved model's mIoU on the held-out images, recomputed here.
    best = json.loads((out / "best" / "config.json").read_text())["training"]
    model = load_segmenter(out / "best").eval()
    pred = predict(model, torch.from_numpy(real.images[held]).permute(0, 3, 1, 2)).numpy()
    recomputed = mean_iou(confusion_matrix(pred, real.masks[held], 7, 255), 255)
    assert best["val_miou"] == pytest.approx(recomputed, abs=1e-9)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert best["val_miou"] == max(e["val_miou"] for e in log) == log[best["epoch"]]["val_miou"]

    # the same command resumes (a finished run: nothing retrained); another split is another run
    assert _train(finished, tiny_dataset, out, "--real", tiny_dataset, "--real-fraction", 0.5,
                  "--val-split", 2).exit_code == 0
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 2
    one_line_error(_train(finished, tiny_dataset, out, "--real", tiny_dataset, "--real-fraction", 0.5,
                          "--val-split", 1), "different config")


def test_the_held_out_draw_is_fixed_by_the_seed():
    assert td.held_out_indices(20, 5, 0) == td.held_out_indices(20, 5, 0)
    assert td.held_out_indices(20, 5, 0) != td.held_out_indices(20, 5, 1)
    picks = td.held_out_indices(20, 5, 3)
    assert picks == sorted(picks) and len(set(picks)) == 5 and all(0 <= i < 20 for i in picks)


# Resume keys the code wrote before --val-split existed (computed with that version for data key "k"):
# default runs must keep them.
KEYS_BEFORE = [({}, 1, False, "cpu", "769bbf1304fefbb2"), ({}, 4, True, "cuda", "59bbb80178b6fa37"),
               ({"real": "/r", "real_fraction": 0.1}, 1, False, "cpu", "aaae4dadc9ff462a"),
               ({"lr_schedule": "cosine", "epochs": 24, "arch": "unet", "input_scale": 2, "real": "/r"}, 1, False,
                "cpu", "b8737d1abb4f9ef2")]


@pytest.mark.parametrize("fields,world,amp,device_type,key", KEYS_BEFORE)
def test_default_runs_keep_their_resume_key(fields, world, amp, device_type, key):
    cfg = td.DeepLabTrainConfig(**fields)
    assert cfg.hash("k", world, amp, device_type) == key
    assert td.DeepLabTrainConfig(**fields, val_split=3).hash("k", world, amp, device_type) != key
    assert "val_split" not in cfg.record() and td.DeepLabTrainConfig(val_split=3).record()["val_split"] == 3


def test_default_run_records_no_split(finished, tiny_dataset, tmp_path, monkeypatch):
    """... and reads the real images once when --real names the --val folder; the pairs are checked once,
    before training (the training process builds no throwaway model for it)."""
    import datasetddpm.workflows.deeplab as workflows  # where train-deeplab reads the real images
    calls = {"read": 0, "check": 0}
    real_read, real_check = workflows.read_labelled, td.check_pairs

    def count(name, fn):
        def counted(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return counted
    monkeypatch.setattr(workflows, "read_labelled", count("read", real_read))
    monkeypatch.setattr(td, "check_pairs", count("check", real_check))
    out = tmp_path / "plain"
    r = _train(finished, tiny_dataset, out, "--real", tiny_dataset, "--real-fraction", 0.5)
    assert r.exit_code == 0, r.output
    assert calls == {"read": 1, "check": 1}
    assert "also trained on (--real): optimistic" in r.output
    config = json.loads((out / "train_config.json").read_text())
    assert "val_held_out" not in config and "val_split" not in config["config"]
    assert "val_split" not in json.loads((out / "best" / "config.json").read_text())["training"]
    assert config["hash"] == td.DeepLabTrainConfig(**{**config["config"]}).hash(config["data"])


@pytest.mark.parametrize("extra,needles", [
    (["--real", "{data}", "--val-split", 4], ["--val-split", "leave none of the 4 real images"]),
    (["--real", "{data}", "--val-split", 9], ["--val-split", "hold out fewer than 4"]),
    (["--val-split", 1], ["--val-split", "give --real the same folder as --val"]),
    (["--real", "{data}", "--val-split", -1], ["--val-split", "must be >= 0"]),
])
def test_bad_splits_are_one_line_and_write_nothing(finished, tiny_dataset, tmp_path, extra, needles):
    extra = [str(tiny_dataset) if a == "{data}" else a for a in extra]
    before = tree_state(tiny_dataset)
    one_line_error(_train(finished, tiny_dataset, tmp_path / "o", *extra), *needles)
    assert not (tmp_path / "o").exists() and tree_state(tiny_dataset) == before
