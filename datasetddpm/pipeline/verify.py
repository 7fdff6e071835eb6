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
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.generated import INDEX_KEYS
from ..errors import DatasetDDPMError, InputError
from ..io import LOCK_NAME, check_unlocked, is_stale_temporary, read_json, read_jsonl
from .config import SampleConfig
from .selection import plan_finalize, read_run_config, recorded_index_lines
from ..data.shards import ShardStore, sample_name, sha256, shard_name


@dataclass
class Problem:
    path: str  # relative to the run directory
    problem: str
    shard: int | None = None  # the shard to regenerate, when regenerating fixes it
    remedy: str = ""  # without a shard: "delete" (debris), "finalize" (index, card: rewritten), "" (none)

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


CARD_FIELDS = ("classes", "palette", "ignore_label", "counts", "drop_fraction", "max_pairs", "config_hash",
               "labels_hash", "ensemble")  # in every card finalize has written
IMAGE_RECORD = ("id", "seed", "image_sha256")  # what every sample of a shard's sidecar records
LABEL_RECORD = ("id", "mask_sha256", "uncertainty")


class _Checker:
    def __init__(self, run: Path):
        self.run, self.store = run, ShardStore(run)
        self.cfg = read_run_config(run)
        self.config_hash = read_json(run / "manifest.json").get("hash")
        labels_file = run / "labels_manifest.json"
        self.labels = read_json(labels_file) if labels_file.exists() else None
        self.report = Report(str(run), shards=self.cfg.num_shards)
        self.card = self._read_card()
        self.num_classes = len(self.card["palette"]) if self.card else None
        self.ignore = self.card["ignore_label"] if self.card else 255
        self.size: tuple[int, int] | None = None
        self.expected: set[Path] = set()
        if self.cfg.hash() != self.config_hash:
            self.add(run / "manifest.json", f"its config hashes to {self.cfg.hash()}, not to the hash it records "
                                            f"({self.config_hash}): edited; restore it")

    def _read_card(self) -> dict | None:
        path = self.run / "dataset_card.json"
        if not path.exists():
            return None
        try:
            card = read_json(path)
            for key in ("drop_fraction", "max_pairs", "palette", "ignore_label"):
                card[key]
            return card
        except InputError as e:
            self.add(path, f"{e.problem}; rerun `datasetddpm finalize` with the run's settings")
        except (KeyError, TypeError):
            self.add(path, "lacks the filter's settings; rerun `datasetddpm finalize` with the run's settings")
        return None

    def add(self, path: Path, problem: str, shard: int | None = None, remedy: str = "") -> None:
        self.report.problems.append(Problem(str(path.relative_to(self.run)), problem, shard, remedy))

    def sidecar(self, k: int, labels: bool = False) -> dict | None:
        """A shard's sidecar when it reads as one (a damaged one is a problem that regenerating the shard fixes)."""
        path = self.store.sidecar(k, labels)
        self.expected.add(path)
        try:
            side = read_json(path)
            records = side["samples"]
            if not all(isinstance(r, dict) and all(key in r for key in (LABEL_RECORD if labels else IMAGE_RECORD))
                       for r in records):
                raise KeyError("samples")
        except InputError as e:
            self.add(path, e.problem, k)
            return None
        except (KeyError, TypeError):
            self.add(path, "does not hold the shard's records", k)
            return None
        return side

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
        side = self.sidecar(k)
        if side is None:
            return
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
        side = self.sidecar(k, labels=True)
        if side is None:
            return
        if side.get("labels_hash") != self.labels.get("hash"):
            self.add(sidecar, f"labelled by ensemble {side.get('labels_hash')}, the labels manifest says "
                              f"{self.labels.get('hash')}", k)
            return
        if [s["id"] for s in side["samples"]] != ids:
            self.add(sidecar, "lists other sample ids than the shard's images", k)
            return
        for s in side["samples"]:
            self.check_mask(k, s)
        self.report.labelled += len(ids)

    def check_mask(self, k: int, record: dict) -> None:
        """A mask's bytes, size and class ids, and the uncertainty and class pixel counts recorded with it."""
        path = self.store.masks_dir(k) / sample_name(record["id"])
        u = record["uncertainty"]
        if not isinstance(u, (int, float)) or not np.isfinite(u) or u < 0:
            self.add(self.store.sidecar(k, labels=True), f"records uncertainty {u!r} for sample {record['id']}: "
                                                         "not a score", k)
        mask = self.check_file(path, record["mask_sha256"], k, "P")
        if mask is None:
            return
        if self.size and mask.shape[:2] != self.size:
            self.add(path, f"is {mask.shape[1]}x{mask.shape[0]}, the run's images {self.size[1]}x{self.size[0]}", k)
        elif self.num_classes is not None:
            bad = np.setdiff1d(np.unique(mask), np.r_[np.arange(self.num_classes), self.ignore])
            if bad.size:
                self.add(path, f"holds class ids {bad.tolist()} outside 0..{self.num_classes - 1}", k)
            elif record.get("class_pixels") is not None and record["class_pixels"] != np.bincount(
                    mask.ravel(), minlength=self.num_classes)[:self.num_classes].tolist():
                self.add(self.store.sidecar(k, labels=True), f"class pixel counts of sample {record['id']} differ "
                                                             "from its mask", k)

    def check_index(self) -> None:
        """index.jsonl and dataset_card.json are what `finalize` writes from the shards' records with the
        card's settings: every line (files, checksums, uncertainty, kept flag) and every card field."""
        index, card_file = self.run / "index.jsonl", self.run / "dataset_card.json"
        if not index.exists() and not card_file.exists():
            return
        if not card_file.exists():
            self.add(card_file, "missing beside index.jsonl; rerun `datasetddpm finalize` with the run's settings")
            return
        if self.card is None or any(p.shard is not None for p in self.report.problems):
            return  # an unreadable card is listed; damaged shards are regenerated, then finalized again
        try:
            lines = recorded_index_lines(self.run, self.cfg, self.card)
        except (DatasetDDPMError, KeyError, TypeError) as e:
            self.add(card_file, f"cannot be checked ({e}); rerun `datasetddpm finalize` with the run's settings")
            return
        self.compare_index(index, lines)
        self.compare_card(card_file)

    def compare_card(self, card_file: Path) -> None:
        try:  # the whole card needs the labeller (its classes, palette, features); without it, what the run records
            want = json.loads(json.dumps(plan_finalize(
                self.run, drop_fraction=self.card["drop_fraction"], max_pairs=self.card["max_pairs"],
                prefer_classes=",".join(self.card.get("prefer_classes") or ()) or None).card))
        except DatasetDDPMError:
            keep = sum(r["kept"] for r in recorded_index_lines(self.run, self.cfg, self.card))
            generated = self.cfg.n
            want = {**self.card, "counts": {"generated": generated, "kept": keep, "dropped": generated - keep},
                    "config_hash": self.config_hash, "labels_hash": self.labels and self.labels.get("hash")}
        # A field a card lacks was added to cards after it was written (an older run): not damage.
        differ = sorted({k for k in self.card if k not in want or want[k] != self.card[k]}
                        | {k for k in CARD_FIELDS if k not in self.card})
        if differ:
            self.add(card_file, f"{', '.join(differ)} differ from what the shards' records and the card's filter "
                                "settings give", remedy="finalize")

    def compare_index(self, index: Path, expected: list[dict]) -> None:
        if not index.exists():
            self.add(index, "missing beside dataset_card.json", remedy="finalize")
            return
        try:
            rows = read_jsonl(index, INDEX_KEYS)
        except InputError as e:
            self.add(index, e.problem, remedy="finalize")
            return
        if len(rows) != len(expected):
            self.add(index, f"lists {len(rows)} samples, the run has {len(expected)}", remedy="finalize")
            return
        for n, (got, want) in enumerate(zip(rows, expected), 1):
            differ = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
            if differ:
                key = "uncertainty" if "uncertainty" in differ else differ[0]
                # Which of the index and the sidecar holds the score the ensemble gave is not known: the shard
                # is relabelled (the same bytes, when the sidecar was right) and the index rewritten.
                shard = want["shard"] if key == "uncertainty" else None
                source = {"kept": "the filter's rule (the card's drop fraction and pair cap) gives",
                          "uncertainty": "its shard's labels sidecar records"}.get(key, "the shards' records give")
                self.add(index, f"line {n} (sample {want['id']}): {key} is {got.get(key)!r} but {source} "
                                f"{want.get(key)!r}" + (f" ({len(differ) - 1} more field(s) differ)" if len(differ) > 1
                                                        else ""), shard, remedy="finalize")
                return

    def check_debris(self) -> None:
        top = {self.run / n for n in ("manifest.json", "labels_manifest.json", "index.jsonl", "dataset_card.json",
                                      LOCK_NAME)}
        for path in sorted(self.run.rglob("*")):
            if path.is_dir():
                if path.name.endswith(".partial"):
                    self.add(path, "left by an interrupted write", remedy="delete")
                continue
            inside = self.store.root in path.parents
            if inside and path not in self.expected:
                self.add(path, "stray file: belongs to no sample of the run", remedy="delete")
            elif not inside and is_stale_temporary(path.name) and path not in top:
                self.add(path, "temporary file left by an interrupted write", remedy="delete")


