import json

import numpy as np
from typer.testing import CliRunner

from conftest import assert_study_outputs
from datasetddpm.cli.main import get_app
from datasetddpm.hooks import drawing
from datasetddpm.reporting.hooks import FigureWriter
from datasetddpm.studies.samplers import SamplerSetting, SamplerStudyConfig, run_sampler_study
from datasetddpm.studies.stats import miou_of, paired_bootstrap

runner = CliRunner()
app = get_app()


def _confusions(rng, n, k=3, noise=0.0):
    cms = np.zeros((n, k, k), dtype=np.int64)
    for i in range(n):
        cms[i] = np.diag(rng.integers(50, 100, k))
        cms[i, 0, 1] = int(noise * 100)
    return cms


def test_paired_bootstrap_identical_sets_give_zero_and_a_real_shift_is_significant():
    rng = np.random.default_rng(0)
    a = _confusions(rng, 40, noise=0.5)
    same = paired_bootstrap(a, a.copy(), resamples=200)
    assert same["difference"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0 and not same["significant"]
    better = a.copy()
    better[:, 0, 1] = 0  # remove every error of class 0 -> higher IoU of classes 0 and 1
    r = paired_bootstrap(a, better, resamples=200)
    assert r["difference"] == miou_of(better) - miou_of(a) > 0
    assert r["significant"] and r["ci_low"] <= r["difference"] <= r["ci_high"]


def test_sampler_study_end_to_end_and_resume(tiny_model_dir, tiny_ensemble, tiny_dataset, tmp_path):
    cfg = SamplerStudyConfig(settings=(SamplerSetting("ddpm", 6), SamplerSetting("ddim", 3)), model=str(tiny_model_dir),
                             n=12, batch_size=4, shard_size=4, deeplab_epochs=1, input_scale=1, deeplab_seeds=(0, 1),
                             deeplab_batch=4, timing_samples=2, bootstrap=100)
    with drawing(FigureWriter()):  # a library call draws study.png (and its runs' pictures) through a writer
        report = run_sampler_study(tmp_path / "study", tiny_ensemble, tiny_dataset, cfg, progress=False)
    rows = report["rows"]
    assert [rows[n]["unet_evaluations"] for n in ("ddpm-6", "ddim-3")] == [6, 3]
    assert rows["ddim-3"]["unet_evaluation_ratio"] == 2.0
    assert rows["ddpm-6"]["pairs"] == 11  # 12 samples, the most uncertain 10 % (1) dropped
    assert report["test_images"] == 4
    diff = rows["ddim-3"]["deeplab_miou_vs_baseline"]
    assert abs(diff["difference"] - (rows["ddim-3"]["deeplab_miou"] - rows["ddpm-6"]["deeplab_miou"])) < 1e-12
    assert diff["seeds"] == [2, 2]  # DeepLab's training variance is inside the interval
    for name, row in rows.items():  # mean ± std over the two DeepLab seeds, each from its kept confusions
        cms = np.load(tmp_path / "study" / name / "test_confusions.npy")
        per_seed = [miou_of(c) for c in cms]
        assert cms.shape[0] == 2 and row["deeplab_miou_per_seed"] == per_seed
        assert row["deeplab_miou"] == np.mean(per_seed) and row["deeplab_miou_std"] == np.std(per_seed)
    assert "mean ± std over 2 seeds" in (tmp_path / "study" / "study.md").read_text()
    assert_study_outputs(tmp_path / "study", "samplers")
    assert "label_miou_vs_baseline" not in rows["ddpm-6"]
    # Rerun: every stage is skipped and the report is the same.
    again = run_sampler_study(tmp_path / "study", tiny_ensemble, tiny_dataset, cfg, progress=False)
    assert json.dumps(again, sort_keys=True) == json.dumps(report, sort_keys=True)


def test_study_rejects_a_malformed_setting(tiny_dataset, tmp_path):
    r = runner.invoke(app, ["study", "samplers", "--ensemble", str(tmp_path), "--data", str(tiny_dataset),
                            "--settings", "ddim50"])
    assert r.exit_code == 2 and "expected sampler:steps" in r.output


def test_auroc_known_answers():
    from datasetddpm.studies.stats import auroc
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75  # sklearn's documented example
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0 and auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5  # ties count half
    assert np.isnan(auroc([1, 2], [1, 1]))


def test_hierarchical_bootstrap_known_answers():
    from datasetddpm.studies.stats import hierarchical_bootstrap
    rng = np.random.default_rng(0)
    a = rng.integers(0, 50, (3, 20, 4, 4))
    same = hierarchical_bootstrap(a, a.copy(), resamples=200)
    assert same["difference"] == 0.0 and not same["significant"]
    perfect = np.zeros_like(a)
    perfect[:, :, range(4), range(4)] = 10  # every pixel right: mIoU 1
    better = hierarchical_bootstrap(a, perfect, resamples=200)
    assert better["difference"] > 0 and better["significant"] and better["ci_low"] <= better["difference"] <= better["ci_high"]


def test_filter_study_quick(tiny_model_dir, tiny_ensemble, tiny_dataset, tmp_path):
    from conftest import run
    r = run("study", "filter", "--ensemble", tiny_ensemble, "--data", tiny_dataset, "--out", tmp_path / "f",
            "--model", tiny_model_dir, "--quick", "--quiet", "--threads", 1)
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "f" / "study.json").read_text())
    labels = report["labels"]
    assert labels["samples"] == 8 and 0 <= labels["wrong_pixel_share"] <= 1
    assert 0 <= labels["pixel_auroc_wrong_labels"] <= 1
    assert list(report["deeplab"]) == ["0.00", "0.25"]
    assert report["deeplab"]["0.00"]["pairs"] == 8 and report["deeplab"]["0.25"]["pairs"] == 6
    assert len(report["deeplab"]["0.25"]["deeplab_miou_per_seed"]) == 2 and "vs_no_drop" in report["deeplab"]["0.25"]
    assert report["command"] is not None and report["date"] and "| 25 % | 6 |" in (tmp_path / "f" / "study.md").read_text()
    assert_study_outputs(tmp_path / "f", "filter")


