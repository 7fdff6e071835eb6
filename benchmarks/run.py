"""Run every benchmark; each runs its baseline and ours side by side in one process (training
memory: one process per configuration) and reports the ratio, peak memory and a correctness check.

    .venv/bin/python benchmarks/run.py [--quick] [--only NAME ...] [--out DIR] [--threads N]

Full runs write benchmarks/results/NAME.json (the recorded figures). --quick uses CI sizes (a few
minutes in all on a busy 2-core machine) and writes to a temporary folder unless --out is given,
never over the recorded results. Exit status 1 if any correctness check failed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time

import bench_utils as bu  # first: it sets the OpenMP wait policy before torch loads

BENCHMARKS = ["labelling_head", "segment_embedded", "ensemble_training_memory", "lsun_direct_memory", "shard_write",
              "writer_overlap", "parent_memory"]


def summary_row(name: str, r: dict) -> str:
    if name == "labelling_head":
        s, p = r["seconds_per_image"], r["peak_rss_mb"]
        cols = f"{s['baseline']:.2f} s/img", f"{s['ours']:.2f} s/img", f"{p['baseline']:.0f} / {p['ours']:.0f} MB"
    elif name == "segment_embedded":
        s, p = r["seconds_per_image"], r["peak_rss_mb"]
        cols = f"{1000 * s['old']:.0f} ms/img", f"{1000 * s['new']:.0f} ms/img", f"{p['old']:.0f} / {p['new']:.0f} MB"
    elif name == "ensemble_training_memory":
        o, ref = r["ours"], r["reference_computed"]
        cols = (f"{ref['peak_gb_at_least']:.3g} GB (computed)",
                f"fp16 {o['float16']['peak_rss_mb'] / 1024:.2f} GB, {o['float16']['steps_per_s']:.2f} steps/s",
                f"fp16 {o['float16']['peak_rss_mb']:.0f} / fp32 {o['float32']['peak_rss_mb']:.0f} MB")
        return f"{name:26} {cols[0]:>22} {cols[1]:>34} {r['ratio']['reference_peak_over_ours_float16']:8.1f}x " \
               f"{cols[2]:>26}  {'ok' if r['check']['passed'] else 'FAILED'}"
    elif name == "lsun_direct_memory":
        b, o = r["reference"], r["ours"]
        cols = f"{b['peak_rss_mb']:.0f} MB peak", f"{o['peak_rss_mb']:.0f} MB peak, {o['seconds']:.0f} s/img", \
            f"{b['peak_rss_mb']:.0f} / {o['peak_rss_mb']:.0f} MB"
    elif name == "writer_overlap":
        s = r["seconds"]
        cols = f"{s['serial']:.1f} s serial", f"{s['write_behind']:.1f} s, {100 * r['hidden_fraction']:.0f} % hidden", \
            f"{r['peak_rss_mb']:.0f} MB"
    elif name == "parent_memory":
        p, a = r["peak_rss_mb"], r["above_imports_mb"]
        cols = f"+{a['load_on_cpu']:.0f} MB", f"+{a['meta_validation']:.0f} MB", \
            f"{p['load_on_cpu']:.0f} / {p['meta_validation']:.0f} MB"
    else:
        b, o = r["rewrite_baseline"], r["ours"]
        cols = f"x{b['large_over_small']:.2f} per pair", f"x{o['large_over_small']:.2f} per pair", \
            f"{r['peak_rss_mb']:.0f} MB"
    return f"{name:26} {cols[0]:>22} {cols[1]:>34} {r['ratio']:8.1f}x {cols[2]:>26}  " \
           f"{'ok' if r['check']['passed'] else 'FAILED'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--out", help="results folder (default: benchmarks/results; --quick: a temporary one)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()
    out = args.out or (tempfile.mkdtemp(prefix="benchmarks-quick-") if args.quick else str(bu.RESULTS))
    failed, rows = [], []
    for name in args.only or BENCHMARKS:
        t = time.perf_counter()
        result = importlib.import_module(name).run(quick=args.quick, threads=args.threads)
        result["wall_seconds"] = round(time.perf_counter() - t, 1)
        result["quick"] = args.quick
        path = bu.write_result(name, result, out)
        rows.append(summary_row(name, result))
        print(f"{name}: {result['wall_seconds']} s -> {path}", flush=True)
        if not result["check"]["passed"]:
            failed.append(name)
    print(f"\n{'benchmark':26} {'baseline':>22} {'ours':>34} {'ratio':>9} {'peak memory (base/ours)':>26}  check")
    print("\n".join(rows))
    if failed:
        print(f"correctness check FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
