import json

import numpy as np
import pytest
from PIL import Image

from datasetddpm.data.procedural import render_batch
from datasetddpm.probe import run_probe, save_probe


def test_probe_grid_json_and_heatmap(tiny_generator, tmp_path):
    tr_i, tr_m = render_batch(range(3))
    te_i, te_m = render_batch(range(100, 103))
    result = run_probe(tiny_generator, tr_i, tr_m, te_i, te_m, blocks=(0, 3, 5), steps=(50, 500), num_classes=7,
                       max_epochs=5, progress=False)
    grid = np.array(result["miou"])
    assert grid.shape == (2, 3) and ((grid >= 0) & (grid <= 1)).all() and grid.max() > 0
    save_probe(result, tmp_path)
    saved = json.loads((tmp_path / "probe.json").read_text())
    assert saved["blocks"] == [0, 3, 5] and saved["date"] and "embedded_weights" in saved
    with Image.open(tmp_path / "probe.png") as im:
        assert im.size[0] > 100


def test_demo_same_seed_same_miou(tiny_model_dir, tmp_path):
    from datasetddpm.demo import run_demo
    from datasetddpm.ensemble.train import EnsembleTrainConfig
    fast = EnsembleTrainConfig(max_epochs=5)
    a = run_demo(tmp_path / "a", train=2, test=2, model=str(tiny_model_dir), train_cfg=fast, progress=False, log=lambda *_: None)
    b = run_demo(tmp_path / "b", train=2, test=2, model=str(tiny_model_dir), train_cfg=fast, progress=False, log=lambda *_: None)
    for method in ("direct DDPM", "colour RGB-3x3"):
        assert a["direct"][method]["miou_mean"] == b["direct"][method]["miou_mean"]
    assert (tmp_path / "a" / "demo.json").is_file() and (tmp_path / "a" / "ensemble" / "ensemble.json").is_file()


def test_the_demo_ensemble_is_what_train_ensemble_makes(tiny_model_dir, tmp_path):
    """The README compares the demo's direct-mode score with `train-ensemble --seed 0` ensembles on other CPUs."""
    from typer.testing import CliRunner

    from datasetddpm.cli.main import get_app
    from datasetddpm.demo import run_demo
    run_demo(tmp_path / "demo", train=2, test=2, model=str(tiny_model_dir), progress=False, log=lambda *_: None)
    result = CliRunner().invoke(get_app(), ["train-ensemble", "--data", str(tmp_path / "demo" / "data"), "--out",
                                            str(tmp_path / "ens"), "--model", str(tiny_model_dir), "--seed", "0",
                                            "--quiet"])
    assert result.exit_code == 0, result.output
    from datasetddpm.ensemble.model import load_ensemble  # the model is recorded relative to each folder
    assert load_ensemble(tmp_path / "ens").cfg == load_ensemble(tmp_path / "demo" / "ensemble").cfg
    assert ((tmp_path / "ens" / "ensemble.safetensors").read_bytes()
            == (tmp_path / "demo" / "ensemble" / "ensemble.safetensors").read_bytes())


def test_demo_runs_the_whole_pipeline(tiny_model_dir, tmp_path):
    from datasetddpm.demo import run_demo
    from datasetddpm.ensemble.train import EnsembleTrainConfig
    r = run_demo(tmp_path, train=2, test=2, model=str(tiny_model_dir), pairs=8, sampling_steps=2, deeplab_epochs=1,
                 input_scale=1, real_fraction=0.2, train_cfg=EnsembleTrainConfig(max_epochs=5), progress=False,
                 log=lambda *_: None)
    d = r["datasetddpm"]
    assert d["pairs"] == {"generated": 9, "kept": 8, "dropped": 1}
    assert set(d["compare"]) == {"direct DDPM", "U-Net (synthetic)"}  # the default segmenter
    assert "train U-Net (1 epochs, input x1, 20% labelled images)" in r["timings_seconds"]
    assert (tmp_path / "compare" / "compare.md").is_file()
    # The labeller's real labelled images went into DeepLab's epochs at the share asked for.
    training = json.loads((tmp_path / "deeplab" / "best" / "config.json").read_text())["training"]
    assert training["real"] == str((tmp_path / "data").resolve()) and training["real_fraction"] == 0.2
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert [e["epoch"] for e in saved["datasetddpm"]["deeplab"]["epochs_log"]] == [0]  # its training, epoch by epoch
    assert saved["datasetddpm"]["deeplab"]["real_fraction"] == 0.2 and saved["wall_seconds"] >= sum(
        saved["timings_seconds"].values()) - 0.5


