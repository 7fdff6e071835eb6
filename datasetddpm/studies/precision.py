"""Precision study: what reduced precision (`--precision bf16|fp16`: UNet calls under torch.autocast) costs
in labels and samples, against fp32, with one ensemble on the domain the embedded oracle knows.

- labels: the ensemble labels the real test images with features computed at fp32 and at the reduced
  precision; pixel agreement of the two, each one's mIoU against the ground truth, and the difference
  with a paired bootstrap interval over the test images;
- samples: the same seeds sampled (the `sample` defaults: DDIM-50, batch 50) at both precisions; mean
  absolute pixel difference, the oracle's sample check on both (flip-consistency mIoU with a paired
  interval over the seeds, mean confidence, class frequencies with their intervals), and the ensemble's
  labels of each precision's samples (made at that precision): their agreement, and their mIoU against
  the oracle's masks of the same samples with a paired interval;
- a recommendation from a stated rule (`AcceptanceRule`), computed from the numbers.

Every array (labels, samples) is kept per precision in out/<precision>/ and reused: a rerun with more
precisions computes only the new ones.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import OptionError
from ..io import read_json, write_json
from .common import write_study, write_study_config
from .stats import interval_text, miou_of, paired_bootstrap, per_item_confusions

BASELINE = "fp32"
REDUCED = ("bf16", "fp16")  # compared with fp32 (tf32 too on a GPU; on a CPU it is fp32)


@dataclass
class PrecisionStudyConfig:
    precisions: tuple[str, ...] = REDUCED  # compared with fp32; the first acceptable one is recommended
    n: int = 200  # samples per precision, the same seeds
    seed: int = 0  # the seeds of `sample --seed`
    sampler: str = "ddim"
    sampling_steps: int = 50
    batch_size: int = 50
    test_images: int = 200
    bootstrap: int = 2000

    @classmethod
    def quick(cls, precisions: tuple[str, ...] = REDUCED) -> "PrecisionStudyConfig":
        return cls(precisions=precisions, n=2, sampling_steps=2, batch_size=2, test_images=4, bootstrap=50)


@dataclass(frozen=True)
class AcceptanceRule:
    """When a reduced precision may replace fp32: its labels of the real test images agree with fp32's on at
    least `min_agreement` of the pixels, and neither the test mIoU difference nor the difference in the
    sample labels' mIoU against the oracle can be a loss over `max_loss` (the 95 % interval's lower end is
    at least -max_loss: an interval holding 0 but reaching further down is not enough evidence)."""

    min_agreement: float = 0.99
    max_loss: float = 0.005  # mIoU as a fraction: 0.5 points

    def text(self) -> str:
        return (f"test-label pixel agreement with fp32 ≥ {100 * self.min_agreement:g} %, and the 95 % intervals "
                f"of the test mIoU difference and of the sample labels' mIoU difference against the oracle "
                f"both above −{100 * self.max_loss:g} points")

    def judge(self, row: dict) -> dict:
        """{'acceptable': bool, 'checks': {name: passed}} of one reduced precision's row of the report."""
        checks = {"test label agreement": row["test"]["pixel_agreement"] >= self.min_agreement,
                  "test mIoU difference": row["test"]["miou_difference"]["ci_low"] >= -self.max_loss,
                  "sample label mIoU difference": row["samples"]["label_miou_difference"]["ci_low"] >= -self.max_loss}
        return {"acceptable": all(checks.values()), "checks": checks}


def recommend(rows: dict, rule: AcceptanceRule, order: tuple[str, ...]) -> str:
    """The first precision of `order` the rule accepts, else fp32."""
    return next((p for p in order if rule.judge(rows[p])["acceptable"]), BASELINE)


def check_precisions(precisions: tuple[str, ...], device) -> None:
    allowed = REDUCED + (("tf32",) if device.type == "cuda" else ())
    bad = [p for p in precisions if p not in allowed]
    if not precisions or bad:
        why = " (tf32 is fp32 on a CPU)" if "tf32" in bad else ""
        raise OptionError("--precisions", f"expected a comma-separated list of {', '.join(allowed)}{why}, "
                                          f"got {','.join(precisions) or 'nothing'}")


