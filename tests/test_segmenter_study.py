"""`datasetddpm study segmenter`: DeepLab settings side by side on one run's pairs."""

import json

import numpy as np

from conftest import assert_study_outputs, finished_run, one_line_error, run, tree_state
from datasetddpm.studies.stats import miou_of


def test_segmenter_study_quick(tiny_model_dir, tiny_ensemble, tiny_dataset, tmp_path):
    pairs = finished_run(tmp_path / "run", tiny_model_dir, tiny_ensemble, n=10, batch=5)
    out = tmp_path / "s"
    r = run("study", "segmenter", "--run", pairs, "--data", tiny_dataset, "--out", out, "--quick", "--quiet",
            "--threads", 1)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "study.json").read_text())
    assert list(report["rows"]) == ["x2", "x1", "x2+real"] and report["pairs"] == 9
    rows = report["rows"]
    assert [rows[k]["input_scale"] for k in rows] == [2, 1, 2] and rows["x2+real"]["real_fraction"] == 0.1
    # The +real setting really trained with the real images: its DeepLab config records them.
    best = json.loads((out / "deeplab-x2+real" / "seed-0" / "best" / "config.json").read_text())
    assert best["training"]["real"].endswith("real/train") and best["training"]["real_fraction"] == 0.1
    assert json.loads((out / "deeplab-x1" / "seed-0" / "best" / "config.json").read_text())["training"]["real"] == ""
    for name, row in rows.items():
        cms = np.load(out / f"deeplab-{name}" / "seed-0" / "test_confusions.npy")
        assert abs(row["miou_mean"] - miou_of(cms)) < 1e-12 and row["train_seconds_mean"] > 0
    d = rows["x1"]["vs_baseline"]["difference"]
    assert abs(d - (rows["x1"]["miou_mean"] - rows["x2"]["miou_mean"])) < 1e-12
    assert "| input x1 | 1 |" in (out / "study.md").read_text()
    assert_study_outputs(out, "segmenter")


def test_segmenter_study_refuses_bad_input_and_writes_nothing(tiny_dataset, tmp_path):
    out = tmp_path / "s"
    one_line_error(run("study", "segmenter", "--run", tmp_path, "--data", tiny_dataset, "--out", out),
                   "--run", "not a finalized run")
    one_line_error(run("study", "segmenter", "--run", tmp_path, "--data", tiny_dataset, "--out", out,
                       "--settings", "x2,x8"), "--settings", "x8", "x2-long")
    assert tree_state(out) == {}


def test_segmenter_settings_give_the_training_they_name():
    from datasetddpm.studies.segmenter import SegmenterStudyConfig
    cfg = SegmenterStudyConfig(epochs=6, real_fraction=0.2)
    assert cfg.training("x2", "R") == {"epochs": 6, "input_scale": 2}
    assert cfg.training("x4", "R") == {"epochs": 6, "input_scale": 4}
    assert cfg.training("x2-long", "R") == {"epochs": 12, "input_scale": 2}
    assert cfg.training("x2+real-long", "R") == {"epochs": 12, "input_scale": 2, "real": "R", "real_fraction": 0.2}
    assert cfg.training("unet+real", "R") == {"epochs": 6, "input_scale": 2, "arch": "unet", "real": "R",
                                              "real_fraction": 0.2}
    for scale in (1, 4):
        assert cfg.training(f"unet+real-x{scale}", "R") == {"epochs": 6, "input_scale": scale, "arch": "unet",
                                                            "real": "R", "real_fraction": 0.2}


def test_settings_help_lists_every_setting():
    from datasetddpm.studies.segmenter import SETTINGS
    r = run("study", "segmenter", "--help")
    text = " ".join(r.output.replace("│", " ").split())
    missing = [name for name in SETTINGS if name not in text]
    assert not missing, f"study segmenter --help does not name {missing}"
