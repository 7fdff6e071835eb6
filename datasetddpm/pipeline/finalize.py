"""The global step after all shards are labelled: rank every image's uncertainty, keep the rest.

The drop of the most uncertain fraction is a decision over all N scores, so it runs once at the
end; it writes `index.jsonl` (one line per sample: id, seed, files, checksums, uncertainty, kept)
and `dataset_card.json`, and never rewrites shard files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetDDPMError, OptionError
from ..io import atomic_path, read_json, run_lock, write_json
from .config import SampleConfig
from .shards import ShardStore, sample_name, shard_name


def kept_ids(ids: np.ndarray, uncertainty: np.ndarray, drop_fraction: float, max_pairs: int) -> set[int]:
    """Drop the `drop_fraction` most uncertain images, then keep at most `max_pairs` least uncertain."""
    n = len(ids)
    keep = min(n - int(round(drop_fraction * n)), max_pairs)
    order = np.lexsort((ids, uncertainty))  # least uncertain first; ties by id
    return set(int(i) for i in ids[order[:keep]])


def finalize_run(run_dir: str | Path, *, drop_fraction: float = 0.1, max_pairs: int = 50_000) -> dict:
    if not 0 <= drop_fraction < 1:
        raise OptionError("--drop-fraction", f"must be in [0, 1), got {drop_fraction}")
    if max_pairs < 1:
        raise OptionError("--max-pairs", f"must be >= 1, got {max_pairs}")
    run = Path(run_dir)
    cfg = SampleConfig(**read_json(run / "manifest.json")["config"])
    labels = read_json(run / "labels_manifest.json")
    from .verify import cheap_check
    cheap_check(run)
    # Everything the card needs is read before index.jsonl is replaced, so index and card never disagree.
    from ..ensemble.model import load_ensemble
    ens = load_ensemble(labels["config"]["ensemble"]).cfg
    store = ShardStore(run)
    rows = []
    for k in range(cfg.num_shards):
        if not (store.committed(k) and store.committed(k, labels=True)):
            raise DatasetDDPMError(f"{run}: shard {shard_name(k)} is not sampled and labelled yet; finish "
                                   f"`datasetddpm sample`/`label` first")
        images = store.read_sidecar(k)["samples"]
        masks = store.read_sidecar(k, labels=True)["samples"]
        for im, m in zip(images, masks):
            rows.append({"id": im["id"], "seed": im["seed"], "shard": k,
                         "image": f"shards/{shard_name(k)}/images/{sample_name(im['id'])}",
                         "mask": f"shards/{shard_name(k)}/masks/{sample_name(im['id'])}",
                         "image_sha256": im["image_sha256"], "mask_sha256": m["mask_sha256"],
                         "uncertainty": m["uncertainty"]})
    ids = np.array([r["id"] for r in rows])
    keep = kept_ids(ids, np.array([r["uncertainty"] for r in rows]), drop_fraction, max_pairs)
    import json
    from ..data.images import palette_for
    card = {"classes": list(ens.class_names), "palette": [list(c) for c in palette_for(ens.num_classes)],
            "ignore_label": ens.ignore_label, "model": cfg.model, "blocks": ens.features.get("blocks"),
            "steps": ens.features.get("steps"), "noise_seed": ens.features.get("noise_seed"),
            "sampler": cfg.sampler, "sampling_steps": cfg.sampling_steps, "seed": cfg.seed,
            "counts": {"generated": len(rows), "kept": len(keep), "dropped": len(rows) - len(keep)},
            "drop_fraction": drop_fraction, "max_pairs": max_pairs, "config_hash": cfg.hash(),
            "labels_hash": labels["hash"], "ensemble": labels["config"]["ensemble"]}
    with run_lock(run):
        with atomic_path(run / "index.jsonl") as tmp:
            with open(tmp, "w") as f:
                for r in rows:
                    f.write(json.dumps({**r, "kept": r["id"] in keep}) + "\n")
        write_json(run / "dataset_card.json", card)
    return card
