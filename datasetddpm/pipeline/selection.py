"""What `finalize` computes from a labelled run's records alone: the rows of the index, the pairs the
filter keeps and the dataset card. `finalize` writes it; `verify`, `export` and `train-deeplab` check the
run's files against it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetDDPMError, InputError, OptionError
from ..io import read_json
from .class_shares import labeller_pixels
from .config import SampleConfig
from ..data.shards import ShardStore, sample_name, shard_name


def read_run_config(run: Path) -> SampleConfig:
    """The run config in `run/manifest.json`, every key known and of its field's type: an edited manifest is
    one line naming the key, not a traceback."""
    path = run / "manifest.json"
    manifest = read_json(path)
    config = manifest.get("config") if isinstance(manifest, dict) else None
    if not isinstance(config, dict):
        raise InputError(path, "holds no run config (a `config` object): not a manifest this toolkit wrote")
    fields = {f.name: f.default for f in dataclasses.fields(SampleConfig)}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise InputError(path, f"config has unknown key(s) {', '.join(map(repr, unknown))}: edited, or written by "
                               "another version of the toolkit; restore the file")
    for name, value in config.items():
        default = fields[name]
        if default is not None and default is not dataclasses.MISSING and not isinstance(value, type(default)):
            raise InputError(path, f"config field {name!r} is {value!r}, not a {type(default).__name__}")
    return SampleConfig(**config)


def kept_ids(ids: np.ndarray, uncertainty: np.ndarray, drop_fraction: float, max_pairs: int,
             preferred_pixels: np.ndarray | None = None) -> set[int]:
    """Drop the `drop_fraction` most uncertain images, then keep at most `max_pairs` of the rest: the least
    uncertain, or (mining, `preferred_pixels`) those with the most pixels of the preferred classes."""
    n = len(ids)
    order = np.lexsort((ids, uncertainty))[:n - int(round(drop_fraction * n))]  # least uncertain first; ties by id
    if preferred_pixels is not None:  # richest in the preferred classes first; ties: the less uncertain
        order = order[np.lexsort((np.arange(len(order)), -preferred_pixels[order]))]
    return set(int(i) for i in ids[order[:max_pairs]])


def preferred_classes(names: str | None, class_names: tuple[str, ...]) -> tuple[int, ...]:
    """`--prefer-classes eye,beak` as class ids (names of the ensemble's classes, or ids)."""
    if not names:
        return ()
    ids = []
    for name in (n.strip() for n in names.split(",")):
        if name in class_names:
            ids.append(class_names.index(name))
        elif name.isdigit() and int(name) < len(class_names):
            ids.append(int(name))
        else:
            raise OptionError("--prefer-classes", f"unknown class {name!r}; the run's classes: {', '.join(class_names)}")
    return tuple(dict.fromkeys(ids))


def check_preferred_present(rows: list[dict], prefer: tuple[int, ...], names: tuple[str, ...]) -> None:
    """Mining for a class that no label of the run holds a single pixel of keeps 0 % of it whatever is kept:
    refused, naming the class (the labeller never predicts it: the fix is upstream, not in the filter)."""
    if not prefer or any(r["class_pixels"] is None for r in rows):
        return  # labels without per-class counts: `_select` says what to do
    absent = [names[k] for k in prefer if not any(r["class_pixels"][k] for r in rows)]
    if absent:
        which, it = ("class", "it") if len(absent) == 1 else ("classes", "them")
        raise OptionError("--prefer-classes", f"no label of the run holds a single pixel of {which} "
                                              f"{', '.join(map(repr, absent))}: the labeller never predicts {it}, so no "
                                              f"pair can be mined for {it}; leave {it} out, or annotate more of {it}, "
                                              "retrain the ensemble (see its class warnings) and relabel (`datasetddpm "
                                              "label --overwrite`): docs/custom_data.md")


UNDER_REPRESENTED = 0.25  # a class whose share of the kept labels is under this fraction of the labeller's


def class_balance(kept_pixels: list, labeller_pixels: list | None, names: tuple[str, ...]) -> dict:
    """Each class's share of the kept labels beside its share in the labeller's training labels, and a
    warning for every class that is absent or far under-represented (a small part the samples lack)."""
    if not kept_pixels or any(p is None for p in kept_pixels):
        return {}  # labels written before per-class counts were recorded
    kept = np.sum(np.array(kept_pixels, dtype=np.int64), axis=0)
    share = kept / max(kept.sum(), 1)
    ref = np.array(labeller_pixels, dtype=np.float64) / max(sum(labeller_pixels), 1) if labeller_pixels else None
    balance, warnings = {}, []
    for k, name in enumerate(names):
        row = {"kept_pixel_share": round(float(share[k]), 6)}
        if ref is not None:
            row["labeller_pixel_share"] = round(float(ref[k]), 6)
        balance[name] = row
        if kept[k] == 0:
            warnings.append(f"class {name!r} never appears in the kept labels")
        elif ref is not None and share[k] < UNDER_REPRESENTED * ref[k]:
            warnings.append(f"class {name!r} is {100 * share[k]:.3g} % of the kept label pixels but "
                            f"{100 * ref[k]:.3g} % of the labeller's: under-represented in the samples")
    return {"class_balance": balance, "warnings": warnings}


def shard_rows(run: Path, cfg: SampleConfig) -> list[dict]:
    """One row per sample of a sampled and labelled run: files, checksums, uncertainty, class pixels."""
    store = ShardStore(run)
    rows = []
    missing = [shard_name(k) for k in range(cfg.num_shards) if not (store.committed(k) and store.committed(k, labels=True))]
    if missing:
        shown = ", ".join(missing[:8]) + (f", ... (+{len(missing) - 8})" if len(missing) > 8 else "")
        raise DatasetDDPMError(f"{run}: {len(missing)} of {cfg.num_shards} shard(s) are not sampled and labelled "
                               f"yet ({shown}); finish `datasetddpm sample`/`label` first (with --task-count: "
                               f"rerun the tasks that own them, k mod N)")
    for k in range(cfg.num_shards):
        images = store.read_sidecar(k)["samples"]
        masks = store.read_sidecar(k, labels=True)["samples"]
        for im, m in zip(images, masks):
            rows.append({"id": im["id"], "seed": im["seed"], "shard": k,
                         "image": f"shards/{shard_name(k)}/images/{sample_name(im['id'])}",
                         "mask": f"shards/{shard_name(k)}/masks/{sample_name(im['id'])}",
                         "image_sha256": im["image_sha256"], "mask_sha256": m["mask_sha256"],
                         "uncertainty": m["uncertainty"], "class_pixels": m.get("class_pixels"),
                         **({"source": im["source"]} if "source" in im else {})})  # label-images: its file
    return rows


def _select(rows: list[dict], drop_fraction: float, max_pairs: int, prefer: tuple[int, ...], run: Path) -> set[int]:
    ids = np.array([r["id"] for r in rows])
    preferred = None
    if prefer:
        if any(r["class_pixels"] is None for r in rows):
            raise DatasetDDPMError(f"{run}: its labels predate per-class pixel counts; relabel it "
                                   "(`datasetddpm label --overwrite`) to mine for classes")
        preferred = np.array([sum(r["class_pixels"][k] for k in prefer) for r in rows])
    return kept_ids(ids, np.array([r["uncertainty"] for r in rows]), drop_fraction, max_pairs, preferred)


@dataclass
class FinalizePlan:
    """What `finalize` writes, computed from the shards' records alone (`verify` compares it with the files)."""

    rows: list[dict]
    keep: set[int]
    card: dict
    ensemble: object  # the labeller's EnsembleConfig
    drop_fraction: float

    def index_lines(self) -> list[dict]:
        return [{**{k: v for k, v in r.items() if k != "class_pixels"}, "kept": r["id"] in self.keep} for r in self.rows]


def recorded_index_lines(run: Path, cfg: SampleConfig, card: dict) -> list[dict]:
    """index.jsonl as `finalize` writes it from the shards' records and the card's filter settings (drop
    fraction, pair cap, mined classes), without the labeller: what `verify` and the trainers check against."""
    names = tuple(card["classes"]) or tuple(str(k) for k in range(len(card["palette"])))
    prefer = preferred_classes(",".join(card.get("prefer_classes") or ()) or None, names)
    rows = shard_rows(run, cfg)
    keep = _select(rows, card["drop_fraction"], card["max_pairs"], prefer, run)
    return FinalizePlan(rows, keep, {}, None, card["drop_fraction"]).index_lines()


def plan_finalize(run: Path, *, drop_fraction: float, max_pairs: int, prefer_classes: str | None = None) -> FinalizePlan:
    cfg = read_run_config(run)
    labels = read_json(run / "labels_manifest.json")
    # Everything the card needs is read before index.jsonl is replaced, so index and card never disagree.
    from ..ensemble.model import ensemble_config
    ens_dir = labels["config"]["ensemble"]
    ens = ensemble_config(ens_dir)  # the classes: ensemble.json alone, no weights loaded
    names = ens.class_names or tuple(str(k) for k in range(ens.num_classes))
    prefer = preferred_classes(prefer_classes, names)
    rows = shard_rows(run, cfg)
    check_preferred_present(rows, prefer, names)
    keep = _select(rows, drop_fraction, max_pairs, prefer, run)
    card = _card(cfg, ens, labels, rows, keep, drop_fraction, max_pairs)
    if prefer:
        card["prefer_classes"] = [names[k] for k in prefer]
    card.update(class_balance([r["class_pixels"] for r in rows if r["id"] in keep], labeller_pixels(ens_dir), names))
    return FinalizePlan(rows, keep, card, ens, drop_fraction)


def _card(cfg: SampleConfig, ens, labels: dict, rows: list[dict], keep: set[int], drop_fraction: float,
          max_pairs: int) -> dict:
    from ..data.images import palette_for
    return {"classes": list(ens.class_names), "palette": [list(c) for c in palette_for(ens.num_classes)],
            "ignore_label": ens.ignore_label, "model": cfg.model, "blocks": ens.features.get("blocks"),
            "steps": ens.features.get("steps"), "noise_seed": ens.features.get("noise_seed"),
            "sampler": cfg.sampler, "sampling_steps": cfg.sampling_steps, "seed": cfg.seed,
            "counts": {"generated": len(rows), "kept": len(keep), "dropped": len(rows) - len(keep)},
            "drop_fraction": drop_fraction, "max_pairs": max_pairs, "config_hash": cfg.hash(),
            "labels_hash": labels["hash"], "ensemble": labels["config"]["ensemble"],
            **({"images": cfg.images} if cfg.images else {}),
            **({"label_features": "trajectory"} if labels["config"].get("features") == "trajectory" else {})}
