"""`--dry-run` estimates against the runs they estimate, on the embedded default.

For each of `sample`, `label` and `train-deeplab`: the command's dry run, then the command itself, both
as a user runs them (`python -m datasetddpm ... [--dry-run]`, each in a fresh process, so the run's
imports, model loading, shard writes and checkpoints are all in its measured wall time). Reported per
command: the estimate (the exact seconds the dry run prints), the measured seconds, their ratio, how
long the dry run took, and what the estimate assumed (batch, steps timed, parts). Check: every ratio in
[0.7, 1.3] and no dry run wrote a file; --quick records the ratios without judging them (its runs last
seconds, mostly a fresh process's start-up).

Sizes: 200 samples with DDIM-50 at the CLI's batch (50) and shard (500) defaults; labelled by a
10-member ensemble on the embedded preset's features (960 per pixel; random weights: the time does
not depend on them); finalized with the defaults (180 pairs kept); `train-deeplab --preset embedded`
(U-Net / ResNet-18, input x2, batch 8) for 2 epochs with the 20 real images mixed in at 10 % and the
epoch chosen on them. The machine may be shared: the load average at start and end is recorded.

    .venv/bin/python benchmarks/estimates.py [--quick] [--threads N] [--out DIR]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_utils as bu  # first: sets the OpenMP wait policy before torch loads

FULL = dict(n=200, batch_size=50, shard_size=500, sampling_steps=50, epochs=2)
QUICK = dict(n=16, batch_size=8, shard_size=8, sampling_steps=5, epochs=1)
RATIO_RANGE = (0.7, 1.3)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and mtime: what a dry run must leave as it was."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _cli(*args) -> tuple[float, str]:
    """(seconds, stdout) of `python -m datasetddpm ARGS` in a fresh process; its failure stops the benchmark."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(bu.ROOT)}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "datasetddpm", *map(str, args)], capture_output=True, text=True,
                          cwd=bu.ROOT, env=env)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        command = " ".join(map(str, args))
        raise RuntimeError(f"datasetddpm {command} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def estimate(output: str) -> tuple[float, str]:
    """(seconds, what was timed) from a dry run's `estimated time` line: `4 min (276 s in all; TIMED)` from
    2 minutes on, `45 s (TIMED)` below."""
    line = next(line for line in output.splitlines() if line.strip().startswith("estimated time"))
    found = re.search(r"\((\d+) s in all; (.*)\)$", line) or re.search(r"estimated time\s+(\d+) s \((.*)\)$", line)
    return float(found.group(1)), found.group(2)


def _rows(output: str) -> dict[str, str]:
    rows = {}
    for line in output.splitlines()[1:]:
        key, _, value = line.strip().partition("  ")
        rows[key.strip()] = value.strip()
    return rows


def _ensemble(out: Path) -> Path:
    """A 10-member ensemble on the embedded preset's features, random weights (labelling costs the same)."""
    from datasetddpm.ensemble.model import EnsembleConfig, PixelEnsemble, save_ensemble
    from datasetddpm.generators.loading import load_generator
    from datasetddpm.presets import EMBEDDED
    dim = sum(load_generator("embedded", "meta").feature_channels(EMBEDDED.features))
    cfg = EnsembleConfig(in_dim=dim, num_classes=EMBEDDED.num_classes, members=10, model="embedded",
                         class_names=EMBEDDED.class_names, features=EMBEDDED.features.to_dict(),
                         resolution=EMBEDDED.resolution)
    save_ensemble(out, PixelEnsemble(cfg, seed=0).eval())
    return out


def _compare(root: Path, args: tuple) -> tuple[dict, bool]:
    """The command's dry run, then the command: (its row, whether the dry run left `root` as it was)."""
    before = _tree(root)
    dry_seconds, output = _cli(*args, "--dry-run")
    untouched = _tree(root) == before
    estimated, timed = estimate(output)
    measured, _ = _cli(*args)
    rows = _rows(output)
    return {"estimated_seconds": estimated, "measured_seconds": round(measured, 1),
            "ratio": round(estimated / measured, 3), "dry_run_seconds": round(dry_seconds, 1), "assumed": timed,
            "parts": rows.get("time by part", ""), "plan": {k: v for k, v in rows.items()
                                                            if k not in ("time by part", "estimated time")}}, untouched


def _measure(root: Path, size: dict, threads: int) -> tuple[dict, bool]:
    from datasetddpm.data.folders import write_procedural_dataset
    data, run, ens, dl = root / "data", root / "run", _ensemble(root / "ens"), root / "deeplab"
    write_procedural_dataset(data, train=20, test=0)
    common = ("--device", "cpu", "--threads", threads, "--quiet")
    rows, clean = {}, []
    for name, args in (("sample", ("--out", run, "--model", "embedded", "--n", size["n"], "--sampler", "ddim",
                                   "--sampling-steps", size["sampling_steps"], "--batch-size", size["batch_size"],
                                   "--shard-size", size["shard_size"])),
                       ("label", ("--out", run, "--ensemble", ens)),
                       ("train-deeplab", ("--run", run, "--val", data, "--out", dl, "--preset", "embedded",
                                          "--epochs", size["epochs"], "--real", data, "--real-fraction", 0.1))):
        rows[name], untouched = _compare(root, (name, *args, *common))
        clean.append(untouched)
        if name == "label":
            _cli("finalize", "--out", run)
    return rows, all(clean)


def run(quick: bool = False, threads: int = 2) -> dict:
    size = QUICK if quick else FULL
    result = {**bu.header(threads), "benchmark": "estimates", "sizes": size,
              "command": "benchmarks/estimates.py" + (" --quick" if quick else "") + f" --threads {threads}"}
    with tempfile.TemporaryDirectory(prefix="estimates-") as tmp:
        rows, clean = _measure(Path(tmp), size, threads)
    within = all(RATIO_RANGE[0] <= r["ratio"] <= RATIO_RANGE[1] for r in rows.values())
    result.update(commands=rows, load_average_at_end=[round(x, 2) for x in os.getloadavg()],
                  check={"dry_runs_wrote_nothing": clean, "ratio_range": list(RATIO_RANGE),
                         "ratios_within_range": within, "ratios_judged": not quick,
                         "passed": clean and (within or quick)})
    return result


if __name__ == "__main__":
    bu.standalone("estimates", run, "16 samples, DDIM-5, 1 DeepLab epoch (CI; ratios not judged)")