def test_labelled_count_study_quick(tiny_model_dir, tiny_dataset, tmp_path):
    from conftest import one_line_error, run
    from datasetddpm.studies.labelled_count import subset
    r = run("study", "labelled-count", "--data", tiny_dataset, "--out", tmp_path / "c", "--model", tiny_model_dir,
            "--quick", "--quiet", "--threads", 1)
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "c" / "study.json").read_text())
    assert list(report["rows"]) == ["2", "4"]
    two = report["rows"]["2"]
    assert [len(x["images"]) for x in two["runs"]] == [2, 2]
    assert abs(two["miou_mean"] - np.mean([x["miou"] for x in two["runs"]])) < 1e-12
    assert two["miou_std"] == np.std([x["miou"] for x in two["runs"]])
    assert_study_outputs(tmp_path / "c", "labelled-count")
    assert list(subset(3, 10, 0)) == list(subset(3, 10, 0)) and list(subset(3, 10, 0)) != list(subset(3, 10, 1))
    one_line_error(run("study", "labelled-count", "--data", tiny_dataset, "--out", tmp_path / "x", "--model",
                       tiny_model_dir, "--counts", "2,99"), "--counts: need counts in [1, 4]")


def test_suggest_study_quick(tiny_model_dir, tiny_dataset, tmp_path):
    from conftest import one_line_error, run
    from datasetddpm.studies.suggest import ARMS, start_set
    out = tmp_path / "s"
    r = run("study", "suggest", "--data", tiny_dataset, "--out", out, "--model", tiny_model_dir, "--quick", "--quiet",
            "--threads", 1)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "study.json").read_text())
    assert list(report["arms"]) == list(ARMS) and report["seeds"] == [0, 1]
    for arm, row in report["arms"].items():
        per_seed = []
        for seed, added in zip(report["seeds"], row["added"]):
            saved = json.loads((out / f"seed-{seed}" / arm / "result.json").read_text())
            assert saved["start"] == start_set(4, 1, seed).tolist() and len(added) == 1
            assert not set(added) & set(saved["start"]) and 0 <= added[0] < 4
            per_seed.append(miou_of(np.load(out / f"seed-{seed}" / arm / "test_confusions.npy")))
            assert abs(saved["miou"] - per_seed[-1]) < 1e-12
        assert abs(row["miou_mean"] - np.mean(per_seed)) < 1e-12 and row["miou_std"] == np.std(per_seed)
        if arm != "random":
            assert abs(row["vs_random"]["difference"]
                       - (row["miou_mean"] - report["arms"]["random"]["miou_mean"])) < 1e-12
    assert "| uncertainty+diversity |" in (out / "study.md").read_text()
    assert_study_outputs(out, "suggest")
    # Rerun: every (seed, arm) is read back, none retrained, and the numbers are the same.
    stamp = (out / "seed-0" / "random" / "result.json").stat().st_mtime_ns
    assert run("study", "suggest", "--data", tiny_dataset, "--out", out, "--model", tiny_model_dir, "--quick",
               "--quiet", "--threads", 1).exit_code == 0
    assert (out / "seed-0" / "random" / "result.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "study.json").read_text())["arms"] == report["arms"]
    one_line_error(run("study", "suggest", "--data", tiny_dataset, "--out", tmp_path / "x", "--model", tiny_model_dir,
                       "--start", 3, "--add", 2), "--start/--add", "start + add <= 4")


def test_main_study_quick(tiny_model_dir, tiny_dataset, tmp_path):
    """Every row of the main study runs; the numbers in study.json are those of the kept confusions."""
    from conftest import one_line_error, run
    from datasetddpm.generators.stylegan2 import save_stylegan2
    from datasetddpm.generators.stylegan2_net import StyleGAN2, StyleGAN2Config
    from datasetddpm.studies.main import ROWS, _slug
    import torch
    torch.manual_seed(0)
    gan = tmp_path / "sg2"
    save_stylegan2(gan, StyleGAN2(StyleGAN2Config(resolution=32, z_dim=8, w_dim=8, mapping_layers=1,
                                                  channel_base=64, channel_max=8)))
    out = tmp_path / "m"
    r = run("study", "main", "--data", tiny_dataset, "--out", out, "--model", tiny_model_dir, "--gan", gan,
            "--quick", "--quiet", "--threads", 1, "--real-fraction", 0.25)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "study.json").read_text())
    assert list(report["rows"]) == list(ROWS) and report["seeds"] == [0]
    for row, stats in report["rows"].items():
        cms = np.load(out / "seed-0" / f"{_slug(row)}.npy")
        assert cms.shape == (4, 7, 7) and abs(stats["miou_mean"] - miou_of(cms)) < 1e-12
        if stats["labeller"] is not None:  # DeepLab row: the gap to its labeller's direct row, point estimate
            labeller = report["rows"][stats["labeller"]]
            assert abs(stats["vs_labeller"]["difference"] - (stats["miou_mean"] - labeller["miou_mean"])) < 1e-12
    # The DeepLab rows trained on the pairs their own labeller kept (4 of 5 samples).
    for row in ("DatasetDDPM", "DatasetDDPM (paper protocol)", "DatasetGAN"):
        card = json.loads((out / "seed-0" / f"run-{_slug(row)}" / "dataset_card.json").read_text())
        assert card["counts"]["kept"] == 4 and card["ensemble"].endswith(
            f"ensemble-{_slug('DatasetGAN' if row == 'DatasetGAN' else ROWS[row][1])}")
    assert "| DatasetGAN | annotated StyleGAN2 samples |" in (out / "study.md").read_text()
    assert_study_outputs(out, "main")
    # --real-fraction: each DeepLab row mixed in the labelled images its own ensemble was trained on.
    for row, mixed in (("DatasetDDPM", tiny_dataset), ("DatasetDDPM (paper protocol)", out / "annotated-ddpm"),
                       ("DatasetGAN", out / "annotated-gan")):
        config = out / "seed-0" / f"deeplab-{_slug(row)}" / "best" / "config.json"
        training = json.loads(config.read_text())["training"]
        assert training["real"] == str(mixed.resolve()) and training["real_fraction"] == 0.25
    assert "mixed into every epoch as 25% of its samples" in (out / "study.md").read_text()
    # The same folder with other settings is refused (its kept scores would pass for theirs); nothing changes.
    before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*"))
    one_line_error(run("study", "main", "--data", tiny_dataset, "--out", out, "--model", tiny_model_dir, "--gan", gan,
                       "--quick", "--quiet"), "--out", "other settings (real_fraction)")
    assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    one_line_error(run("study", "main", "--data", tiny_dataset, "--out", tmp_path / "x", "--model", tiny_model_dir,
                       "--gan", tiny_model_dir, "--quick"), "--gan", "not a StyleGAN2")
    # --rows: a subset from the kept scores (a DeepLab row brings its labeller's direct row), nothing recomputed.
    kept = {p: p.stat().st_mtime_ns for p in (out / "seed-0").glob("*.npy")}
    r = run("study", "main", "--data", tiny_dataset, "--out", out, "--model", tiny_model_dir, "--gan", gan,
            "--quick", "--quiet", "--threads", 1, "--real-fraction", 0.25, "--rows", "datasetddpm")
    assert r.exit_code == 0, r.output
    subset = json.loads((out / "study.json").read_text())
    assert list(subset["rows"]) == ["direct DDPM", "DatasetDDPM"]
    assert subset["rows"]["DatasetDDPM"] == report["rows"]["DatasetDDPM"]
    assert {p: p.stat().st_mtime_ns for p in (out / "seed-0").glob("*.npy")} == kept
    one_line_error(run("study", "main", "--data", tiny_dataset, "--out", out, "--model", tiny_model_dir, "--gan", "",
                       "--quick", "--rows", "datasetgan"), "--rows", "unknown row(s) datasetgan")