def _labeller(ensemble: Path, model: str, precision: str, device):
    from ..generators.loading import load_generator, speed_up
    from ..pipeline.generate import Labeller
    return Labeller(ensemble, speed_up(load_generator(model, device), precision), device)


def _arrays(out: Path, precision: str, ensemble: Path, model: str, test_images: np.ndarray,
            cfg: PrecisionStudyConfig, device) -> dict:
    """One precision's test labels, samples and sample labels with their seconds, computed once and kept."""
    from ..seeds import sample_in_full_batches, sample_seed
    folder = out / precision
    if not (folder / "timing.json").is_file():  # written last: the arrays beside it are complete
        labeller = _labeller(ensemble, model, precision, device)
        t0 = time.perf_counter()
        test_labels = labeller(test_images).labels
        t1 = time.perf_counter()
        seeds = [sample_seed(cfg.seed, i) for i in range(cfg.n)]
        samples = np.concatenate([b.permute(0, 2, 3, 1).numpy() for b in sample_in_full_batches(
            labeller.source.generator, seeds, cfg.batch_size, sampler=cfg.sampler, num_steps=cfg.sampling_steps)])
        t2 = time.perf_counter()
        sample_labels = labeller(samples).labels
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "arrays.npz", test_labels=test_labels.astype(np.uint8), samples=samples,
                            sample_labels=sample_labels.astype(np.uint8))
        write_json(folder / "timing.json", {"seconds_per_test_image": (t1 - t0) / len(test_images),
                                            "seconds_per_sample": (t2 - t1) / cfg.n})
    with np.load(folder / "arrays.npz") as z:
        return {k: z[k] for k in z.files} | {"timing": read_json(folder / "timing.json")}


def _oracle_side(oracle, arrays: dict, num_classes: int) -> dict:
    """The oracle's sample check on one precision's samples, plus the per-sample confusions that pair them."""
    import torch
    from ..data.oracle import sample_report
    from ..segmenters.model import predict
    samples = arrays["samples"]
    report = sample_report(oracle, samples)
    masks = report.pop("_sample_predictions")
    flipped = predict(oracle, torch.from_numpy(samples).permute(0, 3, 1, 2).flip(-1)).flip(-1).numpy()
    return {"check": report, "flip_confusions": per_item_confusions(flipped, masks, num_classes),
            "label_confusions": per_item_confusions(arrays["sample_labels"], masks, num_classes)}


def _check_summary(check: dict) -> dict:
    keep = ("flip_consistency_miou", "mean_confidence")
    return {**{k: check["samples"][k] for k in keep}, "class_frequency": check["samples"]["class_frequency"],
            "class_frequency_total_variation": check["class_frequency_total_variation"],
            "class_share_interval": check["class_share_interval"], "oracle_miou_on_real": check["oracle_miou_on_real"],
            "real": {k: check["real"][k] for k in keep}}


def _side(arrays: dict, oracle_side: dict, test_cms: np.ndarray, ignore: int) -> dict:
    """The numbers of one precision alone."""
    return {"test_miou": miou_of(test_cms, ignore), "oracle": _check_summary(oracle_side["check"]),
            "sample_label_miou": miou_of(oracle_side["label_confusions"]), "timing": arrays["timing"]}


def _versus(base: dict, other: dict, test_cms: tuple[np.ndarray, np.ndarray], oracle_sides: tuple[dict, dict],
            resamples: int, ignore: int) -> dict:
    """A reduced precision against fp32: agreements, differences and their paired intervals."""
    (b_test, o_test), (b_or, o_or) = test_cms, oracle_sides
    diff = np.abs(base["samples"].astype(np.int16) - other["samples"].astype(np.int16))
    return {"test": {"pixel_agreement": float(np.mean(base["test_labels"] == other["test_labels"])),
                     "images_identical": int(np.all(base["test_labels"] == other["test_labels"], axis=(1, 2)).sum()),
                     "miou_difference": paired_bootstrap(b_test, o_test, ignore_label=ignore, resamples=resamples)},
            "samples": {"mean_abs_pixel_difference": float(diff.mean()), "max_abs_pixel_difference": int(diff.max()),
                        "pixels_identical": float(np.mean(diff == 0)),
                        "label_agreement": float(np.mean(base["sample_labels"] == other["sample_labels"])),
                        "label_miou_difference": paired_bootstrap(b_or["label_confusions"], o_or["label_confusions"],
                                                                  resamples=resamples),
                        "flip_consistency_difference": paired_bootstrap(
                            b_or["flip_confusions"], o_or["flip_confusions"], resamples=resamples)}}