def cheap_check(run_dir: str | Path, *, index: bool = False) -> None:
    """The checks that read no image: sidecars belong to this manifest (and labels manifest), and with
    `index`, every file the index lists exists. `finalize` and `train-deeplab` refuse a run that fails."""
    run = Path(run_dir)
    check_unlocked(run)  # a reader of a run another command is writing (sample, label, finalize, repair) waits
    checker = _Checker(run)

    def refuse(problem: str):
        raise DatasetDDPMError(f"{run}: {problem}; run `datasetddpm verify {run}` (--repair fixes it)")
    if checker.report.problems:  # an edited manifest or an unreadable card
        refuse(str(checker.report.problems[0]))
    for k in range(checker.cfg.num_shards):
        side = checker.sidecar(k) if checker.store.committed(k) else {}
        if side is None:
            refuse(str(checker.report.problems[0]))
        if side and side.get("config_hash") != checker.config_hash:
            refuse(f"shard {shard_name(k)} was made with another config than the manifest's")
        labelled = checker.labels and checker.store.committed(k, labels=True)
        side = checker.sidecar(k, labels=True) if labelled else {}
        if side is None:
            refuse(str(checker.report.problems[0]))
        if side and side.get("labels_hash") != checker.labels["hash"]:
            refuse(f"shard {shard_name(k)} was labelled by another ensemble than the labels manifest's")
    if index:
        rows = read_jsonl(run / "index.jsonl", INDEX_KEYS)
        missing = [r[key] for r in rows if r["kept"] for key in ("image", "mask") if not (run / r[key]).is_file()]
        if missing:
            refuse(f"{len(missing)} file(s) of the index are missing (first: {missing[0]})")
        if checker.card is None:
            refuse("dataset_card.json is missing")
        try:
            checker.compare_index(run / "index.jsonl", recorded_index_lines(run, checker.cfg, checker.card))
        except (KeyError, TypeError) as e:
            refuse(f"the shards' records are incomplete ({e})")
        if checker.report.problems:  # a kept flag, uncertainty or checksum the records do not give
            refuse(str(checker.report.problems[0]))


def require_run(run: Path) -> None:
    if not (run / "manifest.json").is_file():
        raise DatasetDDPMError(f"{run}: not a generation run (no manifest.json)")


def verify_run(run_dir: str | Path) -> Report:
    run = Path(run_dir)
    require_run(run)
    checker = _Checker(run)
    for k in range(checker.cfg.num_shards):
        checker.check_shard(k)
    checker.check_index()
    checker.check_debris()
    return checker.report
