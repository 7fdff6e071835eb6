"""`datasetddpm verify RUN`: check a generation run against its own records, and repair it.

Every shard's sidecar lists each file's sha256, and the run is deterministic, so a damaged run can be
both diagnosed and restored exactly:

- counts: every shard of the manifest is sampled (and labelled, when the run has labels);
- records: sidecars carry the manifest's config hash / the labels manifest's ensemble hash, and
  `index.jsonl` (after `finalize`) lists exactly the sidecars' files and checksums;
- bytes: every image and mask hashes to its recorded sha256, decodes, has the run's size, and masks
  hold class ids below the class count (or the ignore label);
- debris: files in `shards/` that belong to no sample, hidden `.partial` folders, `.tmp` files.

`repair.repair_run` fixes what this finds.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.generated import INDEX_KEYS
from ..errors import DatasetDDPMError, InputError
from ..io import LOCK_NAME, read_json, read_jsonl
from .config import SampleConfig
from .shards import ShardStore, sample_name, sha256, shard_name


@dataclass
class Problem:
    path: str  # relative to the run directory
    problem: str
    shard: int | None = None  # the shard to regenerate, when regenerating fixes it

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass
class Report:
    run: str
    shards: int = 0
    samples: int = 0
    labelled: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"run": self.run, "shards": self.shards, "samples": self.samples, "labelled": self.labelled,
                "clean": self.clean, "problems": [str(p) for p in self.problems]}


def _decode(data: bytes, mode: str) -> np.ndarray | str:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im.convert("RGB") if mode == "RGB" else im)
    except Exception as e:  # PIL raises many types for damaged files
        return f"does not decode as PNG ({type(e).__name__})"


class _Checker:
    def __init__(self, run: Path):
        self.run, self.store = run, ShardStore(run)
        manifest = read_json(run / "manifest.json")
        self.cfg = SampleConfig(**manifest["config"])
        self.config_hash = manifest.get("hash")
        labels_file = run / "labels_manifest.json"
        self.labels = read_json(labels_file) if labels_file.exists() else None
        card_file = run / "dataset_card.json"
        self.card = read_json(card_file) if card_file.exists() else None
        self.num_classes = len(self.card["classes"]) if self.card else None
        self.ignore = self.card["ignore_label"] if self.card else 255
        self.report = Report(str(run), shards=self.cfg.num_shards)
        self.size: tuple[int, int] | None = None
        self.expected: set[Path] = set()

    def add(self, path: Path, problem: str, shard: int | None = None) -> None:
        self.report.problems.append(Problem(str(path.relative_to(self.run)), problem, shard))

    def check_file(self, path: Path, recorded: str, shard: int, mode: str) -> np.ndarray | None:
        self.expected.add(path)
        if not path.is_file():
            self.add(path, "missing", shard)
            return None
        data = path.read_bytes()
        if sha256(data) != recorded:
            self.add(path, "sha256 differs from the one recorded in its shard's sidecar", shard)
            return None
        array = _decode(data, mode)
        if isinstance(array, str):
            self.add(path, array, shard)
            return None
        return array

    def check_shard(self, k: int) -> None:
        if not self.store.committed(k):
            self.add(self.store.sidecar(k), "missing: shard not sampled (rerun `datasetddpm sample`)", k)
            return
        self.expected.add(self.store.sidecar(k))
        side = self.store.read_sidecar(k)
        if side.get("config_hash") != self.config_hash:
            self.add(self.store.sidecar(k), f"made with config {side.get('config_hash')}, the manifest says "
                                            f"{self.config_hash}", k)
            return
        ids = [s["id"] for s in side["samples"]]
        if ids != list(self.cfg.shard_range(k)):
            self.add(self.store.sidecar(k), "lists other sample ids than the shard's range", k)
            return
        for s in side["samples"]:
            image = self.check_file(self.store.images_dir(k) / sample_name(s["id"]), s["image_sha256"], k, "RGB")
            if image is not None:
                self.size = self.size or image.shape[:2]
                if image.shape[:2] != self.size:
                    self.add(self.store.images_dir(k) / sample_name(s["id"]), f"is {image.shape[1]}x{image.shape[0]}, "
                                                                               f"the run's images {self.size[1]}x{self.size[0]}", k)
        self.report.samples += len(ids)
        if self.labels is not None:
            self.check_labels(k, ids)

    def check_labels(self, k: int, ids: list[int]) -> None:
        sidecar = self.store.sidecar(k, labels=True)
        if not sidecar.is_file():
            self.add(sidecar, "missing: shard not labelled (rerun `datasetddpm label`)", k)
            return
        self.expected.add(sidecar)
        side = read_json(sidecar)
        if side.get("labels_hash") != self.labels.get("hash"):
            self.add(sidecar, f"labelled by ensemble {side.get('labels_hash')}, the labels manifest says "
                              f"{self.labels.get('hash')}", k)
            return
        for s in side["samples"]:
            path = self.store.masks_dir(k) / sample_name(s["id"])
            mask = self.check_file(path, s["mask_sha256"], k, "P")
            if mask is None:
                continue
            if self.size and mask.shape[:2] != self.size:
                self.add(path, f"is {mask.shape[1]}x{mask.shape[0]}, the run's images {self.size[1]}x{self.size[0]}", k)
            elif self.num_classes is not None:
                bad = np.setdiff1d(np.unique(mask), np.r_[np.arange(self.num_classes), self.ignore])
                if bad.size:
                    self.add(path, f"holds class ids {bad.tolist()} outside 0..{self.num_classes - 1}", k)
        self.report.labelled += len(ids)

    def check_index(self) -> None:
        index = self.run / "index.jsonl"
        if not index.exists():
            return
        try:
            rows = read_jsonl(index, INDEX_KEYS)
        except InputError as e:
            self.add(index, e.problem)
            return
        recorded = {}
        for k in range(self.cfg.num_shards):
            if self.store.committed(k) and self.store.committed(k, labels=True):
                images = self.store.read_sidecar(k)["samples"]
                masks = self.store.read_sidecar(k, labels=True)["samples"]
                recorded.update({im["id"]: (im["image_sha256"], m["mask_sha256"]) for im, m in zip(images, masks)})
        listed = {r["id"]: (r["image_sha256"], r["mask_sha256"]) for r in rows}
        if listed != recorded:
            self.add(index, f"lists {len(listed)} samples that do not match the {len(recorded)} in the sidecars")
        if self.card and self.card["counts"]["kept"] != sum(r["kept"] for r in rows):
            self.add(self.run / "dataset_card.json", "counts disagree with index.jsonl")

    def check_debris(self) -> None:
        top = {self.run / n for n in ("manifest.json", "labels_manifest.json", "index.jsonl", "dataset_card.json",
                                      LOCK_NAME)}
        for path in sorted(self.run.rglob("*")):
            if path.is_dir():
                if path.name.endswith(".partial"):
                    self.add(path, "left by an interrupted write")
                continue
            inside = self.store.root in path.parents
            if inside and path not in self.expected:
                self.add(path, "stray file: belongs to no sample of the run")
            elif not inside and path.name.endswith(".tmp") and path not in top:
                self.add(path, "temporary file left by an interrupted write")


def cheap_check(run_dir: str | Path, *, index: bool = False) -> None:
    """The checks that read no image: sidecars belong to this manifest (and labels manifest), and with
    `index`, every file the index lists exists. `finalize` and `train-deeplab` refuse a run that fails."""
    run = Path(run_dir)
    checker = _Checker(run)

    def refuse(problem: str):
        raise DatasetDDPMError(f"{run}: {problem}; run `datasetddpm verify {run}` (--repair fixes it)")
    for k in range(checker.cfg.num_shards):
        if checker.store.committed(k) and checker.store.read_sidecar(k).get("config_hash") != checker.config_hash:
            refuse(f"shard {shard_name(k)} was made with another config than the manifest's")
        labelled = checker.store.committed(k, labels=True)
        if labelled and checker.labels and checker.store.read_sidecar(k, True).get("labels_hash") != checker.labels["hash"]:
            refuse(f"shard {shard_name(k)} was labelled by another ensemble than the labels manifest's")
    if index:
        rows = read_jsonl(run / "index.jsonl", INDEX_KEYS)
        missing = [r[key] for r in rows if r["kept"] for key in ("image", "mask") if not (run / r[key]).is_file()]
        if missing:
            refuse(f"{len(missing)} file(s) of the index are missing (first: {missing[0]})")
        if checker.card and checker.card["counts"]["kept"] != sum(r["kept"] for r in rows):
            refuse("dataset_card.json and index.jsonl disagree on the kept pairs")


def verify_run(run_dir: str | Path) -> Report:
    run = Path(run_dir)
    if not (run / "manifest.json").is_file():
        raise DatasetDDPMError(f"{run}: not a generation run (no manifest.json)")
    checker = _Checker(run)
    for k in range(checker.cfg.num_shards):
        checker.check_shard(k)
    checker.check_index()
    checker.check_debris()
    return checker.report
