"""`--dry-run` checks the inputs, reports the plan from timed steps and writes nothing; `annotate`."""

import json

from datasetddpm.generators.loading import load_generator
from conftest import finished_run, one_line_error, run, tree_state


def _rows(output: str) -> dict:
    rows = {}
    for line in output.splitlines()[1:]:
        key, _, value = line.strip().partition("  ")
        rows[key.strip()] = value.strip()
    return rows


def test_sample_dry_run_plans_and_writes_nothing(tiny_model_dir, tiny_ensemble, tmp_path):
    before = tree_state(tmp_path)
    r = run("sample", "--out", tmp_path / "run", "--n", 40, "--model", tiny_model_dir, "--ensemble", tiny_ensemble,
            "--sampling-steps", 10, "--batch-size", 4, "--shard-size", 8, "--dry-run")
    assert r.exit_code == 0, r.output
    rows = _rows(r.output)
    assert rows["samples"].startswith("40 (0 already committed, 40 to make) in 5 shards of 8")
    assert "10 per sample (ddim, 10 steps), 400 in all" in rows["network evaluations"]
    assert "MiB" in rows["disk needed"] and rows["estimated time"].endswith("on cpu)")
    assert tree_state(tmp_path) == before


def test_a_dry_run_of_a_half_done_run_counts_what_is_left(tiny_model_dir, tiny_ensemble, tmp_path):
    root = finished_run(tmp_path / "run", tiny_model_dir, tiny_ensemble, 4, 2)
    before = tree_state(root)
    r = run("sample", "--out", root, "--n", 4, "--model", tiny_model_dir, "--sampling-steps", 2, "--batch-size", 2,
            "--shard-size", 2, "--ensemble", tiny_ensemble, "--dry-run")
    assert r.exit_code == 0 and "4 already committed, 0 to make" in r.output, r.output
    r = run("label", "--out", root, "--ensemble", tiny_ensemble, "--dry-run")
    assert r.exit_code == 0 and _rows(r.output)["samples to label"] == "0 of 4", r.output
    assert tree_state(root) == before


def test_trainer_dry_runs_write_nothing(tiny_model_dir, tiny_ensemble, tiny_dataset, tmp_path):
    root = finished_run(tmp_path / "run", tiny_model_dir, tiny_ensemble, 4, 2)
    before = tree_state(tmp_path)
    r = run("train-ddpm", "--out", tmp_path / "ddpm", "--steps", 100, "--batch-size", 4, "--channels", "16,32",
            "--dry-run")
    assert r.exit_code == 0 and "100 (0 done, 100 to go) at batch 4" in r.output, r.output
    r = run("train-ddpm", "--out", tmp_path / "tuned", "--steps", 10, "--batch-size", 2, "--init-from", tiny_model_dir,
            "--dry-run")  # fine-tuning plans the starting model's UNet, not the default one
    params = sum(p.numel() for p in load_generator(tiny_model_dir).unet.parameters())
    assert r.exit_code == 0 and f"{params / 1e6:.2f}M parameters, 32 px" in r.output, r.output
    r = run("train-deeplab", "--run", root, "--val", tiny_dataset, "--out", tmp_path / "dl", "--epochs", 3,
            "--batch-size", 2, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "steps per epoch x 3 epochs, batch 2 per worker x 1" in _rows(r.output)["training"]
    r = run("train-ensemble", "--data", tiny_dataset, "--out", tmp_path / "ens", "--colour", "--members", 3, "--dry-run")
    assert r.exit_code == 0, r.output
    assert _rows(r.output)["labelled images"].startswith("4 (") and "27 features per pixel" in r.output
    assert "3 MLPs" in _rows(r.output)["ensemble"]
    assert tree_state(tmp_path) == before


def test_a_dry_run_finds_the_mistakes_the_command_would(tiny_model_dir, tmp_path):
    one_line_error(run("sample", "--out", tmp_path / "r", "--model", tiny_model_dir, "--sampler", "foo", "--dry-run"),
                   "--sampler: unknown sampler")
    one_line_error(run("train-ddpm", "--out", tmp_path / "d", "--steps", 0, "--dry-run"), "--steps: must be >= 1")
    one_line_error(run("train-ddpm", "--out", tmp_path / "d", "--channels", "8,12", "--dry-run"),
                   "--channels: each width must be a multiple of 16")
    assert not list(tmp_path.iterdir())


def test_annotation_samples_are_never_the_samples_of_another_run_seed():
    from datasetddpm.seeds import sample_seed, stream_seed
    annotation = {stream_seed(0, "annotation", i) for i in range(50)}
    runs = {sample_seed(s, i) for s in (0, 1, 7777) for i in range(200)}
    assert len(annotation) == 50 and not annotation & runs


def test_annotate_command_and_the_older_spelling_agree(tiny_model_dir, tmp_path):
    args = ["--model", tiny_model_dir, "--sampling-steps", 2, "--batch-size", 2, "--seed", 3]
    assert run("annotate", "--out", tmp_path / "a", "--k", 3, *args).exit_code == 0
    assert run("sample", "--out", tmp_path / "b", "--for-annotation", 3, *args).exit_code == 0
    for name in ("sample_00000.png", "sample_00002.png", "samples.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert len(json.loads((tmp_path / "a" / "samples.json").read_text())["seeds"]) == 3
    one_line_error(run("sample", "--out", tmp_path / "c", "--for-annotation", 3, "--n", 50, "--workers", 2, *args),
                   "--for-annotation: exports samples for annotators and takes no --n, --workers")
    one_line_error(run("annotate", "--out", tmp_path / "c", "--k", 0, *args), "--k: must be >= 1")
    assert not (tmp_path / "c").exists()