def test_main_study_segmenter_choices(tiny_model_dir, tiny_dataset, tmp_path):
    """--arch and --lr-schedule reach the DeepLab rows' training and are named under the table."""
    from conftest import one_line_error, run
    out = tmp_path / "m"
    r = run("study", "main", "--data", tiny_dataset, "--out", out, "--model", tiny_model_dir, "--gan", "", "--quick",
            "--quiet", "--threads", 1, "--rows", "datasetddpm-paper-protocol", "--arch", "unet", "--lr-schedule",
            "cosine", "--real-fraction", 0)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "study.json").read_text())
    assert list(report["rows"]) == ["direct DDPM (paper protocol)", "DatasetDDPM (paper protocol)"]
    assert report["segmenter"] == {"arch": "unet", "epochs": 1, "input_scale": 1, "lr_schedule": "cosine"}
    training = json.loads((out / "seed-0" / "deeplab-datasetddpm-paper-protocol" / "best" / "config.json")
                          .read_text())["training"]
    assert (training["arch"], training["lr_schedule"]) == ("unet", "cosine")
    assert "DeepLab rows: U-Net, 1 epoch at input x1, cosine learning rate." in (out / "study.md").read_text()
    one_line_error(run("study", "main", "--data", tiny_dataset, "--out", tmp_path / "x", "--model", tiny_model_dir,
                       "--gan", "", "--quick", "--arch", "segformer"), "--arch", "unknown architecture")


