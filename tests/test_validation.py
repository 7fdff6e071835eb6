"""Validate, then write: a user mistake is one line, exit 2, and the disk is as it was."""

import json
import shutil

import pytest

from conftest import one_line_error, run, tree_state


def _sample(out, model, *extra):
    return ["sample", "--out", out, "--n", 8, "--model", model, "--sampling-steps", 2, "--batch-size", 4,
            "--shard-size", 4, "--threads", 1, "--quiet", *extra]


@pytest.fixture(scope="module")
def sampled_run(tiny_model_dir, tiny_ensemble, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sampled") / "run"
    assert run(*_sample(run_dir, tiny_model_dir, "--ensemble", tiny_ensemble)).exit_code == 0
    return run_dir


BAD_SAMPLE = [
    (["--sampler", "foo"], "--sampler: unknown sampler 'foo'"),
    (["--sampling-steps", "0"], "--sampling-steps: 0 is outside [1, 1000]"),
    (["--ensemble", "nowhere"], "nowhere/ensemble.json: file not found"),
    (["--for-annotation", "0"], "--for-annotation: must be >= 1"),
    (["--for-annotation", "-3"], "--for-annotation: must be >= 1"),
    (["--threads", "0"], "--threads: must be >= 1"),
    (["--n", "0"], "--n: must be >= 1"),
]


@pytest.mark.parametrize("extra,message", BAD_SAMPLE, ids=[m.split(":")[0] + str(i) for i, (_, m) in
                                                            enumerate(BAD_SAMPLE)])
def test_bad_sample_options_write_nothing(tiny_model_dir, tmp_path, extra, message):
    r = run(*_sample(tmp_path / "run", tiny_model_dir, *extra))
    one_line_error(r, message)
    assert not (tmp_path / "run").exists()


def test_refused_options_leave_an_existing_run_untouched_and_resumable(sampled_run, tiny_model_dir, tiny_ensemble):
    before = tree_state(sampled_run)
    one_line_error(run(*_sample(sampled_run, tiny_model_dir, "--ensemble", tiny_ensemble, "--sampler", "foo")),
                   "--sampler")
    assert tree_state(sampled_run) == before  # the manifest was not rewritten: the right command still resumes
    assert run(*_sample(sampled_run, tiny_model_dir, "--ensemble", tiny_ensemble)).exit_code == 0
    assert tree_state(sampled_run) == before


def test_truncated_model_weights_write_nothing(tiny_model_dir, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    one_line_error(run(*_sample(tmp_path / "run", broken)), "model.safetensors: not a readable safetensors file")
    assert not (tmp_path / "run").exists()


def test_ensemble_of_another_model_is_refused_and_no_model_means_the_ensembles(tiny_ensemble, tmp_path):
    one_line_error(run(*_sample(tmp_path / "a", "embedded", "--ensemble", tiny_ensemble)),
                   "ensemble.json: was trained on features of", "not of --model embedded")
    assert not (tmp_path / "a").exists()
    args = [a for a in _sample(tmp_path / "b", "x", "--ensemble", tiny_ensemble)]
    i = args.index("--model")
    del args[i:i + 2]
    assert run(*args).exit_code == 0  # sampled from the ensemble's own model
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    from datasetddpm.ensemble.model import load_ensemble  # ensemble.json records it relative to its folder
    assert manifest["config"]["model"] == load_ensemble(tiny_ensemble).cfg.model


def test_ensemble_json_that_does_not_match_its_weights_is_refused(tiny_model_dir, tiny_ensemble, tmp_path):
    lying = tmp_path / "ens"
    shutil.copytree(tiny_ensemble, lying)
    meta = json.loads((lying / "ensemble.json").read_text())
    meta["ensemble"]["features"]["blocks"] = [1, 2]  # 16 + 16 channels, the weights take 24
    (lying / "ensemble.json").write_text(json.dumps(meta))
    one_line_error(run(*_sample(tmp_path / "run", tiny_model_dir, "--ensemble", lying)),
                   "lists blocks [1, 2] x steps [50] = 32 features, but its weights take 24")
    assert not (tmp_path / "run").exists()


def test_label_overwrite_with_a_bad_ensemble_deletes_nothing(sampled_run, tiny_ensemble, tmp_path):
    before = tree_state(sampled_run)
    broken = tmp_path / "ens"
    shutil.copytree(tiny_ensemble, broken)
    (broken / "ensemble.safetensors").write_bytes(b"not safetensors")
    one_line_error(run("label", "--out", sampled_run, "--ensemble", broken, "--overwrite", "--quiet"),
                   "ensemble.safetensors: not a readable safetensors file")
    one_line_error(run("label", "--out", sampled_run, "--ensemble", tmp_path / "missing", "--overwrite", "--quiet"),
                   "missing/ensemble.json: file not found")
    assert tree_state(sampled_run) == before


def test_output_that_is_a_file_is_one_line(tiny_model_dir, tmp_path):
    (tmp_path / "file").write_text("x")
    one_line_error(run(*_sample(tmp_path / "file", tiny_model_dir)), "--out must be a directory")
    one_line_error(run(*_sample(tmp_path / "file" / "run", tiny_model_dir)), "is not a directory")
    assert (tmp_path / "file").read_text() == "x"


def test_user_error_inside_worker_processes_is_one_line(sampled_run, tiny_model_dir, tmp_path, monkeypatch):
    # The workers load the model themselves: a model folder that breaks after the parent's checks (here:
    # its weights are corrupted once the parent has validated them) must still give one line, exit 2.
    from datasetddpm.pipeline import generate
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    checked = generate.resolve_sample_config

    def check_then_break(cfg, ensemble, *options):
        resolved = checked(cfg, ensemble, *options)
        (model / "model.safetensors").write_bytes(b"broken")
        return resolved
    monkeypatch.setattr(generate, "resolve_sample_config", check_then_break)
    one_line_error(run(*_sample(tmp_path / "run", model, "--workers", 2)), "not a readable safetensors file")


def test_trainer_options_are_checked_before_writing(tmp_path, tiny_dataset):
    one_line_error(run("train-ddpm", "--out", tmp_path / "d", "--steps", 0), "--steps: must be >= 1")
    one_line_error(run("train-ddpm", "--out", tmp_path / "d", "--lr-schedule", "cosine"),
                   "--schedule-steps: a cosine schedule needs")
    one_line_error(run("train-ensemble", "--data", tiny_dataset, "--out", tmp_path / "e", "--members", 0),
                   "--members: must be >= 1")
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


def test_one_writer_per_run_and_stale_locks_are_taken_over(sampled_run, tiny_model_dir, tiny_ensemble):
    import os
    import socket
    import subprocess
    import sys
    from datasetddpm.io import LOCK_NAME
    lock = sampled_run / LOCK_NAME
    before = tree_state(sampled_run)
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))  # a live holder
    try:
        one_line_error(run(*_sample(sampled_run, tiny_model_dir, "--ensemble", tiny_ensemble)),
                       f"in use by another command (pid {os.getpid()} on {socket.gethostname()})")
        one_line_error(run("finalize", "--out", sampled_run), "in use by another command")
    finally:
        lock.unlink()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))  # its process is gone
    assert run(*_sample(sampled_run, tiny_model_dir, "--ensemble", tiny_ensemble)).exit_code == 0
    assert tree_state(sampled_run) == before  # taken over, and removed at the end


