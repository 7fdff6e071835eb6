"""Early class diagnostics (issue #38): a class the labeller cannot learn is named by `train-ensemble` before any
sampling, by `sample`/`label` after their first labelled shard, refused by `finalize --prefer-classes` when no
label holds it, and shown per class by `evaluate`/`probe --class-report`."""

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import one_line_error, run, tree_state

NAMES = ("background", "body", "head", "leg", "tail", "eye", "beak", "fin")  # the embedded domain's + a rare one
FIN = 7


@pytest.fixture(scope="module")
def rare_class_data(tiny_dataset, tmp_path_factory):
    """The tiny embedded dataset with a few pixels of an extra class 'fin' painted into two training masks."""
    root = tmp_path_factory.mktemp("rare") / "data"
    shutil.copytree(tiny_dataset, root)
    for path in sorted((root / "real" / "train").glob("*.npy"))[:2]:
        mask = np.load(path)
        mask[0:2, 0:3] = FIN  # 6 pixels per image: 12 in all
        np.save(path, mask)
    return root


@pytest.fixture(scope="module")
def rare_ensemble(rare_class_data, tmp_path_factory):
    """A colour ensemble (cheap features) trained on `rare_class_data`, and train-ensemble's output."""
    out = tmp_path_factory.mktemp("rare_ens") / "ens"
    result = run("train-ensemble", "--data", rare_class_data, "--out", out, "--colour", "--class-names", ",".join(NAMES),
                 "--members", 2, "--threads", 1, "--quiet")
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train_ensemble_warns_about_a_class_of_a_few_pixels(rare_ensemble, rare_class_data):
    out, output = rare_ensemble
    warnings = [ln for ln in output.splitlines() if ln.startswith("Warning: class ")]
    fin = [ln for ln in warnings if ln.startswith("Warning: class 'fin' ")]
    assert len(fin) == 1, output  # one line for the class, with the count and the remedy
    assert "only 12 labelled pixels" in fin[0] and "annotate more of it" in fin[0] and "custom_data.md" in fin[0]
    assert len(warnings) == len({ln.split("'")[1] for ln in warnings})  # one line per class, no more
    training = json.loads((out / "ensemble.json").read_text())["training"]
    masks = np.stack([np.load(p) for p in sorted((rare_class_data / "real" / "train").glob("*.npy"))])
    assert training["class_pixels"] == np.bincount(masks.ravel(), minlength=8).tolist()
    assert training["class_pixels"][FIN] == 12 and len(training["training_recall"]) == len(NAMES)
    assert f"{'fin':>16}:        12 labelled pixels" in output  # the per-class summary line


def test_training_recall_matches_an_independent_vote(rare_ensemble, rare_class_data):
    """The recorded recall is the members' majority vote on the class's own training pixels (every pixel of
    a class with fewer than the sample size; background, larger, within sampling error)."""
    from datasetddpm.data.folders import read_labelled
    from datasetddpm.ensemble.diagnostics import RECALL_SAMPLE
    from datasetddpm.ensemble.model import load_ensemble
    from datasetddpm.features import colour_maps
    out, _ = rare_ensemble
    ens = load_ensemble(out)
    data = read_labelled(rare_class_data / "real" / "train", len(NAMES))
    x = colour_maps(torch.from_numpy(data.images).permute(0, 3, 1, 2))[0]  # (N, 27, H, W)
    feats = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    with torch.no_grad():
        member_votes = ens(feats).argmax(-1)  # (M, P)
    votes = torch.stack([(member_votes == k).sum(0) for k in range(len(NAMES))], 1).argmax(1).numpy()
    gt = data.masks.ravel()
    recorded = json.loads((out / "ensemble.json").read_text())["training"]["training_recall"]
    for k in range(len(NAMES)):
        own = gt == k
        expected = float((votes[own] == k).mean())
        tolerance = 1e-4 if own.sum() <= RECALL_SAMPLE else 0.05
        assert abs(recorded[k] - expected) <= tolerance, (NAMES[k], recorded[k], expected)


def test_a_rerun_keeps_the_files_and_still_warns(rare_ensemble, rare_class_data, tmp_path):
    """Runs labelled with an ensemble hash its files: a rerun that reproduces the weights leaves them as they are,
    also those of a checkpoint written before the recall was recorded, and still prints the warning."""
    out, _ = rare_ensemble
    ens = tmp_path / "ens"
    shutil.copytree(out, ens)
    meta = json.loads((ens / "ensemble.json").read_text())
    del meta["training"]["training_recall"]  # as an ensemble trained before this diagnostic
    (ens / "ensemble.json").write_text(json.dumps(meta))
    before = {p.name: p.read_bytes() for p in ens.iterdir() if p.suffix in (".json", ".safetensors")}
    again = run("train-ensemble", "--data", rare_class_data, "--out", ens, "--colour", "--class-names", ",".join(NAMES),
                "--members", 2, "--threads", 1, "--quiet")
    assert again.exit_code == 0, again.output
    assert "left as it was" in again.output and "Warning: class 'fin' " in again.output
    assert {p: (ens / p).read_bytes() for p in before} == before