def test_mining_study_quick(tiny_model_dir, tiny_ensemble, tiny_dataset, tmp_path):
    from conftest import one_line_error, run
    out = tmp_path / "mine"
    r = run("study", "mining", "--ensemble", tiny_ensemble, "--data", tiny_dataset, "--out", out, "--model",
            tiny_model_dir, "--prefer-classes", "f,g", "--quick", "--quiet", "--threads", 1)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "study.json").read_text())
    plain, mined = (json.loads((out / f"run-{a}" / "dataset_card.json").read_text()) for a in ("least-uncertain", "mined"))
    assert mined["prefer_classes"] == ["f", "g"] and "prefer_classes" not in plain
    assert plain["counts"]["kept"] == mined["counts"]["kept"] == 4  # the same number of pairs in every arm
    default = json.loads((out / "run-default-filter" / "dataset_card.json").read_text())
    assert default["counts"] == {"generated": 5, "kept": 4, "dropped": 1}  # the first ceil(4 / 0.9) samples
    assert "prefer_classes" not in default and list(report["arms"]) == ["default filter", "least uncertain", "mined"]
    # Mining keeps at least as many preferred-class pixels as the plain filter, over the same samples.
    share = {a: sum(c["class_balance"][n]["kept_pixel_share"] for n in "fg") for a, c in (("plain", plain), ("mined", mined))}
    assert share["mined"] >= share["plain"]
    for arm, row in report["arms"].items():
        cms = np.load(out / f"deeplab-{arm.replace(' ', '-')}" / "seed-0" / "test_confusions.npy")
        assert abs(row["miou_mean"] - miou_of(cms)) < 1e-12
    arms = report["arms"]
    for arm, versus, key in (("mined", "least uncertain", "vs_least_uncertain"), ("mined", "default filter",
                             "vs_default_filter"), ("least uncertain", "default filter", "vs_default_filter")):
        assert abs(arms[arm][key]["difference"] - (arms[arm]["miou_mean"] - arms[versus]["miou_mean"])) < 1e-12
    text = (out / "study.md").read_text()
    assert "| Δ vs default filter (95 % CI) | Δ vs least uncertain (95 % CI) |" in text
    assert "(default filter: from the first 5)" in text and "mined minus default filter: f " in text
    assert_study_outputs(out, "mining")
    one_line_error(run("study", "mining", "--ensemble", tiny_ensemble, "--data", tiny_dataset, "--out", tmp_path / "x",
                       "--model", tiny_model_dir, "--n", 10, "--pairs", 10), "--pairs", "90 % of --n 10")