def test_a_full_disk_is_one_line_before_and_during_the_run(tiny_model_dir, tmp_path, monkeypatch):
    import errno
    import os
    from collections import namedtuple
    import datasetddpm.io as dio
    import datasetddpm.data.shards as shards
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(dio.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    one_line_error(run(*_sample(tmp_path / "run", tiny_model_dir)), "only 0 MiB free", "MiB needed for the first shard")
    assert not (tmp_path / "run").exists()
    monkeypatch.undo()

    def full(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(shards, "_fsync_dir", full)  # the disk fills while shard 0 is written
    one_line_error(run(*_sample(tmp_path / "run", tiny_model_dir)), "shards/00000/images: cannot write: no space left")
    assert not list((tmp_path / "run").rglob("*.partial"))
    monkeypatch.undo()
    assert run(*_sample(tmp_path / "run", tiny_model_dir)).exit_code == 0  # space again: the same command resumes


def test_read_only_output_is_one_line(tmp_path, monkeypatch):
    import errno
    import os
    import datasetddpm.io as dio

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(dio.tempfile, "mkstemp", read_only)
    with pytest.raises(Exception, match=r"x.json: cannot write: read-only file system"):
        dio.write_json(tmp_path / "x.json", {})
    assert not (tmp_path / "x.json").exists()


def test_a_mask_without_its_image_is_refused(tiny_dataset, tmp_path):
    folder = tmp_path / "labelled"
    shutil.copytree(tiny_dataset / "real" / "train", folder)
    shutil.copy(folder / "train_00000.npy", folder / "lost.npy")
    one_line_error(run("train-ensemble", "--data", folder, "--out", tmp_path / "e", "--quiet"),
                   "lost.npy: mask with no image: expected lost.png or lost.jpg beside it")
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("name", ["with space", "naïve-données"])
def test_paths_with_spaces_and_non_ascii_work(tiny_dataset, tmp_path, name):
    folder = tmp_path / name / "labelled set"
    shutil.copytree(tiny_dataset / "real" / "train", folder)
    r = run("train-ensemble", "--data", folder, "--out", tmp_path / name / "ens é", "--colour", "--members", 2,
            "--quiet")
    assert r.exit_code == 0, r.output
    r = run("segment", "--images", folder, "--out", tmp_path / name / "masks ü", "--ensemble", tmp_path / name / "ens é",
            "--quiet")
    assert r.exit_code == 0 and len(list((tmp_path / name / "masks ü").glob("*.png"))) == 4, r.output
