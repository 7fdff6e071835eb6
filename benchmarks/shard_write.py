"""Per-pair cost of writing generated pairs must not grow with N (no rewriting of earlier output).

Writes N random 32-px image/mask pairs through the real shard writer (`ShardStore`: PNG encoding,
sha256, fsync, atomic renames, sidecars) and the global filter's index, for N = 1K and 10K, in one
process, and reports seconds per pair and their ratio. Baseline for comparison, in the same run: the
reference code's pattern of rewriting the whole archive after every batch (one .npz of all pairs so
far), at 1x and 4x the small size only, since it is quadratic. Check: every pair is committed (the
sidecars list all N ids) and the last shard's images read back bit-identical; the baseline's
archive holds all its pairs.

    .venv/bin/python benchmarks/shard_write.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import bench_utils as bu  # first: sets the OpenMP wait policy before torch loads
import numpy as np

from datasetddpm.pipeline.finalize import kept_ids
from datasetddpm.data.shards import ShardStore


def write_pairs(root: Path, n: int, shard: int = 500, batch: int = 50) -> tuple[float, bool]:
    """Seconds to write n pairs, and whether they all read back (ids, last shard's pixels)."""
    rng = np.random.default_rng(0)
    store = ShardStore(root)
    shards = (n + shard - 1) // shard
    t = time.perf_counter()
    for k in range(shards):
        ids = list(range(k * shard, min((k + 1) * shard, n)))
        images = rng.integers(0, 256, (len(ids), 32, 32, 3), dtype=np.uint8)
        masks = rng.integers(0, 7, (len(ids), 32, 32), dtype=np.uint8)
        store.write_samples(k, ids, ids, images, "bench")
        store.write_labels(k, ids, masks, rng.random(len(ids)), 7, "bench")
    u = np.concatenate([[s["uncertainty"] for s in store.read_sidecar(k, True)["samples"]] for k in range(shards)])
    kept_ids(np.arange(n), u, 0.1, 50_000)
    seconds = time.perf_counter() - t
    committed = [s["id"] for k in range(shards) for s in store.read_sidecar(k)["samples"]]
    last_ids, last_images = store.read_images(shards - 1)
    return seconds, committed == list(range(n)) and last_ids == ids and np.array_equal(last_images, images)


def read_back(root: Path, n: int, shard: int = 500) -> dict:
    """What the shards hold, read through the store: the committed ids and one sha256 over every image's
    pixels in id order (tests regenerate the seeded pairs and compare)."""
    store, h, ids = ShardStore(root), hashlib.sha256(), []
    for k in range((n + shard - 1) // shard):
        shard_ids, images = store.read_images(k)
        ids += shard_ids
        h.update(np.ascontiguousarray(images).tobytes())
    return {"pairs": len(ids), "ids_in_order": ids == list(range(n)), "images_sha256": h.hexdigest()}


def rewrite_archive_baseline(root: Path, n: int, batch: int = 50) -> tuple[float, bool]:
    rng = np.random.default_rng(0)
    images, masks = [], []
    t = time.perf_counter()
    for _ in range(n // batch):
        images.append(rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8))
        masks.append(rng.integers(0, 7, (batch, 32, 32), dtype=np.uint8))
        np.savez_compressed(root / "samples.npz", images=np.concatenate(images), masks=np.concatenate(masks))
    seconds = time.perf_counter() - t
    with np.load(root / "samples.npz") as archive:
        return seconds, len(archive["images"]) == n and np.array_equal(archive["masks"][-batch:], masks[-1])


def run(quick: bool = False, threads: int = 2) -> dict:
    small, large = (100, 1000) if quick else (1000, 10_000)
    bu.reset_peak()  # this process may have run other benchmarks
    tmp = Path(tempfile.mkdtemp())
    try:
        t_small, ok_small = write_pairs(tmp / "small", small)
        t_large, ok_large = write_pairs(tmp / "large", large)
        stored = {"small": read_back(tmp / "small", small), "large": read_back(tmp / "large", large)}
        (tmp / "base_small").mkdir()
        (tmp / "base_large").mkdir()
        b_small, okb_small = rewrite_archive_baseline(tmp / "base_small", small)
        b_large, okb_large = rewrite_archive_baseline(tmp / "base_large", small * 4)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        **bu.header(threads),
        "what": "ms per generated pair written (PNG, sha256, fsync, atomic renames, sidecars); baseline: "
                "the whole .npz archive rewritten after every batch of 50",
        "ours": {"n_small": small, "n_large": large, "ms_per_pair_small": 1000 * t_small / small,
                 "ms_per_pair_large": 1000 * t_large / large, "large_over_small": (t_large / large) / (t_small / small)},
        "rewrite_baseline": {"n_small": small, "n_large": 4 * small, "ms_per_pair_small": 1000 * b_small / small,
                             "ms_per_pair_large": 1000 * b_large / (4 * small),
                             "large_over_small": (b_large / (4 * small)) / (b_small / small)},
        # The point is growth with N, not the absolute cost (ours does more per pair: PNG, hashes, fsync).
        "ratio": ((b_large / (4 * small)) / (b_small / small)) / ((t_large / large) / (t_small / small)),
        "ratio_note": "growth of the per-pair cost, baseline (N -> 4N) over ours (N -> 10N)",
        "peak_rss_mb": round(bu.peak_rss_mb(), 1),
        "check": {"passed": ok_small and ok_large and okb_small and okb_large,
                  "all_pairs_committed_and_read_back": ok_small and ok_large,
                  "baseline_archive_complete": okb_small and okb_large},
        "read_back": stored,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="N = 100 and 1000 instead of 1K and 10K")
    parser.add_argument("--out", help="folder for the JSON (default benchmarks/results; --quick: print only)")
    args = parser.parse_args()
    result = run(args.quick)
    print(bu.json_dumps(result))
    if args.out or not args.quick:
        bu.write_result("shard_write", result, args.out)


if __name__ == "__main__":
    main()
