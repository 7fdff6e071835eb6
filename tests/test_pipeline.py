import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import tree_state
from typer.testing import CliRunner

from datasetddpm.cli.main import get_app
from datasetddpm.pipeline.finalize import kept_ids

runner = CliRunner()
app = get_app()


def _sample_args(out, model, ens=None, *extra):
    args = ["sample", "--out", out, "--n", "12", "--model", model, "--sampling-steps", "3", "--batch-size", "2",
            "--shard-size", "4", "--threads", "1", "--quiet", *extra]
    return [str(a) for a in args] + (["--ensemble", str(ens)] if ens else [])


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "shards").rglob("*")) if p.is_file()}


def test_one_and_two_workers_give_identical_bytes(tiny_model_dir, tiny_ensemble, tmp_path):
    r1 = runner.invoke(app, _sample_args(tmp_path / "w1", tiny_model_dir, tiny_ensemble))
    r2 = runner.invoke(app, _sample_args(tmp_path / "w2", tiny_model_dir, tiny_ensemble, "--workers", "2"))
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    a, b = _tree(tmp_path / "w1"), _tree(tmp_path / "w2")
    assert len([k for k in a if k.endswith(".png")]) == 24  # 12 images + 12 masks
    assert a == b


def test_sigkill_mid_shard_then_rerun_is_byte_identical(tiny_model_dir, tiny_ensemble, tmp_path):
    assert runner.invoke(app, _sample_args(tmp_path / "ref", tiny_model_dir, tiny_ensemble)).exit_code == 0
    cmd = [sys.executable, "-c", "from datasetddpm.cli.main import main; main()",
           *_sample_args(tmp_path / "killed", tiny_model_dir, tiny_ensemble)]
    env = {**os.environ, "DATASETDDPM_FAULT_AFTER_BATCHES": "3"}  # dies in the middle of shard 1
    killed = subprocess.run(cmd, env=env, capture_output=True)
    assert killed.returncode == -9
    assert (tmp_path / "killed" / "shards" / "00000.json").is_file()
    assert not (tmp_path / "killed" / "shards" / "00001.json").exists()
    resumed = subprocess.run(cmd, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr
    assert _tree(tmp_path / "killed") == _tree(tmp_path / "ref")


def test_changed_config_refuses_to_resume(tiny_model_dir, tmp_path):
    assert runner.invoke(app, _sample_args(tmp_path / "r", tiny_model_dir)).exit_code == 0
    changed = _sample_args(tmp_path / "r", tiny_model_dir)
    changed[changed.index("--sampling-steps") + 1] = "4"
    result = runner.invoke(app, changed)
    assert result.exit_code == 2 and "different config" in result.output and "--overwrite" in result.output
    assert runner.invoke(app, changed + ["--overwrite"]).exit_code == 0


def test_retraining_the_same_ensemble_keeps_labelled_runs_valid(tiny_model_dir, tiny_dataset, tmp_path):
    ens, run = tmp_path / "ens", tmp_path / "run"

    def train(*extra):
        return runner.invoke(app, ["train-ensemble", "--data", str(tiny_dataset), "--out", str(ens), "--model",
                                   str(tiny_model_dir), "--blocks", "1,4", "--steps", "50", "--members", "2",
                                   "--threads", "1", "--quiet", *extra])

    assert train().exit_code == 0
    files = {p.name: p.read_bytes() for p in ens.iterdir()}
    assert runner.invoke(app, _sample_args(run, tiny_model_dir, ens)).exit_code == 0
    again = train()  # same data and seed: the same weights; its log (seconds) would differ
    assert again.exit_code == 0 and "left as it was" in again.output, again.output
    assert {p.name: p.read_bytes() for p in ens.iterdir()} == files
    assert runner.invoke(app, _sample_args(run, tiny_model_dir, ens)).exit_code == 0  # resumes: nothing to redo
    assert train("--seed", "1").exit_code == 2  # another training's ensemble: only with --overwrite
    assert {p.name: p.read_bytes() for p in ens.iterdir()} == files
    other = train("--seed", "1", "--overwrite")
    assert other.exit_code == 0 and "left as it was" not in other.output
    assert (ens / "ensemble.safetensors").read_bytes() != files["ensemble.safetensors"]
    refused = runner.invoke(app, _sample_args(run, tiny_model_dir, ens))
    assert refused.exit_code == 2 and "different config" in refused.output
    # Killed between writing seed 1's weights and its JSON: seed 0's JSON is left beside them. The weights
    # match a rerun, but the stored log is another training's: the JSON is rewritten.
    (ens / "ensemble.json").write_bytes(files["ensemble.json"])
    mended = train("--seed", "1", "--overwrite")  # the killed command, rerun
    assert mended.exit_code == 0 and "left as it was" not in mended.output
    assert json.loads((ens / "ensemble.json").read_text())["training"]["seed"] == 1


def test_gpus_without_gpus_is_a_clear_error(tiny_model_dir, tmp_path):
    result = runner.invoke(app, _sample_args(tmp_path / "g", tiny_model_dir) + ["--gpus", "4"])
    assert result.exit_code == 2
    assert "--gpus: asked for 4 GPU worker(s)" in result.output and "--workers" in result.output
    assert not (tmp_path / "g").exists()


def test_label_then_finalize_keeps_exactly_the_expected_count(tiny_model_dir, tiny_ensemble, tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(app, _sample_args(run, tiny_model_dir)).exit_code == 0
    result = runner.invoke(app, ["label", "--out", str(run), "--ensemble", str(tiny_ensemble), "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["finalize", "--out", str(run), "--drop-fraction", "0.25"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run / "index.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and sum(r["kept"] for r in rows) == 9
    kept_u = [r["uncertainty"] for r in rows if r["kept"]]
    dropped_u = [r["uncertainty"] for r in rows if not r["kept"]]
    assert max(kept_u) <= min(dropped_u)
    card = json.loads((run / "dataset_card.json").read_text())
    assert card["counts"] == {"generated": 12, "kept": 9, "dropped": 3} and card["blocks"] == [1, 4]
    result = runner.invoke(app, ["finalize", "--out", str(run), "--max-pairs", "5"])
    assert sum(json.loads(line)["kept"] for line in (run / "index.jsonl").read_text().splitlines()) == 5


def test_kept_ids_global_drop():
    ids = np.arange(100)
    u = np.random.default_rng(0).random(100)
    keep = kept_ids(ids, u, 0.1, 50_000)
    assert len(keep) == 90 and set(ids[np.argsort(u)[:90]]) == keep
    assert len(kept_ids(ids, u, 0.1, 30)) == 30


def test_mining_keeps_the_richest_in_preferred_classes_among_the_filter_survivors():
    ids = np.arange(10)
    u = np.array([9, 0, 1, 2, 3, 4, 5, 6, 7, 8], float)  # id 0 is the most uncertain: dropped at 10 %
    rich = np.array([100, 5, 0, 7, 7, 1, 0, 0, 3, 2])  # id 0 is the richest, but the filter comes first
    assert kept_ids(ids, u, 0.1, 3, rich) == {3, 4, 1}  # 7, 7 (3 less uncertain than 4), then 5
    assert kept_ids(ids, u, 0.1, 3) == {1, 2, 3}  # without mining: the least uncertain
    assert kept_ids(ids, u, 0.1, 50, rich) == kept_ids(ids, u, 0.1, 50)  # keep them all: the same set


def test_finalize_prefer_classes_mines_and_records_it(tiny_model_dir, tiny_ensemble, tmp_path):
    from conftest import finished_run, one_line_error, run
    root = finished_run(tmp_path / "run", tiny_model_dir, tiny_ensemble, n=8, batch=4)
    pixels, uncertainty = {}, {}
    for k in range(2):
        for s in json.loads((root / f"shards/{k:05d}.labels.json").read_text())["samples"]:
            pixels[s["id"]], uncertainty[s["id"]] = s["class_pixels"][5] + s["class_pixels"][6], s["uncertainty"]
    assert run("finalize", "--out", root, "--max-pairs", 3, "--prefer-classes", "f,g").exit_code == 0
    card = json.loads((root / "dataset_card.json").read_text())
    kept = [r["id"] for r in map(json.loads, (root / "index.jsonl").read_text().splitlines()) if r["kept"]]
    assert card["prefer_classes"] == ["f", "g"] and card["counts"]["kept"] == 3 == len(kept)
    survivors = sorted(pixels, key=lambda i: (uncertainty[i], i))[:7]  # the filter drops the most uncertain
    assert kept == sorted(sorted(survivors, key=lambda i: (-pixels[i], uncertainty[i], i))[:3])
    index = (root / "index.jsonl").read_bytes()  # finalizing again the same way writes the same selection
    assert run("finalize", "--out", root, "--max-pairs", 3, "--prefer-classes", "f,g").exit_code == 0
    assert (root / "index.jsonl").read_bytes() == index
    before = tree_state(root)
    one_line_error(run("finalize", "--out", root, "--prefer-classes", "f,wing"), "--prefer-classes", "'wing'", "a, b")
    assert tree_state(root) == before


def test_for_annotation_exports_a_labelled_folder_layout(tiny_model_dir, tmp_path, monkeypatch):
    from datasetddpm import presets
    from datasetddpm.segmenters.model import SegmenterConfig, create_segmenter, save_segmenter
    oracle_dir = tmp_path / "oracle"
    save_segmenter(oracle_dir, create_segmenter(SegmenterConfig(num_classes=7, arch="unet")))
    monkeypatch.setattr(presets, "EMBEDDED_ORACLE_DIR", oracle_dir)
    out = tmp_path / "ann"
    result = runner.invoke(app, ["sample", "--for-annotation", "3", "--oracle-annotate", "--out", str(out), "--model",
                                 str(tiny_model_dir), "--sampling-steps", "2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    from datasetddpm.data.folders import read_labelled
    labelled = read_labelled(out, 7)
    assert len(labelled) == 3 and labelled.masks.max() < 7
    assert len(json.loads((out / "samples.json").read_text())["seeds"]) == 3


def test_class_balance_of_the_kept_labels_against_the_labellers():
    from datasetddpm.pipeline.finalize import class_balance
    r = class_balance([[10, 0, 0, 1], [10, 0, 5, 0]], [40, 20, 20, 20], ("a", "b", "c", "d"))
    shares = {k: v["kept_pixel_share"] for k, v in r["class_balance"].items()}
    assert shares == {"a": round(20 / 26, 6), "b": 0.0, "c": round(5 / 26, 6), "d": round(1 / 26, 6)}
    assert r["class_balance"]["a"]["labeller_pixel_share"] == 0.4
    assert r["warnings"] == ["class 'b' never appears in the kept labels",
                             "class 'd' is 3.85 % of the kept label pixels but 20 % of the labeller's: "
                             "under-represented in the samples"]
    assert class_balance([None], None, ("a",)) == {}  # runs labelled before counts were recorded


def test_finalize_records_the_class_balance_in_the_card(tiny_model_dir, tiny_ensemble, tmp_path):
    assert runner.invoke(app, _sample_args(tmp_path / "run", tiny_model_dir, tiny_ensemble)).exit_code == 0
    r = runner.invoke(app, ["finalize", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "run" / "dataset_card.json").read_text())
    assert set(card["class_balance"]) == set("abcdefg")
    assert abs(sum(v["kept_pixel_share"] for v in card["class_balance"].values()) - 1) < 1e-4
    assert "% of kept label pixels" in r.output


def test_the_sampler_and_labeller_run_only_full_batches(tiny_model_dir, tiny_ensemble, tmp_path, monkeypatch):
    """A UNet's float sums round differently for another batch shape, so a sample in a short last batch
    (of a shard, or of a run of another length) would get other bits than the same seed in a full one.
    Every sampling call gets the run's batch size and every labelling pass a full labelling batch, the
    copies that fill them are dropped, and runs of different lengths share their common samples byte for
    byte (samples 4 and 5: a batch of 2 in a 6-sample run, of 4 in an 8-sample one)."""
    import datasetddpm.pipeline.generate as generate
    from datasetddpm.generators.diffusion import DiffusionGenerator
    from datasetddpm.data.shards import ShardStore
    sampled, labelled = [], []
    real_sample, real_segment = DiffusionGenerator.sample, generate.segment

    def sample(self, seeds, **kw):
        sampled.append(list(seeds))
        return real_sample(self, seeds, **kw)

    def segment(source, ensemble, images, **kw):
        labelled.append((len(images), kw.get("batch_size")))
        return real_segment(source, ensemble, images, **kw)

    monkeypatch.setattr(DiffusionGenerator, "sample", sample)
    monkeypatch.setattr(generate, "segment", segment)
    for n in (6, 8):
        args = ["sample", "--out", tmp_path / f"n{n}", "--n", n, "--model", tiny_model_dir, "--sampling-steps", 3,
                "--batch-size", 4, "--shard-size", 4, "--threads", 1, "--quiet", "--ensemble", tiny_ensemble]
        r = runner.invoke(app, [str(a) for a in args])
        assert r.exit_code == 0, r.output
    assert [len(s) for s in sampled] == [4] * 4 and sampled[1][2:] == [sampled[1][1]] * 2  # 4, 5 + two copies of 5
    assert labelled == [(8, 8)] * 4  # shards of 4 and 2 images, each one full labelling batch
    short, full = ShardStore(tmp_path / "n6"), ShardStore(tmp_path / "n8")
    assert short.read_images(1)[0] == [4, 5] and full.read_images(1)[0] == [4, 5, 6, 7]
    assert np.array_equal(short.read_images(1)[1], full.read_images(1)[1][:2])
    for name in ("0000004.png", "0000005.png"):
        assert (short.masks_dir(1) / name).read_bytes() == (full.masks_dir(1) / name).read_bytes()
    scores = [{r["id"]: r["uncertainty"] for r in s.read_sidecar(1, labels=True)["samples"]} for s in (short, full)]
    assert scores[0] == {i: scores[1][i] for i in (4, 5)}


def test_annotation_exports_and_sample_checks_sample_only_full_batches(tiny_generator, tmp_path, monkeypatch):
    """`annotate` and `check-samples` sample in chunks too: every call gets the full batch size (the last
    chunk filled with copies of its last seed, their images dropped), so an export of 3 samples has the
    bits of the first 3 of an export of 4."""
    from datasetddpm.data.oracle import check_samples
    from datasetddpm.pipeline.annotate import export_for_annotation
    from datasetddpm.segmenters.model import SegmenterConfig, create_segmenter
    sampled, real_sample = [], type(tiny_generator).sample

    def sample(self, seeds, **kw):
        sampled.append(list(seeds))
        return real_sample(self, seeds, **kw)

    monkeypatch.setattr(type(tiny_generator), "sample", sample)
    for k in (3, 4):
        paths = export_for_annotation(tiny_generator, k, tmp_path / f"k{k}", num_steps=2, batch_size=2)
        assert len(paths) == k
    assert [len(s) for s in sampled] == [2] * 4 and sampled[1][1] == sampled[1][0]  # seed 2, then its copy
    for i in range(3):
        name = f"sample_{i:05d}.png"
        assert (tmp_path / "k3" / name).read_bytes() == (tmp_path / "k4" / name).read_bytes()
    sampled.clear()
    oracle = create_segmenter(SegmenterConfig(num_classes=7, arch="unet")).eval()
    report = check_samples(tiny_generator, oracle, tmp_path / "check", n=3, num_steps=2, batch_size=2, progress=False)
    assert [len(s) for s in sampled] == [2, 2] and report["num_samples"] == 3
