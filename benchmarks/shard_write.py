"""Per-pair cost of writing generated pairs must not grow with N (no rewriting of earlier output).

Writes N random 32-px image/mask pairs through the real shard writer (`ShardStore`: PNG encoding,
sha256, fsync, atomic renames, sidecars) and the global filter's index, for N = 1K and 10K, in one
process, and reports seconds per pair and their ratio. Baseline for comparison, in the same run: the
reference code's pattern of rewriting the whole archive after every batch (one .npz of all pairs so
far), measured on the 1K size only, since it is quadratic.

    .venv/bin/python benchmarks/shard_write.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from datasetddpm.pipeline.finalize import kept_ids
from datasetddpm.pipeline.shards import ShardStore


def write_pairs(root: Path, n: int, shard: int = 500, batch: int = 50) -> float:
    rng = np.random.default_rng(0)
    store = ShardStore(root)
    t = time.perf_counter()
    for k in range((n + shard - 1) // shard):
        ids = list(range(k * shard, min((k + 1) * shard, n)))
        images = rng.integers(0, 256, (len(ids), 32, 32, 3), dtype=np.uint8)
        masks = rng.integers(0, 7, (len(ids), 32, 32), dtype=np.uint8)
        store.write_samples(k, ids, ids, images, "bench")
        store.write_labels(k, ids, masks, rng.random(len(ids)), 7, "bench")
    u = np.concatenate([[s["uncertainty"] for s in store.read_sidecar(k, True)["samples"]]
                        for k in range((n + shard - 1) // shard)])
    kept_ids(np.arange(n), u, 0.1, 50_000)
    return time.perf_counter() - t


def rewrite_archive_baseline(root: Path, n: int, batch: int = 50) -> float:
    rng = np.random.default_rng(0)
    images, masks = [], []
    t = time.perf_counter()
    for _ in range(n // batch):
        images.append(rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8))
        masks.append(rng.integers(0, 7, (batch, 32, 32), dtype=np.uint8))
        np.savez_compressed(root / "samples.npz", images=np.concatenate(images), masks=np.concatenate(masks))
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="N = 200 and 2000 instead of 1K and 10K")
    args = parser.parse_args()
    small, large = (200, 2000) if args.quick else (1000, 10_000)
    tmp = Path(tempfile.mkdtemp())
    try:
        t_small = write_pairs(tmp / "small", small)
        t_large = write_pairs(tmp / "large", large)
        (tmp / "base_small").mkdir()
        (tmp / "base_large").mkdir()
        b_small = rewrite_archive_baseline(tmp / "base_small", small)
        b_large = rewrite_archive_baseline(tmp / "base_large", small * 4)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "date": str(date.today()), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "ours": {"n_small": small, "n_large": large, "ms_per_pair_small": 1000 * t_small / small,
                 "ms_per_pair_large": 1000 * t_large / large, "large_over_small": (t_large / large) / (t_small / small)},
        "rewrite_baseline": {"n_small": small, "n_large": 4 * small, "ms_per_pair_small": 1000 * b_small / small,
                             "ms_per_pair_large": 1000 * b_large / (4 * small),
                             "large_over_small": (b_large / (4 * small)) / (b_small / small)},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    out = Path(__file__).parent / "results" / ("shard_write_quick.json" if args.quick else "shard_write.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