def test_evaluate_class_report_matches_an_independent_count(rare_ensemble, rare_class_data, tmp_path):
    from datasetddpm.data.images import read_mask
    out, _ = rare_ensemble
    plain, report = tmp_path / "plain.json", tmp_path / "report.json"
    r = run("evaluate", "--ensemble", out, "--data", rare_class_data, "--out", plain, "--threads", 1, "--quiet")
    assert r.exit_code == 0, r.output
    r = run("evaluate", "--ensemble", out, "--data", rare_class_data, "--out", report, "--class-report",
            "--threads", 1, "--quiet")
    assert r.exit_code == 0, r.output
    a, b = json.loads(plain.read_text()), json.loads(report.read_text())
    assert "class_report" not in a and set(b) - set(a) == {"class_report"}
    assert {k: a[k] for k in ("miou", "iou", "confusion")} == {k: b[k] for k in ("miou", "iou", "confusion")}
    # Independently: the ensemble's masks (segment) against the test masks, counted here with numpy.
    assert run("segment", "--images", rare_class_data / "real" / "test", "--ensemble", out, "--out",
               tmp_path / "pred", "--threads", 1, "--quiet").exit_code == 0
    tests = sorted((rare_class_data / "real" / "test").glob("*.npy"))
    gt = np.stack([np.load(p) for p in tests])
    pred = np.stack([read_mask(tmp_path / "pred" / f"{p.stem}.png") for p in tests])
    train = np.stack([np.load(p) for p in sorted((rare_class_data / "real" / "train").glob("*.npy"))])
    train_pixels = np.bincount(train.ravel(), minlength=8)
    shares = train_pixels / train_pixels.sum()
    rows, ious = b["class_report"]["classes"], []
    for k, name in enumerate(NAMES):
        inter, union = np.sum((gt == k) & (pred == k)), np.sum((gt == k) | (pred == k))
        ious.append(inter / union if union else 0.0)
        assert rows[name]["iou"] == pytest.approx(ious[k], abs=1e-12)
        assert rows[name]["train_pixels"] == train_pixels[k] and rows[name]["test_pixels"] == np.sum(gt == k)
        assert rows[name]["predicted_pixels"] == np.sum(pred == k)
        assert rows[name]["group"] == ("small" if shares[k] < np.median(shares) else "large")
    small = [ious[k] for k in range(8) if shares[k] < np.median(shares)]
    large = [ious[k] for k in range(8) if shares[k] >= np.median(shares)]
    assert b["class_report"]["miou"]["small"] == pytest.approx(np.mean(small), abs=1e-12)
    assert b["class_report"]["miou"]["large"] == pytest.approx(np.mean(large), abs=1e-12)
    assert "small" in r.output and "never predicted" in r.output  # fin and beak: no pixel predicted


def test_probe_class_report(tiny_model_dir, tiny_dataset, tmp_path):
    """--class-names names the classes and adds the report; without it probe.json keeps its keys."""
    names = ("bg", "body", "head", "leg", "tail", "eye", "beak")
    common = ["--data", tiny_dataset, "--model", tiny_model_dir, "--blocks", "1,4", "--steps", "50",
              "--train-images", 4, "--test-images", 4, "--threads", 1, "--quiet"]
    assert run("probe", "--out", tmp_path / "plain", *common).exit_code == 0
    r = run("probe", "--out", tmp_path / "report", *common, "--class-names", ",".join(names))
    assert r.exit_code == 0, r.output
    plain = json.loads((tmp_path / "plain" / "probe.json").read_text())
    report = json.loads((tmp_path / "report" / "probe.json").read_text())
    assert "class_report" not in plain and set(report) - set(plain) == {"class_report"}
    assert report["miou"] == plain["miou"]  # the same cells, the same scores
    cr = report["class_report"]
    train = np.stack([np.load(p) for p in sorted((tiny_dataset / "real" / "train").glob("*.npy"))])
    counts = np.bincount(train[train != 255].ravel(), minlength=7)
    shares = counts / counts.sum()
    assert [cr["best_cell"]["classes"][n]["train_pixels"] for n in names] == counts.tolist()
    assert cr["groups"] == {n: "small" if shares[k] < np.median(shares) else "large" for k, n in enumerate(names)}
    for b in range(2):  # every cell: its mIoU and group means are the means of its class IoUs
        ious = cr["class_iou"][0][b]
        assert list(ious) == list(names)
        assert np.mean(list(ious.values())) == pytest.approx(report["miou"][0][b], abs=1e-12)
        small = [ious[n] for n in names if cr["groups"][n] == "small"]
        assert cr["miou_small"][0][b] == pytest.approx(np.mean(small), abs=1e-12)
    best = int(np.argmax(report["miou"][0]))
    assert cr["best_cell"]["block"] == [1, 4][best] and "per class" in r.output


