"""`reproduce` split for a batch queue (a Slurm job array): `--stop-before sample`, then independent tasks
(`--task-index I --task-count N`) that make their shards of the sample stage, then a plain run that finishes
it. The outputs are those of one plain run."""

import json
import os
import re
import socket
from pathlib import Path

from conftest import one_line_error, run, tree_state
from test_reproduce import TINY

# Two shards of 5 samples: task 0 owns shard 0, task 1 shard 1. One direct-mode seed keeps it short.
SPLIT = (*TINY, "--seeds", "0", "--shard-size", 5)
BEFORE_SAMPLING = ["direct seed 0: train-ensemble", "direct seed 0: evaluate", "DatasetDDPM: annotate",
                   "DatasetDDPM: labeller"]


def _args(data, out, *extra):
    return ("reproduce", "embedded", "--data", data, "--out", out, *SPLIT, *extra)


def _generated(out: Path) -> dict:
    """What the generation stages keep: every sample and mask PNG, the shards' sidecars (the labels' without
    the labeller's hash, which covers its ensemble.json and so its training seconds) and the index."""
    gen = out / "datasetddpm" / "generated"
    files = {str(p.relative_to(gen)): p.read_bytes() for p in sorted((gen / "shards").rglob("*.png"))}
    for sidecar in sorted((gen / "shards").glob("*.json")):
        meta = json.loads(sidecar.read_text())
        meta.pop("labels_hash", None)
        files[sidecar.name] = meta
    files["index.jsonl"] = (gen / "index.jsonl").read_bytes()
    return files


def _stamps(folder: Path) -> dict:
    """(inode, mtime) of every file: an atomic rewrite changes both, even to the same bytes."""
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def _progress(out: Path) -> list[str]:
    return list(json.loads((out / "progress.json").read_text()))


def test_two_batch_tasks_and_a_finishing_run_give_the_outputs_of_one_plain_run(tiny_dataset, tmp_path):
    plain, split = tmp_path / "plain", tmp_path / "split"
    r = run(*_args(tiny_dataset, plain))
    assert r.exit_code == 0, r.output

    r = run(*_args(tiny_dataset, split, "--stop-before", "sample"))
    assert r.exit_code == 0, r.output
    assert "stopped before sample; left: sample, label, finalize, train-deeplab, compare" in r.output
    assert _progress(split) == BEFORE_SAMPLING and not (split / "results.json").exists()

    shards = split / "datasetddpm" / "generated" / "shards"
    for index in (1, 0):  # one after the other, the later index first: the split does not depend on the order
        r = run(*_args(tiny_dataset, split, "--task-index", index, "--task-count", 2))
        assert r.exit_code == 0, r.output
        assert f"task {index} of 2 done" in r.output and "to finish (finalize, train-deeplab, compare)" in r.output
        assert _progress(split) == BEFORE_SAMPLING  # tasks record no progress: the finishing run does
        if index == 1:  # task 1 made and labelled shard 1 only
            assert (shards / "00001.labels.json").is_file() and not (shards / "00000.json").exists()
    assert not list(split.rglob(".datasetddpm.lock*"))

    made = _stamps(shards)
    r = run(*_args(tiny_dataset, split))
    assert r.exit_code == 0, r.output
    assert _stamps(shards) == made  # the tasks' shards are found committed, not made again
    assert _progress(split) == _progress(plain)
    assert _generated(split) == _generated(plain)
    results = [json.loads((out / "results.json").read_text()) for out in (plain, split)]
    assert results[0]["table"] == results[1]["table"]
    assert results[0]["stages"]["DatasetDDPM: finalize"]["kept"] == results[1]["stages"]["DatasetDDPM: finalize"]["kept"] == 9


def test_wrong_combinations_are_refused_with_one_line_and_write_nothing(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    one_line_error(run(*_args(tiny_dataset, out, "--task-index", 0, "--task-count", 2)),
                   "--task-count", "stages before sampling are not done", "--stop-before sample")
    one_line_error(run(*_args(tiny_dataset, out, "--task-index", 0, "--task-count", 2, "--stop-before", "sample")),
                   "--stop-before", "not with --task-index/--task-count")
    one_line_error(run(*_args(tiny_dataset, out, "--stop-before", "deeplab")), "--stop-before", "deeplab",
                   "train-deeplab")
    one_line_error(run(*_args(tiny_dataset, out, "--task-index", 2, "--task-count", 2)), "--task-index", "[0, 1]")
    one_line_error(run(*_args(tiny_dataset, out, "--shard-size", 7)), "--shard-size", "multiple of --batch-size (5)")
    # A Slurm array's variables make this command task 1 of 2, as they do for `sample`
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    one_line_error(run(*_args(tiny_dataset, out)), "--task-count", "stages before sampling are not done")
    one_line_error(run(*_args(tiny_dataset, out, "--stop-before", "sample")), "--stop-before", "task 1 of 2")
    assert tree_state(tmp_path) == {}


def test_the_dry_run_of_a_task_shows_its_part_and_writes_nothing(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run(*_args(tiny_dataset, tmp_path / "out", "--task-index", 1, "--task-count", 2, "--dry-run"))
    assert r.exit_code == 0, r.output
    for stage, state in (("DatasetDDPM: labeller", "first"), ("DatasetDDPM: sample", "task 1"),
                         ("DatasetDDPM: label", "task 1"), ("DatasetDDPM: finalize", "later"), ("compare", "later")):
        assert re.search(rf"^  {re.escape(stage)} +{state}  ", r.output, re.MULTILINE), (stage, r.output)
    assert "task 1 of 2: 1 of 2 shard(s) (5 of 10 samples)" in r.output
    assert "'first': to be done before any task starts" in r.output and "--stop-before sample" in r.output
    assert tree_state(tmp_path) == {}


def test_a_plain_run_waits_for_the_tasks_part_locks(tiny_dataset, tmp_path):
    """While a task holds its part of `--out`, the finishing run is refused (it would make that task's shards)."""
    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".datasetddpm.lock.task-1"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))  # task 1, alive
    before = tree_state(out)
    one_line_error(run(*_args(tiny_dataset, out, "--stop-before", "sample")), "task-1", "wait for them to finish")
    assert tree_state(out) == before


def test_the_shard_size_keeps_existing_runs_keys_at_its_default():
    """Runs made before --shard-size existed stored no shard_size: at the default (given or not) the key is theirs."""
    from datasetddpm.reproduce import ReproduceConfig
    before = ReproduceConfig(preset="embedded", out="x", batch_size=5).key()
    assert "shard_size" not in before
    assert ReproduceConfig(preset="embedded", out="x", batch_size=5, shard_size=500).key() == before
    assert ReproduceConfig(preset="embedded", out="x", batch_size=5, shard_size=5).key() == {**before, "shard_size": 5}
    assert ReproduceConfig(preset="embedded", out="x", batch_size=5, shard_size=5).num_shards == 55_556 // 5 + 1
