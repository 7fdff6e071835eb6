import json

import numpy as np
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
    assert json.loads((tmp_path / "probe.json").read_text())["blocks"] == [0, 3, 5]
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


def test_demo_runs_the_whole_pipeline(tiny_model_dir, tmp_path):
    from datasetddpm.demo import run_demo
    from datasetddpm.ensemble.train import EnsembleTrainConfig
    r = run_demo(tmp_path, train=2, test=2, model=str(tiny_model_dir), pairs=8, sampling_steps=2, deeplab_epochs=1,
                 input_scale=1, train_cfg=EnsembleTrainConfig(max_epochs=5), progress=False, log=lambda *_: None)
    d = r["datasetddpm"]
    assert d["pairs"] == {"generated": 9, "kept": 8, "dropped": 1}
    assert set(d["compare"]) == {"direct DDPM", "DeepLabV3 (synthetic)"}
    assert "train DeepLabV3 (1 epochs, input x1)" in r["timings_seconds"]
    assert (tmp_path / "compare" / "compare.md").is_file()