@pytest.fixture(scope="module")
def never_h_ensemble(tiny_model_dir, tmp_path_factory):
    """An ensemble over the tiny model whose last class 'h' can never win a vote (its logit bias is -1e4)."""
    from datasetddpm.ensemble.model import EnsembleConfig, PixelEnsemble, save_ensemble
    directory = tmp_path_factory.mktemp("never_h")
    cfg = EnsembleConfig(in_dim=16 + 8, num_classes=8, members=3, features={"blocks": [1, 4], "steps": [50],
                         "noise_seed": 0}, model=str(tiny_model_dir), class_names=tuple("abcdefgh"))
    ens = PixelEnsemble(cfg, seed=1).eval()
    with torch.no_grad():
        ens.fc3.bias[:, :, 7] = -1e4
    save_ensemble(directory, ens, {"training": {"class_pixels": [100] * 8}})
    return directory


def test_label_reports_the_first_shard_and_finalize_refuses_an_absent_class(tiny_model_dir, never_h_ensemble,
                                                                              tmp_path):
    from datasetddpm.data.images import read_mask
    root = tmp_path / "run"
    sampled = run("sample", "--out", root, "--n", 4, "--model", tiny_model_dir, "--sampling-steps", 2,
                  "--batch-size", 2, "--shard-size", 2, "--threads", 1, "--quiet")
    assert sampled.exit_code == 0, sampled.output
    assert "first labelled shard" not in sampled.output  # no ensemble, no labels, no report
    labelled = run("label", "--out", root, "--ensemble", never_h_ensemble, "--threads", 1, "--quiet")
    assert labelled.exit_code == 0, labelled.output
    lines = labelled.output.splitlines()
    head = [i for i, ln in enumerate(lines) if ln.startswith("first labelled shard")]
    assert len(head) == 1, labelled.output  # the first shard only
    masks = np.stack([read_mask(p) for p in sorted((root / "shards").glob("*/masks/*.png"))[:2]])
    share = np.bincount(masks.ravel(), minlength=8) / masks.size
    for k, line in enumerate(lines[head[0] + 1:head[0] + 9]):
        name, rest = line.split(":", 1)
        assert name.strip() == "abcdefgh"[k]
        assert float(rest.split("%")[0]) == pytest.approx(100 * share[k], abs=0.006)
        assert "(12.50 %)" in rest  # the labeller's training share beside it
        assert ("no pixel" in rest) == (share[k] == 0)
    assert "no pixel" in lines[head[0] + 8]  # 'h'
    both = run("sample", "--out", tmp_path / "run2", "--n", 4, "--model", tiny_model_dir, "--sampling-steps", 2,
               "--batch-size", 2, "--shard-size", 2, "--ensemble", never_h_ensemble, "--threads", 1, "--quiet")
    assert both.exit_code == 0 and both.output.count("first labelled shard (0, 2 images)") == 1, both.output
    before = tree_state(root)
    one_line_error(run("finalize", "--out", root, "--prefer-classes", "h"), "--prefer-classes", "class 'h'",
                   "annotate more")
    assert tree_state(root) == before and not (root / "dataset_card.json").exists()


def test_the_warning_limits_and_the_ignore_label():
    """The documented limits: < 100 pixels or < 0.1 % of them, recall < 50 %; an ignore label that is a class
    id (0 = unlabelled, as bedroom_28) is no class to warn about or to flag in a shard."""
    from datasetddpm.ensemble.diagnostics import class_warnings
    from datasetddpm.pipeline.class_shares import shard_share_lines
    names = ("unlabelled", "wall", "lamp", "knob", "cup", "rug")
    pixels = [0, 300_000, 99, 250, 5000, 5000]  # knob: 250 pixels but 0.08 %
    recall = [None, 0.99, 0.9, 0.9, 0.49, 0.5]
    lines = class_warnings(names, pixels, recall, ignore_label=0)
    assert [ln.split("'")[1] for ln in lines] == ["lamp", "knob", "cup"]
    assert "only 99 labelled pixels" in lines[0] and "only 250 labelled pixels" in lines[1]
    assert "rarely predicted" in lines[2] and "recall 49.0 %" in lines[2]
    assert "never predicted" in class_warnings(names, pixels, [None, 1, 1, 1, 0.0, 1], ignore_label=0)[-1]
    assert len(class_warnings(names, pixels, recall)) == 4  # without the ignore label: 'unlabelled' has none
    labels = np.ones((2, 4, 4), dtype=np.int64)
    report = shard_share_lines(labels, names, [0, 1, 1, 1, 1, 1], shard=0, ignore_label=0)
    assert len(report) == 1 + 5 and not any("unlabelled" in ln for ln in report)
    assert [("no pixel" in ln) for ln in report[1:]] == [False, True, True, True, True]