def test_real_images_study_quick(tiny_model_dir, tiny_ensemble, tiny_dataset, tmp_path):
    from conftest import one_line_error, run
    from datasetddpm.data.images import write_image
    from datasetddpm.data.procedural import render_batch
    unlabelled = tmp_path / "u"
    for i, image in enumerate(render_batch(range(500, 505), 32)[0]):
        write_image(unlabelled / f"u_{i}.png", image)
    out = tmp_path / "ri"
    args = ("study", "real-images", "--ensemble", tiny_ensemble, "--data", tiny_dataset, "--out", out, "--model",
            tiny_model_dir, "--quiet", "--threads", 1)
    r = run(*args, "--images", unlabelled, "--quick")
    assert r.exit_code == 0, r.output
    report = json.loads((out / "study.json").read_text())
    cards = {a: json.loads((out / f"run-{a.replace(' ', '-')}" / "dataset_card.json").read_text()) for a in report["arms"]}
    assert [c["counts"]["generated"] for c in cards.values()] == [4, 4, 8]  # ceil(3 / 0.9) each; both: the union
    assert [c["counts"]["kept"] for c in cards.values()] == [3, 3, 6]
    assert cards["real unlabelled"]["sampler"] == "real-images" and cards["synthetic"]["sampler"] == "ddim"
    rows = [json.loads(x) for x in (out / "run-both" / "index.jsonl").read_text().splitlines()]
    assert sorted(r["source"].split("_")[0] for r in rows) == ["real"] * 4 + ["synthetic"] * 4
    for arm, row in report["arms"].items():
        cms = np.load(out / f"deeplab-{arm.replace(' ', '-')}" / "seed-0" / "test_confusions.npy")
        assert abs(row["miou_mean"] - miou_of(cms)) < 1e-12
        if arm != "synthetic":
            assert abs(row["vs_synthetic"]["difference"] - (row["miou_mean"] - report["arms"]["synthetic"]["miou_mean"])) < 1e-12
    assert_study_outputs(out, "real-images")
    one_line_error(run(*args, "--images", unlabelled, "--pairs", 9), "--images", "holds 5 images", "needs 10")


def test_features_size_split_and_group_mious_known_answers():
    from datasetddpm.studies.features import class_split, group_mious, size_split
    split = size_split({"a": 0.5, "b": 0.3, "c": 0.1, "d": 0.1})  # median 0.2
    assert split["median_share"] == 0.2 and split["small"] == ["c", "d"] and split["large"] == ["a", "b"]
    assert size_split({"x": 0.6, "y": 0.3, "z": 0.1})["small"] == ["z"]  # the median class itself is large
    masks = np.array([[[0, 0, 0, 0, 0, 0], [1, 1, 1, 2, 255, 255]]])  # ignored pixels are no class's
    split = class_split(masks, ("bg", "body", "eye"), 255)
    assert split["pixel_share"] == {"bg": 0.6, "body": 0.3, "eye": 0.1} and split["small"] == ["eye"]
    cm = np.array([[8, 2, 0], [0, 2, 0], [0, 0, 0]])  # IoU bg 0.8, body 0.5, eye absent from both: 0
    assert group_mious(cm, ("bg", "body", "eye"), split, 255) == {"all": 1.3 / 3, "small": 0.0, "large": 0.65}