def test_demo_trains_the_segmenter_asked_for(tiny_model_dir, tmp_path):
    """--arch deeplabv3 (the paper's): the pairs train DeepLabV3, named as such in the compare report and
    the demo's tables."""
    from datasetddpm.demo import DemoReport, run_demo
    from datasetddpm.ensemble.train import EnsembleTrainConfig
    from datasetddpm.errors import OptionError
    from datasetddpm.reporting.results import demo_compare
    with pytest.raises(OptionError, match="--arch: unknown architecture 'segformer'"):
        run_demo(tmp_path / "bad", train=2, test=2, model=str(tiny_model_dir), pairs=8, arch="segformer",
                 progress=False, log=lambda *_: None)
    assert not (tmp_path / "bad").exists()
    r = run_demo(tmp_path / "u", train=2, test=2, model=str(tiny_model_dir), pairs=8, sampling_steps=2,
                 deeplab_epochs=1, input_scale=1, arch="deeplabv3", train_cfg=EnsembleTrainConfig(max_epochs=5),
                 progress=False, log=lambda *_: None)
    assert set(r["datasetddpm"]["compare"]) == {"direct DDPM", "DeepLabV3 (synthetic)"}
    training = json.loads((tmp_path / "u" / "deeplab" / "best" / "config.json").read_text())["training"]
    assert training["arch"] == "deeplabv3"
    saved = json.loads((tmp_path / "u" / "demo.json").read_text())
    assert saved["datasetddpm"]["deeplab"]["arch"] == "deeplabv3"
    written = DemoReport.from_dict(saved).to_dict()
    assert written == {k: saved[k] for k in written}
    table = demo_compare(saved)
    assert "| DeepLabV3 (8 synthetic pairs) |" in table and "DeepLabV3 minus direct mode" in table


def test_demo_report_writes_the_demo_json_it_reads():
    """`DemoReport.to_dict()` is demo.json, key for key and in order (the README renders docs/demo/demo.json)."""
    from pathlib import Path
    from datasetddpm.demo import DemoReport
    saved = json.loads((Path(__file__).resolve().parents[1] / "docs" / "demo" / "demo.json").read_text())
    report = DemoReport.from_dict(saved)
    written = report.to_dict()
    assert list(written) == [k for k in saved if k in written]
    assert written == {k: saved[k] for k in written}
    assert report["direct"] == saved["direct"] and "datasetddpm" in report
    assert report.direct["direct DDPM"].miou_mean == saved["direct"]["direct DDPM"]["miou_mean"]


def test_demo_tables_come_from_the_report():
    import io
    from pathlib import Path
    from rich.console import Console
    from datasetddpm.reporting.console import print_demo
    from datasetddpm.demo import DemoReport
    saved = json.loads((Path(__file__).resolve().parents[1] / "docs" / "demo" / "demo.json").read_text())
    console = Console(file=io.StringIO(), width=240)
    print_demo(DemoReport.from_dict(saved), "runs/demo", console)
    text = console.file.getvalue()
    assert f"Direct mode: {saved['train_images']} labelled, {saved['test_images']} test images" in text
    segmenter = next(m for m in saved["datasetddpm"]["compare"] if m != "direct DDPM")
    assert segmenter.endswith("(synthetic)") and segmenter in text and "time per stage" in text and "runs/demo/compare/compare.html" in text
