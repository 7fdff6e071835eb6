import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["labelling_head", "segment_embedded", "ensemble_training_memory", "lsun_direct_memory", "shard_write"]


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


@pytest.mark.parametrize("name", NAMES)
def test_quick_benchmark_correctness_checks_pass(quick_results, name):
    result = quick_results[name]
    assert result["quick"] is True and result["check"]["passed"] is True


def test_fused_labels_equal_reference_labels(quick_results):
    check = quick_results["labelling_head"]["check"]
    assert check["labels_differing"] <= check["pixels"] // 1000  # identical but for float near-ties
    assert check["all_differing_are_near_ties_lt_1e-3"] and check["js_max_abs_diff"] < 1e-3


def test_training_memory_runs_the_real_steps_on_both_bank_dtypes(quick_results):
    ours = quick_results["ensemble_training_memory"]["ours"]
    assert {o["bank_dtype"] for o in ours.values()} == {"float16", "float32"}
    assert all(o["steps"] == 30 and o["check"]["passed"] for o in ours.values())
    assert ours["float16"]["bank_mb"] * 2 == pytest.approx(ours["float32"]["bank_mb"], rel=0.01)


def test_gpu_suite_quick_mode_runs_every_stage_on_cpu(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--quick", "--device", "cpu",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env=bare_gpu_machine_env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "gpu_quick.json").read_text())
    assert result["quick"] is True and result["device"] == "cpu" and result["device_name"] == "cpu"
    rows = {r["variant"]: r for r in result["throughput"]}
    assert set(rows) == {"fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile"}
    for name in ("fp32", "bf16", "bf16+channels_last"):
        assert rows[name]["samples"] == 2 and rows[name]["samples_per_second"] > 0, rows[name]
    best = max(r["samples_per_second"] for r in rows.values() if "samples_per_second" in r)
    projection = result["projection"]
    assert projection["hours"] == pytest.approx(50_000 / 0.9 / (best * 4) / 3600, abs=0.01)
    assert result["end_to_end"]["ok"] is True and result["end_to_end"]["sample_seconds"] > 0


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