def _inputs(ensemble: Path, data: Path, cfg: PrecisionStudyConfig, dev):
    """The ensemble's config and the test split, checked before anything is written."""
    from ..data.folders import read_labelled, resolve_split
    from ..data.oracle import K
    from ..ensemble.model import load_ensemble
    from ..generators.loading import model_kind
    check_precisions(cfg.precisions, dev)
    if cfg.n < 1 or cfg.test_images < 1 or cfg.batch_size < 1:
        raise OptionError("--n/--test-images/--batch-size", "need at least one sample, test image and batch row")
    ens = load_ensemble(ensemble).cfg
    if ens.feature_spec() is None:
        raise OptionError("--ensemble", f"{ensemble} is a colour ensemble: it runs no UNet, precision changes nothing")
    if model_kind(ens.model or "embedded") == "stylegan2":
        raise OptionError("--ensemble", f"{ensemble}'s model is a StyleGAN2: it runs in fp32 only")
    if ens.num_classes != K or ens.resolution not in (0, 32):
        raise OptionError("--ensemble", f"{ensemble} labels {ens.num_classes} classes at {ens.resolution} px: the "
                                        f"oracle's sample check needs the embedded domain ({K} classes, 32 px)")
    test = read_labelled(resolve_split(data, "test"), ens.num_classes, ens.ignore_label, cfg.test_images,
                         resolution=ens.resolution or None)
    return ens, test


def run_precision_study(out_dir: str | Path, ensemble: str | Path, data: str | Path, cfg: PrecisionStudyConfig, *,
                        device: str = "cpu", rule: AcceptanceRule = AcceptanceRule()) -> dict:
    from ..devices import resolve_device
    from ..environment import provenance
    from ..generators.loading import CUDA_DEFAULT_PRECISION
    from ..paths import EMBEDDED_ORACLE_DIR
    from ..segmenters.model import load_segmenter
    out, ensemble, dev = Path(out_dir), Path(ensemble), resolve_device(device)
    ens, test = _inputs(ensemble, Path(data), cfg, dev)
    write_study_config(out, {"study": "precision", **asdict(cfg), "ensemble": str(ensemble), "data": str(data),
                             "device": str(dev)}, grows=("precisions",))
    oracle = load_segmenter(EMBEDDED_ORACLE_DIR).to(dev)
    names = (BASELINE, *cfg.precisions)
    arrays = {p: _arrays(out, p, ensemble, ens.model or "embedded", test.images, cfg, dev) for p in names}
    test_cms = {p: per_item_confusions(a["test_labels"], test.masks, ens.num_classes, ens.ignore_label)
                for p, a in arrays.items()}
    oracle_sides = {p: _oracle_side(oracle, a, ens.num_classes) for p, a in arrays.items()}
    sides = {p: _side(arrays[p], oracle_sides[p], test_cms[p], ens.ignore_label) for p in names}
    rows = {p: _versus(arrays[BASELINE], arrays[p], (test_cms[BASELINE], test_cms[p]),
                       (oracle_sides[BASELINE], oracle_sides[p]), cfg.bootstrap, ens.ignore_label)
            for p in cfg.precisions}
    for p, row in rows.items():
        row["verdict"] = rule.judge(row)
    recommended = recommend(rows, rule, cfg.precisions)
    report = {"study": "precision", "ensemble": str(ensemble), "model": ens.model or "embedded", "device": str(dev),
              "test_images": len(test), "samples": cfg.n, "seed": cfg.seed, "sampler": cfg.sampler,
              "sampling_steps": cfg.sampling_steps, "batch_size": cfg.batch_size, "bootstrap": cfg.bootstrap,
              "precisions": sides, "versus_fp32": rows,
              "rule": {**asdict(rule), "text": rule.text()}, "recommended": recommended,
              "cuda_default": CUDA_DEFAULT_PRECISION,
              "cuda_default_supported": _supported(CUDA_DEFAULT_PRECISION, recommended, rows),
              **provenance()}
    write_study(out, report, precision_markdown, "precision")
    return report


