"""DeepLab training memory must not grow with the number of pairs (pairs streamed from the shards).

For N = 1K, 5K and 20K random 64-px pairs written through the real shard writer (plus the index and
dataset card `finalize` writes), a child process per (N, path) measures its peak RSS (VmHWM) while it
trains DeepLabV3-R18 for 20 steps at batch 8 and then reads and augments the rest of the epoch.
Ours: `AugmentedPairs(GeneratedPairs)` through `make_loader`. (Loader worker processes are not used
here: forked workers share pages with the trainer, which RSS would count twice.) Baseline, side by side: the former path, every pair loaded into RAM first
(`GeneratedPairs.arrays()`), then the same steps. Check: ours' peak at the largest N is within 15 %
of its peak at the smallest.

    .venv/bin/python benchmarks/deeplab_memory.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_utils as bu  # first: sets the OpenMP wait policy before torch loads
import numpy as np

TRAIN_STEPS, BATCH = 20, 8


SIDE = 64


def write_fake_run(root: Path, n: int, shard: int = 500) -> None:
    from datasetddpm.data.images import palette_for
    from datasetddpm.data.shards import ShardStore, sample_name, shard_name
    rng = np.random.default_rng(0)
    store = ShardStore(root)
    rows = []
    for k in range((n + shard - 1) // shard):
        ids = list(range(k * shard, min((k + 1) * shard, n)))
        store.write_samples(k, ids, ids, rng.integers(0, 256, (len(ids), SIDE, SIDE, 3), dtype=np.uint8), "bench")
        store.write_labels(k, ids, rng.integers(0, 7, (len(ids), SIDE, SIDE), dtype=np.uint8), rng.random(len(ids)), 7,
                           "bench")
        rows += [{"id": i, "image": f"shards/{shard_name(k)}/images/{sample_name(i)}",
                  "mask": f"shards/{shard_name(k)}/masks/{sample_name(i)}", "kept": True} for i in ids]
    (root / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "dataset_card.json").write_text(json.dumps({"classes": [str(k) for k in range(7)],
                                                        "palette": palette_for(7), "ignore_label": 255}))


def child(run: str, path: str) -> None:
    import torch
    import torch.nn.functional as F
    from datasetddpm.data.generated import GeneratedPairs
    from datasetddpm.segmenters.model import SegmenterConfig, create_segmenter
    from datasetddpm.segmenters.train_deeplab import AugmentedPairs, DeepLabTrainConfig, make_loader
    torch.set_num_threads(1)
    pairs = GeneratedPairs(run)
    if path == "baseline":
        images, masks = pairs.arrays()
        pairs = list(zip(images, masks))
    cfg = DeepLabTrainConfig(batch_size=BATCH)
    model = create_segmenter(SegmenterConfig(num_classes=7))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0, batches = time.perf_counter(), 0
    for x, y in make_loader(AugmentedPairs(pairs, augment=True, seed=0, ignore_label=255), cfg, epoch=0):
        if batches < TRAIN_STEPS:
            loss = F.cross_entropy(model(x), y, ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
        batches += 1
    print(json.dumps({"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "batches": batches, "seconds": round(time.perf_counter() - t0, 1)}))


def run(quick: bool = False, threads: int = 1) -> dict:
    sizes = (200, 1000) if quick else (1000, 5000, 20_000)
    tmp = Path(tempfile.mkdtemp())
    rows = {}
    try:
        for n in sizes:
            write_fake_run(tmp / str(n), n)
            rows[n] = {}
            for path in ("streamed", "baseline"):
                out = subprocess.run([sys.executable, __file__, "--child", str(tmp / str(n)), path],
                                     capture_output=True, text=True, check=True)
                rows[n][path] = json.loads(out.stdout.strip().splitlines()[-1])
            shutil.rmtree(tmp / str(n))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ours = [rows[n]["streamed"]["peak_rss_mb"] for n in sizes]
    base = [rows[n]["baseline"]["peak_rss_mb"] for n in sizes]
    return {
        **bu.header(threads),
        "what": f"peak RSS (MB) of DeepLab training, {TRAIN_STEPS} steps at batch {BATCH} then the rest of one epoch's "
                f"data, {SIDE}-px pairs; baseline: all pairs loaded into RAM first",
        "quick": quick,
        "sizes": list(sizes),
        "results": {str(n): rows[n] for n in sizes},
        "streamed_largest_over_smallest": round(ours[-1] / ours[0], 3),
        "baseline_largest_over_smallest": round(base[-1] / base[0], 3),
        "check": {"passed": ours[-1] <= 1.15 * ours[0] and all(r["streamed"]["batches"] == n // BATCH
                                                               for n, r in rows.items())},
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="N = 200 and 1000 instead of 1K, 5K, 20K")
    parser.add_argument("--out", help="folder for the JSON (default benchmarks/results; --quick: print only)")
    args = parser.parse_args()
    result = run(args.quick)
    print(bu.json_dumps(result))
    if args.out or not args.quick:
        bu.write_result("deeplab_memory", result, args.out)


if __name__ == "__main__":
    main()