def test_independent_noise_features_are_deterministic_per_image_and_differ_from_shared(tiny_generator):
    import torch
    from datasetddpm.data.procedural import render_batch
    from datasetddpm.direct import FeatureSource
    from datasetddpm.generators.base import FeatureSpec
    from datasetddpm.studies.features import IndependentNoiseSource, image_noise_seed
    x = torch.from_numpy(render_batch(range(3), 32)[0]).permute(0, 3, 1, 2).contiguous()
    shared = FeatureSource(tiny_generator, FeatureSpec((1, 4), (10, 100), noise_seed=0))
    independent = IndependentNoiseSource(shared)
    a, b = independent.maps(x), independent.maps(x)
    assert len(a) == 4 and all(torch.equal(u, v) for u, v in zip(a, b))  # deterministic across calls
    assert all(torch.equal(u[1:2], v) for u, v in zip(a, independent.maps(x[1:2])))  # whatever the batch
    assert not any(torch.allclose(u, v) for u, v in zip(a, shared.maps(x)))
    seeds = {image_noise_seed(im, 0) for im in x}
    assert len(seeds) == 3 and image_noise_seed(x[0], 1) != image_noise_seed(x[0], 0)


def test_features_study_quick(tiny_model_dir, tiny_dataset, tmp_path):
    from conftest import one_line_error, run, tree_state
    from datasetddpm.data.folders import read_labelled
    from datasetddpm.segmenters.metrics import mean_iou
    from datasetddpm.studies.features import class_split
    out = tmp_path / "feat"
    args = ("study", "features", "--data", tiny_dataset, "--model", tiny_model_dir, "--quiet", "--threads", 1)
    r = run(*args, "--out", out, "--quick")
    assert r.exit_code == 0, r.output
    report = json.loads((out / "study.json").read_text())
    names = ("background", "body", "head", "leg", "tail", "eye", "beak")
    split = class_split(read_labelled(tiny_dataset / "real" / "train", 7, 255).masks, names, 255)
    assert report["class_split"] == split and len(split["small"]) == 3  # 7 classes: three below the median
    grid = report["grid"]
    assert grid["blocks"] == [1, 4] and grid["steps"] == [10, 100] and grid["seeds"] == [0]
    for si, t in enumerate(grid["steps"]):
        for bi, b in enumerate(grid["blocks"]):
            cell = json.loads((out / "grid" / "seed-0" / f"step-{t}" / f"block-{b}.json").read_text())
            assert abs(cell["miou"] - mean_iou(np.array(cell["confusion"]))) < 1e-12
            assert abs(grid["miou"]["all"][si][bi] - cell["miou"]) < 1e-12
            for g in ("small", "large"):
                assert abs(grid["miou"][g][si][bi] - np.mean([cell["iou"][n] for n in split[g]])) < 1e-12
    best = grid["best"]["all"]
    assert best["miou"] == max(max(row) for row in grid["miou"]["all"])
    noise = report["noise"]
    for mode, row in noise["modes"].items():
        per_seed = [miou_of(np.load(out / "noise" / mode / f"seed-{s}.npy")) for s in (0, 1)]
        assert np.allclose(row["miou_per_seed"], per_seed) and abs(row["miou_mean"] - np.mean(per_seed)) < 1e-12
    d = noise["independent_vs_shared"]
    assert abs(d["difference"] - (noise["modes"]["independent"]["miou_mean"] - noise["modes"]["shared"]["miou_mean"])) < 1e-12
    md = (out / "study.md").read_text()
    assert f"**{100 * best['miou']:.1f}**" in md and "| independent |" in md
    assert_study_outputs(out, "features")
    # Rerun: every cell and seed is read back, none retrained.
    stamp = (out / "grid" / "seed-0" / "step-10" / "block-1.json").stat().st_mtime_ns
    assert run(*args, "--out", out, "--quick").exit_code == 0
    assert (out / "grid" / "seed-0" / "step-10" / "block-1.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "study.json").read_text())["grid"] == grid
    one_line_error(run(*args, "--out", tmp_path / "x", "--steps", "10,5000"), "--steps", "5000 is outside [0, 1000)")
    assert tree_state(tmp_path / "x") == {}


def test_synthetic_size_saturation_known_answers():
    from datasetddpm.studies.synthetic_size import SyntheticSizeConfig, saturation
    gain = {"difference": 0.02, "significant": True}
    rows = {"250": {}, "500": {"vs_previous": gain}, "1000": {"vs_previous": {"difference": 0.004, "significant": False}},
            "2000": {"vs_previous": gain}}
    assert saturation(rows) is None and saturation({"250": {}, "500": {"vs_previous": gain}}) is None  # a plateau
    flat = {"difference": 0.004, "significant": False}
    assert saturation({**rows, "2000": {"vs_previous": flat}}) == 500  # 1000 and 2000 bought nothing
    assert saturation({**rows, "2000": {"vs_previous": flat}, "4000": {"vs_previous": gain}}) is None
    assert saturation({**rows, "2000": {"vs_previous": gain}, "4000": {"vs_previous": flat}}) == 2000
    assert saturation({"1": {}, "2": {"vs_previous": {"difference": -0.05, "significant": True}}}) == 1  # a loss
    from datasetddpm.studies.synthetic_size import synthetic_size_markdown

    def tail(steps: dict) -> str:
        rows = {k: {"pairs": int(k), "samples": int(k), "epochs": 1, "optimisation_steps": 1, "miou_mean": 0.5,
                    "miou_std": 0.0, **({"vs_previous": {"size": 0, "ci_low": 0, "ci_high": 0, **v}} if v else {})}
                for k, v in steps.items()}
        report = {"deeplab_seeds": [0], "test_images": 1, "samples": 1, "sampler": "ddim", "sampling_steps": 1,
                  "budget": {"text": "x"}, "rows": rows, "saturates_at": saturation(rows)}
        return synthetic_size_markdown(report).strip().splitlines()[-1]

    steps = {"250": None, "500": gain, "1000": flat, "2000": gain}
    assert tail(steps) == ("No saturation up to 2000 pairs: the last step up is a significant gain; the step to 1000 "
                           "is not, a plateau within the noise.")
    assert tail({**steps, "2000": flat}) == ("Saturates at 500 pairs: from there on no step up in size is a "
                                             "significant gain.")
    assert tail({**steps, "4000": flat, "8000": gain}).endswith("the steps to 1000 and 4000 are not, a plateau "
                                                                "within the noise.")
    assert tail({"250": None, "500": gain}) == ("Every step up in size is a significant gain: no saturation up to "
                                                "500 pairs.")
    cfg = SyntheticSizeConfig(sizes=(250, 1000, 4000), deeplab_epochs=6)
    assert [cfg.samples(s) for s in cfg.sizes] == [278, 1112, 4445] and cfg.epochs(250) == 6
    assert [SyntheticSizeConfig(sizes=(250, 1000, 4000), budget="steps").epochs(s) for s in (250, 1000, 4000)] == [96, 24, 6]


def test_synthetic_size_study_quick(tiny_model_dir, tiny_ensemble, tiny_dataset, tmp_path):
    from conftest import one_line_error, run, tree_state
    from datasetddpm.data.generated import GeneratedPairs
    from datasetddpm.data.shards import ShardStore
    out = tmp_path / "size"
    args = ("study", "synthetic-size", "--ensemble", tiny_ensemble, "--data", tiny_dataset, "--model", tiny_model_dir,
            "--quiet", "--threads", 1, "--arch", "deeplabv3", "--real-fraction", 0)  # SyntheticSizeConfig's own, below
    r = run(*args, "--out", out, "--quick")
    assert r.exit_code == 0, r.output
    report = json.loads((out / "study.json").read_text())
    assert list(report["rows"]) == ["2", "4"] and report["samples"] == 5 and report["budget"]["rule"] == "epochs"
    for size, n in ((2, 3), (4, 5)):  # ceil(size / 0.9) samples, exactly `size` pairs kept
        card = json.loads((out / f"run-{size}" / "dataset_card.json").read_text())
        assert card["counts"] == {"generated": n, "kept": size, "dropped": n - size}
        images, _ = GeneratedPairs(out / f"run-{size}", kept_only=False).arrays()
        base = np.concatenate([ShardStore(out / "run").read_images(k)[1] for k in range(3)])
        assert np.array_equal(images, base[:n])  # the first n samples of the one sampled run
        row = report["rows"][str(size)]
        assert abs(row["miou_mean"] - miou_of(np.load(out / f"deeplab-{size}" / "seed-0" / "test_confusions.npy"))) < 1e-12
    d = report["rows"]["4"]["vs_previous"]
    assert d["size"] == 2 and abs(d["difference"] - (report["rows"]["4"]["miou_mean"] - report["rows"]["2"]["miou_mean"])) < 1e-12
    assert "| 4 | 5 | 1 | 2 |" in (out / "study.md").read_text()  # 4 pairs at DeepLab batch 2: 2 steps per epoch
    assert_study_outputs(out, "synthetic-size")  # the curve, mIoU against pairs
    # A larger size added to the kept study: the base grows to 7 samples, its first 5 the old ones, and the
    # kept sizes are neither sampled nor trained again.
    from dataclasses import replace
    from datasetddpm.studies.synthetic_size import SyntheticSizeConfig, run_synthetic_size_study
    kept = {p: p.stat().st_mtime_ns for p in out.glob("deeplab-*/seed-*/test_confusions.npy")}
    cfg = replace(SyntheticSizeConfig.quick(str(tiny_model_dir)), sizes=(2, 4, 6))
    grown = run_synthetic_size_study(out, tiny_ensemble, tiny_dataset, cfg, threads=1, progress=False)
    assert list(grown["rows"]) == ["2", "4", "6"] and grown["samples"] == 7
    assert all(grown["rows"][k]["miou_per_seed"] == report["rows"][k]["miou_per_seed"] for k in ("2", "4"))
    assert {p: p.stat().st_mtime_ns for p in kept} == kept and len(kept) == 2
    again = np.concatenate([ShardStore(out / "run").read_images(k)[1] for k in range(4)])
    assert len(again) == 7 and np.array_equal(again[:5], base)
    assert grown["rows"]["6"]["vs_previous"]["size"] == 4
    one_line_error(run(*args, "--out", tmp_path / "x", "--sizes", "4,2"), "--sizes", "increasing")
    one_line_error(run(*args, "--out", tmp_path / "x", "--budget", "time"), "--budget", "epochs, steps")
    assert tree_state(tmp_path / "x") == {}


def test_sampling_studies_train_the_chosen_segmenter(tiny_model_dir, tiny_ensemble, tiny_dataset, tmp_path):
    """--arch and --real-fraction reach every DeepLab run of a sampling study and are named under its table;
    a bad choice is refused before anything is written."""
    from conftest import one_line_error, run, tree_state
    from datasetddpm.studies.common import segmenter_name, segmenter_note
    out = tmp_path / "f"
    args = ("study", "filter", "--ensemble", tiny_ensemble, "--data", tiny_dataset, "--model", tiny_model_dir,
            "--quick", "--quiet", "--threads", 1)
    r = run(*args, "--out", out, "--arch", "unet", "--real-fraction", 0.5)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "study.json").read_text())
    assert report["segmenter"] == {"arch": "unet", "epochs": 1, "input_scale": 1, "real_fraction": 0.5}
    for drop in ("0.00", "0.25"):
        training = json.loads((out / f"drop-{drop}" / "seed-1" / "best" / "config.json").read_text())["training"]
        assert training["arch"] == "unet" and training["real_fraction"] == 0.5
        assert training["real"] == str(tiny_dataset.resolve())
    assert ("Segmenter: U-Net, 1 epoch at input x1; the real labelled images mixed into every epoch as 50 % of "
            "its samples.") in (out / "study.md").read_text()
    # Results written before the choice existed render as they did: DeepLabV3, no note.
    assert segmenter_name({}) == "DeepLabV3" and segmenter_note({}) == ""
    one_line_error(run(*args, "--out", tmp_path / "x", "--arch", "segformer"), "--arch", "unknown architecture")
    one_line_error(run("study", "synthetic-size", "--ensemble", tiny_ensemble, "--data", tiny_dataset, "--model",
                       tiny_model_dir, "--out", tmp_path / "x", "--real-fraction", 1), "--real-fraction", "[0, 1)")
    assert tree_state(tmp_path / "x") == {}
