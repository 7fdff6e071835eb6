"""What the recommended recipe costs end to end: its commands, run as a user runs them, timed.

On the embedded default (32 px, the shipped DDPM): `make-dataset`, `train-ensemble`, then the recipe's own
commands (datasetddpm/recipes.py, the same lines README.md and docs/custom_data.md show) with the run
folders under --work. Each command is a separate `python -m datasetddpm` process; its wall time is
recorded when it finishes, so a killed benchmark rerun with the same --work skips the finished commands
(which resume themselves) and keeps their times. Reported: seconds per command, the total, the mIoU of
direct mode and of the segmenter on the 200 test images (compare.json), the load averages as each command ended. Each command's CPU time (user + system) is recorded
beside its wall time: on a shared machine the wall time grows with the load, the CPU time much less.

    .venv/bin/python benchmarks/recipe_cost.py --recipe cpu --work runs/recipe_cost [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import bench_utils as bu

from datasetddpm.recipes import RECIPES


def _steps(recipe, work: Path, threads: int) -> list[tuple[str, list[str]]]:
    paths = {"model": "embedded", "data": str(work / "data"), "ensemble": str(work / "ensemble"),
             "run": str(work / "generated"), "segmenter": str(work / "segmenter"), "compare": str(work / "compare")}
    setup = [("make-dataset", ["make-dataset", "--out", paths["data"]]),
             ("train-ensemble", ["train-ensemble", "--data", paths["data"], "--out", paths["ensemble"]])]
    steps = setup + [(args[0], args) for args in recipe.commands(paths)]
    # every command that computes takes --threads and --quiet; make-dataset and finalize only write files
    return [(name, args + (["--threads", str(threads), "--quiet"] if name not in ("make-dataset", "finalize") else []))
            for name, args in steps]


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far: unlike wall time, it barely
    moves when other work shares the machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(recipe_name: str, work: Path, threads: int) -> dict:
    recipe = RECIPES[recipe_name]
    work.mkdir(parents=True, exist_ok=True)
    times_file = work / "seconds.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {"wall": {}, "cpu": {}, "load": {}}
    seconds, cpu, load = times["wall"], times["cpu"], times["load"]
    start = bu.header(threads)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "NO_ALBUMENTATIONS_UPDATE": "1"}
    for name, args in _steps(recipe, work, threads):
        if name in seconds:
            continue
        t, used = time.perf_counter(), _children_cpu()
        subprocess.run([sys.executable, "-m", "datasetddpm", *args], check=True, env=env, cwd=bu.ROOT)
        seconds[name] = round(time.perf_counter() - t, 1)
        cpu[name] = round(_children_cpu() - used, 1)
        load[name] = [round(x, 2) for x in os.getloadavg()]  # 1, 5, 15 min load averages as the command ended
        times_file.write_text(json.dumps(times, indent=2))
    methods = json.loads((work / "compare" / "compare.json").read_text())["methods"]
    return {**start, "benchmark": "recipe_cost", "recipe": recipe_name,
            "settings": {k: v for k, v in vars(recipe).items() if k not in ("name", "measured_by")},
            "samples": recipe.samples,
            "commands": ["datasetddpm " + " ".join(args) for _, args in _steps(recipe, Path("WORK"), threads)],
            "seconds": seconds, "total_seconds": round(sum(seconds.values()), 1),
            "cpu_seconds": cpu, "total_cpu_seconds": round(sum(cpu.values()), 1), "load_average_after": load,
            "miou": {m: round(r["miou"], 4) for m, r in methods.items()},
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "command": "python benchmarks/recipe_cost.py " + " ".join(sys.argv[1:])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cpu")
    parser.add_argument("--work", default="runs/recipe_cost", help="run folders (resumable)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="folder for the JSON (default benchmarks/results)")
    args = parser.parse_args()
    result = run(args.recipe, Path(args.work), args.threads)
    print(bu.write_result(f"recipe_{args.recipe}", result, args.out))


if __name__ == "__main__":
    main()
