"""Shard writes behind sampling: how much of a slow writer the write-behind thread hides.

`sample` encodes, hashes and fsyncs shard k in a writer thread while shard k+1 samples. Here the
writer is made slow on purpose (each shard's image write sleeps S seconds more, as a slow network file
system would), and the same run is made twice in one process, side by side: serial (the writer thread
off) and write-behind. Reported: seconds of each, the injected writer time, the fraction of it hidden
((serial - write-behind) / injected), peak RSS. Check: both runs' shards are byte-identical.

    .venv/bin/python benchmarks/writer_overlap.py [--quick] [--out DIR]
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import bench_utils as bu  # first: sets the OpenMP wait policy before torch loads

from datasetddpm.pipeline import generate
from datasetddpm.pipeline.config import SampleConfig
from datasetddpm.data.shards import ShardStore


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "shards").rglob("*")) if p.is_file()}


def shards_sha256(root: Path) -> str:
    """One sha256 over every shard file's path and bytes, in path order (tests recompute it on a CLI run)."""
    h = hashlib.sha256()
    for name, data in _tree(root).items():
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def _make(run: Path, cfg: SampleConfig, write_behind: bool) -> float:
    generate.WRITE_BEHIND = write_behind
    t = time.perf_counter()
    generate.sample_run(run, cfg, device="cpu", progress=False)
    return time.perf_counter() - t


def run(quick: bool = False, threads: int = 2) -> dict:
    import torch
    torch.set_num_threads(threads)
    # The embedded DDPM, DDIM-20, shards of one batch: a sampling time per shard of about the injected delay.
    n, shard, steps = (24, 8, 5) if quick else (200, 25, 20)
    cfg = SampleConfig(model="embedded", n=n, sampling_steps=steps, batch_size=shard, shard_size=shard, threads=threads)
    write = ShardStore.write_samples
    with tempfile.TemporaryDirectory(prefix="writer-overlap-") as tmp:
        tmp = Path(tmp)
        _make(tmp / "warmup", SampleConfig(model="embedded", n=shard, sampling_steps=steps, batch_size=shard,
                                           shard_size=shard, threads=threads), True)
        t0 = time.perf_counter()
        _make(tmp / "probe", SampleConfig(model="embedded", n=shard, sampling_steps=steps, batch_size=shard,
                                          shard_size=shard, threads=threads), False)
        delay = round(time.perf_counter() - t0, 2)  # a writer as slow as one shard's sampling

        def slow_write(self, *args, **kwargs):
            time.sleep(delay)
            return write(self, *args, **kwargs)
        ShardStore.write_samples = slow_write
        try:
            serial = _make(tmp / "serial", cfg, False)
            behind = _make(tmp / "behind", cfg, True)
        finally:
            ShardStore.write_samples = write
            generate.WRITE_BEHIND = True
        same = _tree(tmp / "serial") == _tree(tmp / "behind")
        digests = {"serial": shards_sha256(tmp / "serial"), "write_behind": shards_sha256(tmp / "behind")}
    shards = n // shard
    injected = shards * delay
    return {**bu.header(threads), "benchmark": "writer_overlap", "samples": n, "shards": shards,
            "sampling_steps": steps, "batch_size": shard, "injected_write_seconds_per_shard": delay,
            "injected_write_seconds": round(injected, 2), "seconds": {"serial": round(serial, 2),
                                                                      "write_behind": round(behind, 2)},
            "ratio": round(serial / behind, 3), "hidden_fraction": round((serial - behind) / injected, 3),
            "peak_rss_mb": round(bu.peak_rss_mb(), 1), "check": {"byte_identical": same, "passed": same},
            "shards_sha256": digests}


if __name__ == "__main__":
    bu.standalone("writer_overlap", run, "24 samples, shards of 8 (CI)")