def _supported(default: str, recommended: str, rows: dict) -> bool | None:
    """Whether the measured precisions back `default` (it is the recommendation, or the rule accepts it);
    None when it was not measured."""
    if default != recommended and default not in rows:
        return None
    return default == recommended or rows[default]["verdict"]["acceptable"]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def precision_markdown(report: dict) -> str:
    sides, rows = report["precisions"], report["versus_fp32"]
    lines = [f"| precision | labels of {report['test_images']} real test images: pixel agreement with fp32 (%) | "
             "identical images | mIoU vs ground truth | Δ mIoU vs fp32 (95 % CI) | s / image |",
             "|---|---:|---:|---:|---|---:|"]
    for p, s in sides.items():
        r = rows.get(p, {}).get("test")
        lines.append(f"| {p} | {_pct(r['pixel_agreement']) if r else '—'} | "
                     f"{r['images_identical'] if r else '—'} | {_pct(s['test_miou'])} | "
                     f"{_interval(r['miou_difference']) if r else '—'} | {s['timing']['seconds_per_test_image']:.3f} |")
    lines += ["", f"| precision | {report['samples']} samples ({report['sampler']}-{report['sampling_steps']}, batch "
                  f"{report['batch_size']}, seeds of `sample --seed {report['seed']}`): mean abs pixel difference "
                  "vs fp32 (0-255) | oracle flip-consistency mIoU | Δ (95 % CI) | oracle mean confidence | class "
                  "frequency TV | ensemble labels: agreement with fp32's (%) | label mIoU vs oracle | Δ (95 % CI) | "
                  "s / sample |", "|---|---:|---:|---|---:|---:|---:|---:|---|---:|"]
    for p, s in sides.items():
        r, o = rows.get(p, {}).get("samples"), s["oracle"]
        pixels = f"{r['mean_abs_pixel_difference']:.3f}" if r else "—"
        lines.append(f"| {p} | {pixels} | "
                     f"{_pct(o['flip_consistency_miou'])} | {_interval(r['flip_consistency_difference']) if r else '—'} | "
                     f"{o['mean_confidence']:.3f} | {o['class_frequency_total_variation']:.3f} | "
                     f"{_pct(r['label_agreement']) if r else '—'} | {_pct(s['sample_label_miou'])} | "
                     f"{_interval(r['label_miou_difference']) if r else '—'} | {s['timing']['seconds_per_sample']:.3f} |")
    return "\n".join(lines) + "\n\n" + _verdict_text(report) + "\n"


def _interval(d: dict) -> str:
    """A difference in mIoU points with two decimals: precision changes are small."""
    return (f"{100 * d['difference']:+.2f} [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]"
            + ("" if d["significant"] else " (n.s.)"))


def _verdict_text(report: dict) -> str:
    verdicts = "; ".join(
        f"{p}: " + ("acceptable" if r["verdict"]["acceptable"] else "not acceptable ("
                    + ", ".join(k for k, ok in r["verdict"]["checks"].items() if not ok) + " failed)")
        for p, r in report["versus_fp32"].items())
    fp32 = report["precisions"][BASELINE]["timing"]["seconds_per_sample"]
    speed = ", ".join(f"{p} {s['timing']['seconds_per_sample'] / fp32:.1f}x" for p, s in report["precisions"].items()
                      if p != BASELINE)
    cuda = report["cuda_default"]
    return (f"Rule: {report['rule']['text']}. {verdicts}. Recommended: **{report['recommended']}**; the CUDA default "
            f"(`--precision auto` on a GPU) is {cuda}, which this evidence "
            + {True: "supports", False: "does not support", None: "leaves untested"}[report["cuda_default_supported"]]
            + f". Autocast on {report['device']}: its reduced-precision kernels, not a GPU's. Sampling time against "
              f"fp32 on this machine: {speed}.")
