"""What several studies share: the labelled splits of a dataset root, and the test-set confusions of a
trained DeepLab."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..segmenters.model import load_segmenter, predict
from .stats import per_item_confusions


def write_study_config(out: str | Path, config: dict, *,
                       grows: tuple[str, ...] = ("seeds", "deeplab_seeds", "settings")) -> None:
    """Record a study's settings in out/study_config.json, refusing a folder that holds the same study with
    other settings: its kept results would be reused as if they were these. Seed and setting lists may
    change (each seed's and setting's results are kept under its own name, so a rerun with more of them
    resumes); keys an older version did not record are not compared."""
    import json
    from ..errors import OptionError
    from ..io import read_json, write_json
    path = Path(out) / "study_config.json"
    config = json.loads(json.dumps(config))  # tuples as lists, as read back
    if path.is_file():
        old = read_json(path)
        changed = sorted(k for k in set(old) & set(config) if k not in grows and old[k] != config[k])
        if changed:
            raise OptionError("--out", f"{out} holds a {old.get('study', '')} study made with other settings "
                                       f"({', '.join(changed)}): give the same ones, or a new --out")
    write_json(path, config)


def write_study(out: str | Path, report: dict, markdown, view: str) -> None:
    """A study's outputs in `out`: study.json (the report), study.md (its table, `markdown(report)`) and,
    through the installed figures (`hooks`), study.png (the picture of result view `view`), the JSON last:
    a folder holding it is complete."""
    from ..hooks import current_figures
    from ..io import atomic_path, write_json
    with atomic_path(Path(out) / "study.md") as tmp:
        tmp.write_text(markdown(report))
    current_figures().study_picture(view, report, Path(out) / "study.png")
    write_json(Path(out) / "study.json", report)


def deeplab_confusions(deeplab_dir: str | Path, test, num_classes: int, ignore_label: int) -> np.ndarray:
    """(N, K, K) per-image confusions of `deeplab_dir/best` (train-deeplab's output) on `test`, a labelled set."""
    model = load_segmenter(Path(deeplab_dir) / "best")
    pred = predict(model, torch.from_numpy(test.images).permute(0, 3, 1, 2), batch_size=32).numpy()
    return per_item_confusions(pred, test.masks, num_classes, ignore_label)


def train_and_test(data: str | Path, problem, test_images: int | None):
    """The labelled `real/train` and (the first `test_images` of) `real/test` splits of `data`, at the
    problem's classes and image size: one-line errors for a bad file, before any study writes."""
    from ..data.folders import read_labelled, resolve_split
    K, ignore, side = problem.num_classes, problem.ignore_label, problem.resolution
    return (read_labelled(resolve_split(data, "train"), K, ignore, resolution=side),
            read_labelled(resolve_split(data, "test"), K, ignore, test_images, resolution=side))


def copy_run(source: str | Path, target: str | Path) -> Path:
    """A second run folder over the same samples (manifest and shards; hard links where the file system
    allows, the files are never rewritten in place), to label or finalize differently beside the first."""
    import os
    import shutil
    source, target = Path(source), Path(target)
    if not (target / "manifest.json").is_file():
        def link(src, dst):
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
        shutil.copytree(source / "shards", target / "shards", copy_function=link, dirs_exist_ok=True)
        for name in ("labels_manifest.json", "manifest.json"):  # the manifest last: it marks the copy done
            if (source / name).is_file():
                shutil.copyfile(source / name, target / name)
    return target


def first_samples(base: str | Path, target: str | Path, n: int) -> Path:
    """A run of the first `n` samples of the sampled and labelled run `base` (so that finalize sees only
    those): its shards rewritten for the smaller manifest, the same images, masks and scores. Kept once made."""
    import shutil
    from dataclasses import asdict, replace
    from PIL import Image
    from ..ensemble.model import load_ensemble
    from ..io import read_json
    from ..pipeline.config import SampleConfig, claim_manifest
    from ..data.shards import ShardStore, sample_name
    base, target = Path(base), Path(target)
    cfg = SampleConfig(**read_json(base / "manifest.json")["config"])
    if n == cfg.n:
        return copy_run(base, target)
    if (target / "manifest.json").is_file():
        return target
    cfg = replace(cfg, n=n)
    labels = read_json(base / "labels_manifest.json")
    num_classes = load_ensemble(labels["config"]["ensemble"]).cfg.num_classes
    src, dst = ShardStore(base), ShardStore(target)
    for k in range(cfg.num_shards):  # the same shard ranges, the last one cut at n
        wanted = set(cfg.shard_range(k))
        rows = [r for r in src.read_sidecar(k)["samples"] if r["id"] in wanted]
        scores = {r["id"]: r["uncertainty"] for r in src.read_sidecar(k, labels=True)["samples"]}
        ids = [r["id"] for r in rows]
        images = np.stack([np.asarray(Image.open(src.images_dir(k) / sample_name(i)).convert("RGB")) for i in ids])
        masks = np.stack([np.asarray(Image.open(src.masks_dir(k) / sample_name(i))) for i in ids])
        dst.write_samples(k, ids, [r["seed"] for r in rows], images, cfg.hash())
        dst.write_labels(k, ids, masks, np.array([scores[i] for i in ids]), num_classes, labels["hash"])
    shutil.copyfile(base / "labels_manifest.json", target / "labels_manifest.json")
    claim_manifest(target / "manifest.json", "sample", asdict(cfg), cfg.hash(), overwrite=False)  # last: marks it done
    return target


def deeplab_over_seeds(run: str | Path, data: str | Path, out: str | Path, test, seeds, *, epochs: int,
                       input_scale: int, batch_size: int, num_classes: int, ignore_label: int, workers: int = 1,
                       threads: int | None = None, device: str = "cpu", progress: bool = True,
                       **settings) -> np.ndarray:
    """(seeds, test images, K, K): DeepLabV3 trained on a finalized run's kept pairs once per training
    seed (into out/seed-S, epoch picked on data's real/train), scored on `test`; kept and reused.
    `settings`: further DeepLabTrainConfig fields (e.g. real, real_fraction). Each seed's training wall
    time is kept in out/seed-S/train_seconds.json."""
    import time
    from ..io import write_json
    from ..segmenters.train_deeplab import DeepLabTrainConfig
    from ..workflows import train_deeplab_run
    runs = []
    for seed in seeds:
        d = Path(out) / f"seed-{seed}"
        saved = d / "test_confusions.npy"
        if not saved.is_file():
            cfg = DeepLabTrainConfig(epochs=epochs, input_scale=input_scale, seed=seed, batch_size=batch_size,
                                     **settings)
            t0 = time.time()
            train_deeplab_run(run, data, d, cfg, workers=workers, device=device, threads=threads, progress=progress)
            write_json(d / "train_seconds.json", {"seconds": round(time.time() - t0, 1)})
            np.save(saved, deeplab_confusions(d, test, num_classes, ignore_label))
        runs.append(np.load(saved))
    return np.stack(runs)


@dataclass
class SegmenterChoice:
    """Which segmenter a study's DeepLab runs train, and whether the data root's real labelled images
    (real/train) are mixed into every epoch, as the demo does (`train-deeplab --arch`, `--real`)."""

    arch: str = "deeplabv3"
    real_fraction: float = 0.0  # > 0: real/train mixed into every epoch at this share of its samples

    def check_segmenter(self) -> None:
        from ..segmenters.train_deeplab import DeepLabTrainConfig, check_mix_fraction
        DeepLabTrainConfig(arch=self.arch).validate()
        check_mix_fraction(self.real_fraction)

    def segmenter_fields(self, data: str | Path) -> dict:
        """The DeepLabTrainConfig fields of this choice, for `deeplab_over_seeds(..., **fields)`."""
        from ..segmenters.train_deeplab import mixed_real
        return dict(arch=self.arch, **mixed_real(data, self.real_fraction))

    def segmenter_report(self, epochs: int, input_scale: int) -> dict:
        return {"arch": self.arch, "epochs": epochs, "input_scale": input_scale, "real_fraction": self.real_fraction}


def segmenter_name(report: dict) -> str:
    """The table name of a study's segmenter (DeepLabV3 for results written before the choice existed)."""
    from ..segmenters.model import ARCH_NAMES
    return ARCH_NAMES[report.get("segmenter", {}).get("arch", "deeplabv3")]


def segmenter_note(report: dict) -> str:
    """A markdown paragraph (to follow a table that ends in a newline) naming a non-default segmenter
    choice; "" for the default (DeepLabV3, pairs only)."""
    seg = report.get("segmenter")
    if not seg or (seg["arch"], seg["real_fraction"]) == ("deeplabv3", 0.0):
        return ""
    epochs = f"{seg['epochs']} epoch{'s' if seg['epochs'] != 1 else ''}"
    mixed = (f"; the real labelled images mixed into every epoch as {100 * seg['real_fraction']:.0f} % of its samples"
             if seg["real_fraction"] else "; synthetic pairs only")
    return f"\nSegmenter: {segmenter_name(report)}, {epochs} at input x{seg['input_scale']}{mixed}.\n"


@dataclass
class SampleAndDeepLab(SegmenterChoice):
    """Settings every study that samples, labels and trains DeepLabV3 over seeds shares (defaults: the demo's)."""

    model: str = "embedded"
    seed: int = 0  # the sample run's seed
    sampler: str = "ddim"
    sampling_steps: int = 20
    batch_size: int = 50
    shard_size: int = 100
    deeplab_seeds: tuple[int, ...] = (0, 1, 2)
    deeplab_epochs: int = 6
    deeplab_batch: int = 8
    input_scale: int = 2
    bootstrap: int = 2000


QUICK_SAMPLE_AND_DEEPLAB = dict(sampling_steps=2, deeplab_seeds=(0,), deeplab_epochs=1, deeplab_batch=2,
                                input_scale=1, bootstrap=50)  # tiny sizes: every stage runs, nothing is measured


def seed_count(n: int) -> str:
    """'1 seed', '3 seeds'."""
    return f"{n} seed{'s' if n != 1 else ''}"


def seeds_text(report: dict) -> str:
    return seed_count(len(report["deeplab_seeds"]))


def mean_std(row: dict, report: dict) -> str:
    """A row's mIoU as 'mean ± std' over seeds, or the single value of a one-seed study."""
    spread = f" ± {100 * row['miou_std']:.1f}" if len(report["deeplab_seeds"]) > 1 else ""
    return f"{100 * row['miou_mean']:.1f}{spread}"
