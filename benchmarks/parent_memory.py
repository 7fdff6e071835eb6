"""Peak memory of the parent process of `sample --gpus G` at LSUN-256 shapes: validating the model.

Before its workers start, `sample` checks the model (config, sampler, the ensemble's features). It used
to load the whole generator on the CPU for that, then each worker loaded it again; it now builds the
model on the meta device from the config and the safetensors header (no weight bytes read). Each path
runs in a fresh process on the same random-weight LSUN-256 checkpoint (552.8M parameters, 2.2 GB),
side by side: peak RSS (VmHWM) of each, their ratio, and each above a process that only imports the
same modules (torch's CUDA build alone maps most of a process's first gigabyte). Check: both accept the same model and report
the same image side and feature width.

    .venv/bin/python benchmarks/parent_memory.py [--quick] [--out DIR]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import bench_utils as bu  # first: sets the OpenMP wait policy before torch loads

PROBE = """
import json, sys
sys.path.insert(0, {root!r})
from datasetddpm.generators.loading import load_generator
from datasetddpm.generators.base import FeatureSpec
from datasetddpm.pipeline.config import SampleConfig
from datasetddpm.pipeline.generate import resolve_sample_config
from benchmarks.bench_utils import peak_rss_mb
spec = FeatureSpec((5, 6, 7, 8, 12), (50, 150, 250)) if {full} else FeatureSpec((1, 4), (50, 150))
if {old} is None:  # the imports alone (torch's CUDA build maps its libraries at import)
    print(json.dumps({{"peak_rss_mb": peak_rss_mb()}}))
    raise SystemExit
if {old}:
    generator = load_generator({model!r})  # the parent's check before: the model on the CPU
    generator.make_sampler("ddim", 50)
    side = generator.resolution
else:
    cfg, side = resolve_sample_config(SampleConfig(model={model!r}), None)
    generator = load_generator({model!r}, "meta")
print(json.dumps({{"peak_rss_mb": peak_rss_mb(), "side": side, "features": sum(generator.feature_channels(spec))}}))
"""


def _probe(model: Path, old: bool | None, full: bool) -> dict:
    code = PROBE.format(root=str(bu.ROOT), model=str(model), old=old, full=full)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=bu.ROOT)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool = False, threads: int = 2) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from gpu import make_model
    with tempfile.TemporaryDirectory(prefix="parent-memory-") as tmp:
        model, _, _ = make_model(Path(tmp), quick)
        size_mb = (model / "model.safetensors").stat().st_size / 2**20
        imports = _probe(model, None, not quick)["peak_rss_mb"]
        before, after = _probe(model, True, not quick), _probe(model, False, not quick)
    same = before["side"] == after["side"] and before["features"] == after["features"]
    return {**bu.header(threads), "benchmark": "parent_memory",
            "model": "tiny UNet (32 px)" if quick else "LSUN-256 ADM configuration, random weights",
            "weights_mb": round(size_mb, 1), "peak_rss_mb": {"load_on_cpu": before["peak_rss_mb"],
                                                             "meta_validation": after["peak_rss_mb"]},
            "imports_only_peak_rss_mb": imports,
            "above_imports_mb": {"load_on_cpu": round(before["peak_rss_mb"] - imports, 1),
                                 "meta_validation": round(after["peak_rss_mb"] - imports, 1)},
            "ratio": round(before["peak_rss_mb"] / after["peak_rss_mb"], 2), "side": after["side"],
            "features_per_pixel": after["features"],
            "validation": {path: {"side": r["side"], "features": r["features"]}
                           for path, r in (("load_on_cpu", before), ("meta_validation", after))},
            "check": {"same_validation": same, "below_1_gib": after["peak_rss_mb"] < 1024,
                      "passed": same and after["peak_rss_mb"] < 1024}}


if __name__ == "__main__":
    bu.standalone("parent_memory", run, "a tiny UNet (CI)")
