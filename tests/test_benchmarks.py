import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["labelling_head", "segment_embedded", "ensemble_training_memory", "lsun_direct_memory", "shard_write",
         "writer_overlap", "parent_memory"]


def bare_gpu_machine_env(tmp_path: Path) -> dict:
    """The lent GPU machine before the Makefile's device-wheels are installed there, as far as imports go:
    albumentations cannot be imported, and the GPU suite (no augmentation) must run without it."""
    import os
    blocker = tmp_path / "bare" / "albumentations"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("albumentations is not on the GPU machine")\n')
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(ROOT)])}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """`benchmarks/run.py --quick` once, into a temporary folder (never the recorded results)."""
    out = tmp_path_factory.mktemp("bench")
    recorded = {p.name: p.read_bytes() for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--threads", "1",
                           "--out", str(out)], check=False, capture_output=True, text=True, cwd=ROOT,
                          timeout=600)  # about a minute; a hang fails in 10 min, not 30
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {p.name: p.read_bytes() for p in (ROOT / "benchmarks" / "results").glob("*.json")} == recorded
    return {name: json.loads((out / f"{name}.json").read_text()) for name in NAMES}


# Each benchmark's correctness is judged here from the figures and digests it reports, with this file's own
# bounds: never from the `check.passed` flag the benchmark sets for itself.


def test_every_quick_benchmark_ran_at_its_quick_size(quick_results):
    assert all(quick_results[name]["quick"] is True for name in NAMES)


@pytest.mark.parametrize("name", ["labelling_head", "segment_embedded"])
def test_fused_labels_equal_reference_labels(quick_results, name):
    """Every pixel is counted once (equal + differing = all), and the labels differ from the reference path's
    only at float near-ties: at most 1 pixel in 1000, with the JS scores within 1e-3."""
    check = quick_results[name]["check"]
    assert check["pixels"] > 0
    if "labels_equal" in check:
        assert check["labels_equal"] + check["labels_differing"] == check["pixels"]
    assert check["labels_differing"] <= check["pixels"] // 1000  # identical but for float near-ties
    assert check["all_differing_are_near_ties_lt_1e-3"] and check["js_max_abs_diff"] < 1e-3


def test_lsun_direct_memory_labels_agree(quick_results):
    assert quick_results["lsun_direct_memory"]["check"]["label_agreement"] >= 0.999


def test_training_memory_runs_the_real_steps_on_both_bank_dtypes(quick_results):
    """The gathered features match the materialised ones: float32 to 1e-5; float16 within its rounding (2^-11
    of the largest value involved, the bound the benchmark reports beside the error, and under 5e-3) and visibly
    coarser than float32 -- a bank that silently kept float32 would show float32's error on the float16 side."""
    ours = quick_results["ensemble_training_memory"]["ours"]
    assert {o["bank_dtype"] for o in ours.values()} == {"float16", "float32"}
    assert all(o["steps"] == 30 and o["check"]["pixels"] > 0 for o in ours.values())
    half, full = ours["float16"]["check"], ours["float32"]["check"]
    assert full["max_abs_diff"] < 1e-5
    assert half["max_abs_diff"] <= half["allowed"] and half["max_abs_diff"] < 5e-3
    assert half["max_abs_diff"] > 10 * full["max_abs_diff"] and half["max_abs_diff"] > 1e-6


