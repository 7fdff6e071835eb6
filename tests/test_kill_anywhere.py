"""Kill anywhere: SIGKILL a command at its N-th atomic write (the temporary file written, not yet renamed),
rerun it, and the folder must end byte-identical to an uninterrupted run's, temporary files included.

Two stated exceptions: timing fields ("seconds", ...) in logs are set to 0 before comparing, and in a
command's `<command>.args.yaml` the folder the case runs in (each case has its own) reads "<folder>".
Slow (a few minutes): `make test-slow`.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
TIMING = {"seconds", "seconds_total", "wall_seconds"}
POINTS = 10


def _normalised(value):
    if isinstance(value, dict):
        return {k: 0 if k in TIMING else _normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


def _tree(root):
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_dir():
            out[key] = None
        elif p.suffix == ".jsonl":
            out[key] = [_normalised(json.loads(line)) for line in p.read_text().splitlines()]
        elif p.suffix == ".json":
            out[key] = _normalised(json.loads(p.read_text()))
        elif p.name.endswith(".args.yaml"):
            out[key] = p.read_text().replace(str(root), "<folder>")
        else:
            out[key] = p.read_bytes()
    return out


def _cli(args, env=None):
    return subprocess.run([sys.executable, "-m", "datasetddpm", *map(str, args)], env={**os.environ, **(env or {})},
                          capture_output=True, text=True)


def _writes(args, tmp_path):
    log = tmp_path / "writes.log"
    log.unlink(missing_ok=True)
    done = _cli(args, {"DATASETDDPM_WRITES_LOG": str(log)})
    assert done.returncode == 0, done.stderr
    return len(log.read_text().splitlines())


def _kill_matrix(tmp_path, setup, command):
    """setup(dir) prepares the folder; command(dir) is the argument list of the command under test."""
    reference = tmp_path / "reference"
    setup(reference)
    n = _writes(command(reference), tmp_path)
    expected = _tree(reference)
    points = sorted({max(1, round(i * n / POINTS)) for i in range(1, POINTS + 1)})
    assert len(points) >= min(POINTS, n)
    for at in points:
        work = tmp_path / f"killed_{at}"
        setup(work)
        killed = _cli(command(work), {"DATASETDDPM_KILL_AT_WRITE": str(at)})
        assert killed.returncode == -9, (at, killed.stderr[-500:])
        resumed = _cli(command(work))
        assert resumed.returncode == 0, (at, resumed.stderr[-1000:])
        got = _tree(work)
        assert got.keys() == expected.keys(), (at, set(got) ^ set(expected))
        assert got == expected, (at, [k for k in got if got[k] != expected[k]])
        shutil.rmtree(work)
    return n


def _sample_args(out, model, ensemble=None):
    args = ["sample", "--out", out, "--n", 12, "--model", model, "--sampling-steps", 2, "--batch-size", 2,
            "--shard-size", 2, "--threads", 1, "--quiet"]
    return args + (["--ensemble", ensemble] if ensemble else [])


def test_sample_with_labels(tiny_model_dir, tiny_ensemble, tmp_path):
    assert _kill_matrix(tmp_path, lambda d: None, lambda d: _sample_args(d / "run", tiny_model_dir, tiny_ensemble)) >= 10


def test_label(tiny_model_dir, tiny_ensemble, tmp_path):
    def setup(d):
        assert _cli(_sample_args(d / "run", tiny_model_dir)).returncode == 0
    assert _kill_matrix(tmp_path, setup, lambda d: ["label", "--out", d / "run", "--ensemble", tiny_ensemble,
                                                   "--threads", 1, "--quiet"]) >= 10


def test_finalize(tiny_model_dir, tiny_ensemble, tmp_path):
    def setup(d):
        assert _cli(_sample_args(d / "run", tiny_model_dir, tiny_ensemble)).returncode == 0
    _kill_matrix(tmp_path, setup, lambda d: ["finalize", "--out", d / "run"])


def test_train_deeplab(tiny_model_dir, tiny_ensemble, tiny_dataset, tmp_path):
    def setup(d):
        assert _cli(_sample_args(d / "run", tiny_model_dir, tiny_ensemble)).returncode == 0
        assert _cli(["finalize", "--out", d / "run"]).returncode == 0
    assert _kill_matrix(tmp_path, setup, lambda d: ["train-deeplab", "--run", d / "run", "--val", tiny_dataset, "--out",
                                                   d / "deeplab", "--epochs", 3, "--batch-size", 2, "--threads", 1,
                                                   "--quiet"]) >= 10


def test_train_ddpm(tmp_path):
    command = ["train-ddpm", "--steps", 6, "--checkpoint-every", 1, "--pool-size", 16, "--batch-size", 4,
               "--channels", "16,32,32", "--threads", 1, "--device", "cpu", "--quiet"]
    assert _kill_matrix(tmp_path, lambda d: None, lambda d: [*command, "--out", d / "ddpm"]) >= 10


def test_train_ensemble(tiny_dataset, tmp_path):
    _kill_matrix(tmp_path, lambda d: None, lambda d: ["train-ensemble", "--data", tiny_dataset, "--out", d / "ens",
                                                     "--members", 2, "--threads", 1, "--device", "cpu", "--quiet"])


def test_train_ddpm_killed_inside_a_safetensors_write(tmp_path):
    """SIGKILL halfway through writing a safetensors file (its temporary half written): the rerun sweeps that
    temporary, and a `.tmpXXXXXX` such as safetensors' own `save_file` leaves beside its target, and ends
    byte-identical to an uninterrupted run."""
    command = ["train-ddpm", "--steps", 4, "--checkpoint-every", 1, "--pool-size", 16, "--batch-size", 4,
               "--channels", "16,32,32", "--threads", 1, "--device", "cpu", "--quiet"]
    assert _cli([*command, "--out", tmp_path / "reference" / "ddpm"]).returncode == 0
    expected = _tree(tmp_path / "reference")
    for at in (1, 4, 7):
        work = tmp_path / f"killed_{at}"
        killed = _cli([*command, "--out", work / "ddpm"], {"DATASETDDPM_KILL_IN_TENSORS_WRITE": str(at)})
        assert killed.returncode == -9, (at, killed.stderr[-500:])
        half = [p for p in (work / "ddpm").rglob(".*.tmp")]
        assert half and all(p.stat().st_size > 0 for p in half), at  # killed with a temporary half written
        (half[0].parent / ".tmpAb3dE9").write_bytes(bytes(4096))
        resumed = _cli([*command, "--out", work / "ddpm"])
        assert resumed.returncode == 0, (at, resumed.stderr[-1000:])
        got = _tree(work)
        assert got.keys() == expected.keys(), (at, set(got) ^ set(expected))
        assert got == expected, (at, [k for k in got if got[k] != expected[k]])
