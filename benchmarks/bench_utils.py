"""Shared helpers of the benchmarks: peak memory, machine description, result files."""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from datetime import date
from pathlib import Path

# Import this module before torch. On a shared, oversubscribed machine spinning OpenMP threads take
# the cores their partner threads need: ensemble training steps measured 8x slower here with the
# default (active) policy, for baseline and ours alike. Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout without installing
    sys.path.insert(0, str(ROOT))


def _status_mb(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) / 1024


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM) since start or the last `reset_peak`."""
    return _status_mb("VmHWM")


def reset_peak() -> None:
    """Restart VmHWM at the current RSS (Linux: writing 5 to clear_refs), so two code paths run in
    one process get separate peaks."""
    Path("/proc/self/clear_refs").write_text("5")


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.machine()}, {cpu}, {os.cpu_count()} cores"


def header(threads: int) -> dict:
    return {"date": str(date.today()), "machine": machine(), "torch_threads": threads,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def write_result(name: str, result: dict, out_dir: Path | None) -> Path:
    out_dir = Path(out_dir) if out_dir else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json_dumps(result) + "\n")
    return path


def json_dumps(result: dict) -> str:
    return json.dumps(result, indent=2)


def standalone(name: str, run, quick_help: str) -> None:
    """`python benchmarks/<name>.py [--quick] [--threads N] [--out DIR]`: one benchmark on its own."""
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="folder for the JSON (default benchmarks/results; --quick: print only)")
    args = parser.parse_args()
    result = run(args.quick, args.threads)
    print(json_dumps(result))
    if args.out or not args.quick:
        write_result(name, result, args.out)