def _seeded_images_sha256(n: int, shard: int = 500) -> str:
    """The images shard_write's writer is given, regenerated from its seed (per shard: images, masks,
    uncertainties drawn from one default_rng(0)), hashed in id order."""
    import hashlib
    import numpy as np
    rng, h = np.random.default_rng(0), hashlib.sha256()
    for k in range((n + shard - 1) // shard):
        m = min(shard, n - k * shard)
        h.update(rng.integers(0, 256, (m, 32, 32, 3), dtype=np.uint8).tobytes())
        rng.integers(0, 7, (m, 32, 32), dtype=np.uint8), rng.random(m)
    return h.hexdigest()


def test_shard_write_stores_every_pair_it_was_given(quick_results):
    """What the shards read back is every id in order and exactly the seeded random images written."""
    r = quick_results["shard_write"]
    for size in ("small", "large"):
        n, stored = r["ours"][f"n_{size}"], r["read_back"][size]
        assert stored["pairs"] == n and stored["ids_in_order"] is True
        assert stored["images_sha256"] == _seeded_images_sha256(n)


def _shards_sha256(run) -> str:
    """One sha256 over every file under RUN/shards: its path (from RUN) and its bytes' sha256, in path order."""
    import hashlib
    h = hashlib.sha256()
    for p in sorted((run / "shards").rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(run)).encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def test_writer_overlap_hides_write_time_and_keeps_the_bytes(quick_results, tmp_path):
    """Recomputed from the timings: the write-behind run is faster than the serial one by a real share of
    the injected writer time. The bytes: both runs' shards equal those `sample` itself writes for the same
    run (made here with the CLI: the embedded model, DDIM, the benchmark's sizes, one thread)."""
    from conftest import run
    r = quick_results["writer_overlap"]
    serial, behind = r["seconds"]["serial"], r["seconds"]["write_behind"]
    assert (serial - behind) / r["injected_write_seconds"] > 0.2
    assert r["injected_write_seconds"] == pytest.approx(r["shards"] * r["injected_write_seconds_per_shard"], abs=0.02)
    made = run("sample", "--out", tmp_path / "run", "--model", "embedded", "--n", r["samples"], "--sampling-steps",
               r["sampling_steps"], "--batch-size", r["batch_size"], "--shard-size", r["batch_size"], "--threads", 1,
               "--device", "cpu", "--quiet")
    assert made.exit_code == 0, made.output
    cli = _shards_sha256(tmp_path / "run")
    assert r["shards_sha256"] == {"serial": cli, "write_behind": cli}


def test_parent_validation_adds_almost_nothing_to_the_imports(quick_results):
    """Both paths found the same image side and feature count: the quick model's 32 px, and its blocks 1, 4 at
    two steps: 2 x (32 + 16) = 96 features (block 1 is a 32-channel decoder block of the (16, 32, 32) UNet, block 4
    a 16-channel one)."""
    r = quick_results["parent_memory"]
    assert r["validation"]["load_on_cpu"] == r["validation"]["meta_validation"] == {"side": 32, "features": 96}
    assert r["features_per_pixel"] == 96
    above = r["above_imports_mb"]
    assert above["meta_validation"] < 64 and above["meta_validation"] <= above["load_on_cpu"] + 8


GPU_SUITE_DRIVER = """
import json, sys
sys.path.insert(0, "benchmarks")
import gpu
calls = []

def spy(owner, name):
    real = getattr(owner, name)
    def wrapped(*args, **kwargs):
        cfg = args[1] if name == "sample_run" else args[3] if name == "train_deeplab_run" else None
        calls.append({"fn": name, "cfg": cfg.__dict__ if cfg is not None else None,
                      "kwargs": {k: str(v) for k, v in kwargs.items()}})
        return real(*args, **kwargs)
    setattr(owner, name, wrapped)

for owner, name in ((gpu.generate, "sample_run"), (gpu.generate, "label_run"), (gpu.workflows, "train_deeplab_run")):
    spy(owner, name)
result = gpu.run(True, "cpu", 600)
print(json.dumps({"calls": calls, "result": result}))
"""


def _cli_defaults(command: str) -> dict:
    import typer
    from datasetddpm.cli.main import get_app
    return {p.name: p.default for p in typer.main.get_command(get_app()).commands[command].params}


def test_gpu_suite_times_the_commands_own_functions_with_their_defaults(tmp_path):
    """The suite runs what `sample`, `label` and `train-deeplab` run (spied on, on the bare GPU machine's
    imports), with the CLI's own defaults read from the app; --quick shortens DDIM to 5 steps only."""
    proc = subprocess.run([sys.executable, "-c", GPU_SUITE_DRIVER], capture_output=True, text=True, cwd=ROOT,
                          timeout=900, env=bare_gpu_machine_env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    calls, result = out["calls"], out["result"]
    assert [c["fn"] for c in calls] == ["sample_run", "label_run", "train_deeplab_run"]
    sample, deeplab = _cli_defaults("sample"), _cli_defaults("train-deeplab")
    cfg = calls[0]["cfg"]
    assert (cfg["batch_size"], cfg["shard_size"], cfg["sampler"]) == (sample["batch_size"], sample["shard_size"],
                                                                       sample["sampler"])
    assert cfg["sampling_steps"] == 5 and sample["sampling_steps"] == 50
    assert calls[0]["kwargs"]["precision"] == "fp32" and calls[1]["kwargs"]["precision"] == "fp32"
    # train-deeplab's flags default to None: no --preset means DeepLabTrainConfig's own defaults.
    from dataclasses import asdict
    from datasetddpm.segmenters.train_deeplab import DeepLabTrainConfig
    assert deeplab["preset"] is None and deeplab["batch_size"] is None
    trained = calls[2]["cfg"]
    expected = {**asdict(DeepLabTrainConfig()), "epochs": 1, "augment": False}
    assert {k: trained[k] for k in expected} == expected
    assert result["device"] == "cpu" and result["train_deeplab"]["ok"] is True
    row = result["settings"][0]
    assert row["setting"] == "fp32" and row["samples"] == 50  # its projection: test_gpu_suite_projection_hand_computed


def test_gpu_suite_projection_hand_computed():
    """50,000 kept pairs are 55,556 samples before the 10 % drop: at 1 sample/s on 4 GPUs, 13,889 s."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu import peak_tflops, projection_hours
    assert projection_hours(1.0, 4) == pytest.approx(3.858, abs=0.001)
    assert projection_hours(2.5, 1) == pytest.approx(6.173, abs=0.001)
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.4 and peak_tflops("cpu") is None


def test_gpu_ddpm_retraining_quick_mode_trains_judges_and_records_a_resumable_command(tmp_path):
    """training/gpu_ddpm.py on tiny settings: every recipe trains, is judged on samples, and its recorded
    `train-ddpm` command is the run's own (rerun on the folder, it finds the run complete: same hash)."""
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, str(ROOT / "training" / "gpu_ddpm.py"), "--quick", "--device", "cpu",
                           "--minutes", "0.05", "--out", str(out), "--work", str(work)], capture_output=True,
                          text=True, cwd=ROOT, timeout=900, env=bare_gpu_machine_env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((out / "gpu_ddpm.json").read_text())
    assert set(result["recipes"]) == {"embedded-b128", "wide-attn8-b128"} and result["device_name"] == "cpu"
    # what a lent machine sends back: at most 8 plain files, no folders
    assert len(list(out.iterdir())) <= 8 and all(p.is_file() for p in out.iterdir())
    for name, r in result["recipes"].items():
        log = [json.loads(line) for line in (out / f"{name}.train_log.jsonl").read_text().splitlines()]
        assert (out / f"{name}.safetensors").read_bytes() == (work / name / "ema" / "model.safetensors").read_bytes()
        assert log[-1]["step"] == r["steps"] >= 2 and r["final_loss"] == log[-1]["loss"]
        assert set(r["samples"]) == {"ddim-50", "ddim-20"}
        assert 0 <= r["samples"]["ddim-50"]["samples"]["flip_consistency_miou"] <= 1
        state = (work / name / "train_state.safetensors").read_bytes()
        args = r["command"].replace("<out>", str(work / name)).replace("--device cuda", "--device cpu").split()[1:]
        again = subprocess.run([sys.executable, "-m", "datasetddpm", *args, "--quiet"], capture_output=True,
                               text=True, cwd=ROOT, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert (work / name / "train_state.safetensors").read_bytes() == state
