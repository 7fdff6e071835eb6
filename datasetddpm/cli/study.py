"""`datasetddpm study <name>`: one command per measured question, each writing study.json, its markdown table
(study.md) and its picture (study.png)."""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as opt
from .app import app, command
from .runtime import Runtime, runtime

study_app = typer.Typer(no_args_is_help=True, help="Measured studies (study.json, study.md and study.png in --out).")
app.add_typer(study_app, name="study")

# Options most studies share.
Quick = Annotated[bool, typer.Option("--quick", help="Tiny sizes (a check that every stage runs), not a measurement.")]
Workers = Annotated[int, typer.Option("--workers", help="CPU worker processes for sampling and labelling.")]
StudyDevice = Annotated[str, typer.Option("--device", help="cpu (default), cuda or cuda:N: every stage on that device.")]
LabellingEnsemble = Annotated[Path, typer.Option("--ensemble", help="Ensemble that labels the samples.")]
ScoredData = Annotated[Path, typer.Option("--data", help="Labelled dataset root: real/train picks DeepLab's epoch, "
                                                         "real/test scores it.")]
DeepLabEpochs = Annotated[int, typer.Option("--deeplab-epochs", help="DeepLab epochs per run.")]
PresetModel = Annotated[Optional[str], typer.Option("--model", help="Model (default: the preset's).")]
TestImages = Annotated[int, typer.Option("--test-images", help="Test images scored.")]


@dataclass(frozen=True)
class SegmenterRecipe:
    """The segmenter every documented sampling study trains (docs/results: `--arch unet --real-fraction 0.1
    --deeplab-epochs 12`, input x2): the defaults of the studies' segmenter options. A study records the
    values it ran with (study_config.json), so a folder made with other values is refused, never mixed in;
    tests/test_cli_runtime.py checks these against the commands of the committed studies."""

    arch: str = "unet"
    real_fraction: float = 0.1  # the real labelled images' share of every DeepLab epoch
    epochs: int = 12
    input_scale: int = 2


RECIPE = SegmenterRecipe()

# The runtime options every study ends in, after its own: (name, option, default).
_RUNTIME_OPTIONS = (("threads", opt.Threads, None), ("device", StudyDevice, "cpu"), ("quiet", opt.Quiet, False))


def study(name: str, *, quiet_option: bool = True):
    """Register `datasetddpm study NAME`. The body takes its own options and `rt`, the runtime made from the
    options added here (--threads, --device, and --quiet unless `quiet_option=False`); it runs the study,
    and its table (study.md in --out) is printed after."""
    tail = [inspect.Parameter(option, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
            for option, annotation, default in _RUNTIME_OPTIONS if quiet_option or option != "quiet"]

    def decorate(body):
        @functools.wraps(body)
        def wrapper(*, threads: int | None = None, device: str = "cpu", quiet: bool = False, **options):
            body(**options, rt=runtime(device=device, threads=threads, quiet=quiet))
            typer.echo((Path(options["out"]) / "study.md").read_text())
        signature = inspect.signature(body, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "rt"]
        wrapper.__signature__ = signature.replace(parameters=[*own, *tail])
        hints = typing.get_type_hints(body, include_extras=True)
        wrapper.__annotations__ = {**{k: v for k, v in hints.items() if k != "rt"},
                                   **{p.name: p.annotation for p in tail}}
        return command(name, group=study_app)(wrapper)
    return decorate


def _runtime_args(rt: Runtime, workers: int | None = None) -> dict:
    """A `run_*_study`'s runtime keywords. One that starts worker processes gets the options as given (each
    worker resolves the device and pins its threads); one that computes here, the device resolved here."""
    if workers is None:
        return dict(device=rt.device, progress=rt.progress)
    return dict(workers=workers, threads=rt.threads, device=rt.device_option, progress=rt.progress)


@study("samplers")
def samplers_command(
    ensemble: Annotated[Path, typer.Option(help="Ensemble that labels the samples (trained on real labelled images).")],
    data: ScoredData,
    out: opt.Out = Path("runs/study_samplers"),
    settings: Annotated[str, typer.Option(help="sampler:steps list; the first is the baseline.")] = "ddpm:1000,ddim:50,dpm++:20,ddim:20,dpm++:10",
    n: Annotated[int, typer.Option(help="Samples per setting (the same seeds for every setting).")] = 256,
    model: opt.Model = "embedded",
    deeplab_epochs: Annotated[int, typer.Option(help="DeepLab epochs per setting.")] = RECIPE.epochs,
    arch: opt.SegmenterArch = RECIPE.arch,
    real_fraction: opt.RealFraction = RECIPE.real_fraction,
    input_scale: Annotated[int, typer.Option(help="DeepLabV3 input upsampling.")] = RECIPE.input_scale,
    deeplab_seeds: Annotated[str, typer.Option(help="DeepLab training seeds per setting.")] = "0,1,2",
    timing_samples: Annotated[int, typer.Option(help="Samples timed per setting, side by side.")] = 8,
    workers: Workers = 1,
    seed: opt.Seed = 0,
    *,
    rt: Runtime,
) -> None:
    """Full ancestral DDPM vs fast samplers: UNet evaluations, s/sample, label and DeepLab mIoU with paired CIs."""
    from ..studies.samplers import SamplerSetting, SamplerStudyConfig, run_sampler_study
    cfg = SamplerStudyConfig(settings=tuple(SamplerSetting.parse(s) for s in settings.split(",") if s.strip()),
                             model=model, n=n, seed=seed, deeplab_epochs=deeplab_epochs, input_scale=input_scale,
                             deeplab_seeds=opt.parse_ints("--deeplab-seeds", deeplab_seeds),
                             timing_samples=timing_samples, arch=arch, real_fraction=real_fraction)
    run_sampler_study(out, ensemble, data, cfg, **_runtime_args(rt, workers))


@study("filter")
def filter_command(
    ensemble: LabellingEnsemble,
    data: ScoredData,
    out: opt.Out = Path("runs/study_filter"),
    n: Annotated[int, typer.Option(help="Samples (one run, labelled once).")] = 1112,
    drops: Annotated[str, typer.Option(help="Drop fractions to compare; the first is the baseline.")] = "0,0.1,0.2",
    deeplab_seeds: Annotated[str, typer.Option(help="DeepLab training seeds per drop fraction.")] = "0,1,2",
    model: opt.Model = "embedded",
    deeplab_epochs: DeepLabEpochs = RECIPE.epochs,
    arch: opt.SegmenterArch = RECIPE.arch,
    real_fraction: opt.RealFraction = RECIPE.real_fraction,
    quick: Quick = False,
    workers: Workers = 1,
    seed: opt.Seed = 0,
    *,
    rt: Runtime,
) -> None:
    """Is the 10 % drop worth it? JS uncertainty vs the oracle's masks (AUROC for wrong pixels and bad
    images), and DeepLab mIoU at each drop fraction over training seeds, with intervals."""
    from ..studies.filter import FilterStudyConfig, run_filter_study
    if quick:
        cfg = replace(FilterStudyConfig.quick(model), arch=arch, real_fraction=real_fraction)
    else:
        cfg = FilterStudyConfig(model=model, n=n, seed=seed, deeplab_epochs=deeplab_epochs,
                                drops=tuple(_floats("--drops", drops)),
                                deeplab_seeds=opt.parse_ints("--deeplab-seeds", deeplab_seeds), arch=arch,
                                real_fraction=real_fraction)
    run_filter_study(out, ensemble, data, cfg, **_runtime_args(rt, workers))


def _floats(option: str, text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise opt.option_error(option, f"expected comma-separated numbers, got {text!r}") from None


@study("labelled-count")
def labelled_count_command(
    data: Annotated[Path, typer.Option(help="Labelled dataset root: subsets of real/train, scored on real/test.")],
    out: opt.Out = Path("runs/study_labelled_count"),
    counts: Annotated[str, typer.Option(help="Numbers of labelled images to train on.")] = "5,10,20,40",
    seeds: Annotated[str, typer.Option(help="Seeds (each draws its own subset and ensemble).")] = "0,1,2",
    preset: opt.Preset = "embedded",
    model: PresetModel = None,
    test_images: TestImages = 200,
    quick: Quick = False,
    *,
    rt: Runtime,
) -> None:
    """Direct-mode mIoU against the number of labelled images (paper Table 4), mean ± std over seeds."""
    from ..studies.labelled_count import LabelledCountConfig, run_labelled_count_study
    cfg = LabelledCountConfig.quick(model) if quick else LabelledCountConfig(
        preset=preset, model=model, counts=opt.parse_ints("--counts", counts), seeds=opt.parse_ints("--seeds", seeds),
        test_images=test_images)
    run_labelled_count_study(out, data, cfg, **_runtime_args(rt))


@study("suggest")
def suggest_command(
    data: Annotated[Path, typer.Option(help="Labelled dataset root: real/train is the pool (its masks stand in for "
                                            "the annotator), real/test scores each arm.")],
    out: opt.Out = Path("runs/study_suggest"),
    start: Annotated[int, typer.Option(help="Random labelled images every arm starts from.")] = 10,
    add: Annotated[int, typer.Option(help="Images each arm adds (random, uncertainty, uncertainty + diversity).")] = 10,
    seeds: Annotated[str, typer.Option(help="Seeds (each draws its own start set, random picks and ensembles).")] = "0,1,2,3,4",
    preset: opt.Preset = "embedded",
    model: PresetModel = None,
    test_images: TestImages = 200,
    quick: Quick = False,
    *,
    rt: Runtime,
) -> None:
    """Which images to annotate next: `suggest`'s picks against random ones, direct-mode mIoU over seeds with intervals."""
    from ..studies.suggest import SuggestStudyConfig, run_suggest_study
    cfg = SuggestStudyConfig.quick(model) if quick else SuggestStudyConfig(
        preset=preset, model=model, start=start, add=add, seeds=opt.parse_ints("--seeds", seeds), test_images=test_images)
    run_suggest_study(out, data, cfg, **_runtime_args(rt))


@study("main")
def main_command(
    data: Annotated[Path, typer.Option(help="Labelled dataset root: real/train (the labelled images; also picks "
                                            "DeepLab's epoch), real/test (scores every row).")],
    out: opt.Out = Path("runs/study_main"),
    model: opt.Model = "embedded",
    gan: Annotated[str, typer.Option(help="StyleGAN2 model for the DatasetGAN row ('embedded-stylegan2' = shipped; "
                                          "'' leaves the row out).")] = "embedded-stylegan2",
    pairs: Annotated[int, typer.Option(help="Kept pairs per DeepLab row.")] = 500,
    annotated: Annotated[int, typer.Option(help="Oracle-annotated samples for the paper protocol and DatasetGAN.")] = 20,
    seeds: Annotated[str, typer.Option(help="Seeds: every ensemble's and DeepLab's training seed.")] = "0,1,2,3,4",
    deeplab_epochs: Annotated[int, typer.Option(help="DeepLabV3 epochs per row and seed.")] = RECIPE.epochs,
    input_scale: Annotated[int, typer.Option(help="DeepLabV3 input upsampling.")] = RECIPE.input_scale,
    arch: opt.SegmenterArch = RECIPE.arch,
    lr_schedule: Annotated[str, typer.Option(help="The DeepLab rows' learning rate: constant | cosine | poly.")] = "constant",
    rows: Annotated[str, typer.Option(help="Only these rows (comma-separated: direct-ddpm, colour-rgb-3x3, datasetddpm, "
                                           "direct-ddpm-paper-protocol, datasetddpm-paper-protocol, datasetgan); a "
                                           "DeepLab row brings its labeller's direct row. '' = every row.")] = "",
    real_fraction: Annotated[float, typer.Option(help="Mix each DeepLab row's labelled images (its ensemble's: the "
                                                      "real ones, or the annotated samples) into every epoch at this "
                                                      "share; 0 = synthetic pairs only.")] = RECIPE.real_fraction,
    quick: Quick = False,
    workers: Workers = 1,
    *,
    rt: Runtime,
) -> None:
    """Paper Table 2 on the embedded domain: direct mode, colour, DatasetDDPM (both labeller protocols) and
    DatasetGAN, mean ± std over seeds, with each DeepLab row's gap to its labeller."""
    from ..studies.main import MainStudyConfig, run_main_study
    choices = dict(real_fraction=real_fraction, arch=arch, lr_schedule=lr_schedule,
                   rows_only=tuple(r.strip() for r in rows.split(",") if r.strip()))
    cfg = MainStudyConfig.quick(model, gan, **choices) if quick else MainStudyConfig(
        model=model, gan=gan, pairs=pairs, annotated=annotated, seeds=opt.parse_ints("--seeds", seeds),
        deeplab_epochs=deeplab_epochs, input_scale=input_scale, **choices)
    run_main_study(out, data, cfg, **_runtime_args(rt, workers))


@study("mining")
def mining_command(
    ensemble: LabellingEnsemble,
    data: ScoredData,
    out: opt.Out = Path("runs/study_mining"),
    prefer_classes: Annotated[str, typer.Option(help="Classes to mine for (names or ids).")] = "eye,beak",
    n: Annotated[int, typer.Option(help="Samples (one run, labelled once).")] = 2224,
    pairs: Annotated[int, typer.Option(help="Pairs each arm keeps.")] = 1000,
    deeplab_seeds: Annotated[str, typer.Option(help="DeepLab training seeds per arm.")] = "0,1,2",
    model: opt.Model = "embedded",
    deeplab_epochs: DeepLabEpochs = RECIPE.epochs,
    arch: opt.SegmenterArch = RECIPE.arch,
    real_fraction: opt.RealFraction = RECIPE.real_fraction,
    quick: Quick = False,
    workers: Workers = 1,
    seed: opt.Seed = 0,
    *,
    rt: Runtime,
) -> None:
    """Rare-part mining: DeepLab on the pairs richest in --prefer-classes vs on the least uncertain ones,
    at the same number of pairs, per-class IoU over seeds with intervals."""
    from ..studies.mining import MiningStudyConfig, run_mining_study
    cfg = MiningStudyConfig.quick(model, prefer_classes) if quick else MiningStudyConfig(
        model=model, prefer=prefer_classes, n=n, pairs=pairs, seed=seed, deeplab_epochs=deeplab_epochs,
        deeplab_seeds=opt.parse_ints("--deeplab-seeds", deeplab_seeds))
    cfg = replace(cfg, arch=arch, real_fraction=real_fraction)
    run_mining_study(out, ensemble, data, cfg, **_runtime_args(rt, workers))


@study("segmenter")
def segmenter_command(
    run: Annotated[Path, typer.Option(help="A finalized run: DeepLabV3 trains on its kept pairs.")],
    data: Annotated[Path, typer.Option(help="Labelled dataset root: real/train picks DeepLab's epoch (and is mixed in "
                                            "by the +real setting), real/test scores it.")],
    out: opt.Out = Path("runs/study_segmenter"),
    settings: Annotated[str, typer.Option(help="Settings to compare (x2, x1, x4, x2+real, x2-long, x2+real-long, "
                                               "unet+real, unet+real-x1, unet+real-x4, x2+real-cosine, "
                                               "unet+real-cosine); the first is the baseline.")]
    = "x2,x1,x4,x2+real,x2-long",
    deeplab_seeds: Annotated[str, typer.Option(help="DeepLab training seeds per setting.")] = "0,1,2",
    epochs: Annotated[int, typer.Option(help="The baseline's epochs (x2-long trains twice as many).")] = RECIPE.epochs,
    real_fraction: Annotated[float, typer.Option(help="x2+real: the real images' share of each epoch.")] = RECIPE.real_fraction,
    quick: Quick = False,
    workers: Annotated[int, typer.Option(help="Data-parallel CPU worker processes per DeepLab.")] = 1,
    *,
    rt: Runtime,
) -> None:
    """Which DeepLabV3 setting learns most from the pairs: input scale, real images mixed in, longer
    training, each against the baseline over seeds with intervals and measured training time."""
    from ..studies.segmenter import SegmenterStudyConfig, run_segmenter_study
    cfg = SegmenterStudyConfig.quick() if quick else SegmenterStudyConfig(
        settings=tuple(s.strip() for s in settings.split(",") if s.strip()),
        deeplab_seeds=opt.parse_ints("--deeplab-seeds", deeplab_seeds), epochs=epochs, real_fraction=real_fraction)
    run_segmenter_study(out, run, data, cfg, **_runtime_args(rt, workers))


@study("trajectory")
def trajectory_command(
    data: Annotated[Path, typer.Option(help="Labelled dataset root: real/train trains the ensembles.")],
    out: opt.Out = Path("runs/study_trajectory"),
    n: Annotated[int, typer.Option(help="Samples (one run), labelled three ways per seed.")] = 256,
    seeds: Annotated[str, typer.Option(help="Ensemble training seeds.")] = "0,1,2",
    model: opt.Model = "embedded",
    sampler: Annotated[str, typer.Option(help="ddpm | ddim | dpm++")] = "ddim",
    sampling_steps: Annotated[int, typer.Option(help="Reverse diffusion steps.")] = 20,
    quick: Quick = False,
    workers: Workers = 1,
    seed: opt.Seed = 0,
    *,
    rt: Runtime,
) -> None:
    """Labels from the sampler's own activations (`sample --trajectory-features`) vs a feature pass: label
    mIoU against the oracle over seeds with intervals, and the labelling cost per sample."""
    from ..studies.trajectory import TrajectoryStudyConfig, run_trajectory_study
    cfg = TrajectoryStudyConfig.quick(model) if quick else TrajectoryStudyConfig(
        model=model, n=n, seed=seed, sampler=sampler, sampling_steps=sampling_steps,
        seeds=opt.parse_ints("--seeds", seeds))
    run_trajectory_study(out, data, cfg, **_runtime_args(rt, workers))


@study("real-images")
def real_images_command(
    ensemble: Annotated[Path, typer.Option(help="Ensemble that labels samples and real images (diffusion features).")],
    data: ScoredData,
    images: Annotated[Path, typer.Option(help="Unlabelled real images (the first ceil(pairs / 0.9) in name order are used).")],
    out: opt.Out = Path("runs/study_real_images"),
    pairs: Annotated[int, typer.Option(help="Pairs the synthetic and the real arm keep (both: twice as many).")] = 500,
    deeplab_seeds: Annotated[str, typer.Option(help="DeepLab training seeds per arm.")] = "0,1,2",
    model: opt.Model = "embedded",
    deeplab_epochs: DeepLabEpochs = RECIPE.epochs,
    arch: opt.SegmenterArch = RECIPE.arch,
    real_fraction: opt.RealFraction = RECIPE.real_fraction,
    quick: Quick = False,
    workers: Workers = 1,
    seed: opt.Seed = 0,
    *,
    rt: Runtime,
) -> None:
    """DeepLab on labelled samples vs on your unlabelled real images labelled by the same ensemble vs both,
    over seeds with intervals: is sampling worth it when real images are at hand?"""
    from ..studies.real_images import RealImagesStudyConfig, run_real_images_study
    cfg = RealImagesStudyConfig.quick(model) if quick else RealImagesStudyConfig(
        model=model, pairs=pairs, seed=seed, deeplab_epochs=deeplab_epochs,
        deeplab_seeds=opt.parse_ints("--deeplab-seeds", deeplab_seeds))
    cfg = replace(cfg, arch=arch, real_fraction=real_fraction)
    run_real_images_study(out, ensemble, data, images, cfg, **_runtime_args(rt, workers))


@study("features")
def features_command(
    data: Annotated[Path, typer.Option(help="Labelled dataset root: real/train trains every MLP, real/test scores it.")],
    out: opt.Out = Path("runs/study_features"),
    blocks: Annotated[str, typer.Option(help="Decoder blocks of the grid, e.g. '0,2,4', or 'all'.")] = "all",
    steps: Annotated[str, typer.Option(help="Diffusion steps t of the grid.")] = "10,25,50,100,200,400,700",
    grid_seeds: Annotated[str, typer.Option(help="Seeds of the grid's MLPs (one MLP per cell and seed).")] = "0",
    seeds: Annotated[str, typer.Option(help="Ensemble training seeds of the shared vs independent noise comparison.")] = "0,1,2",
    preset: opt.Preset = "embedded",
    model: PresetModel = None,
    test_images: TestImages = 200,
    quick: Quick = False,
    *,
    rt: Runtime,
) -> None:
    """Which blocks and steps carry the semantics, for small and large classes (paper Fig. 2-3), and one
    noise tensor shared by all images vs each image its own (paper Table 5), over seeds with an interval."""
    from ..studies.features import FeaturesStudyConfig, run_features_study
    cfg = FeaturesStudyConfig.quick(model) if quick else FeaturesStudyConfig(
        preset=preset, model=model, blocks=None if blocks == "all" else opt.parse_ints("--blocks", blocks),
        steps=opt.parse_ints("--steps", steps), grid_seeds=opt.parse_ints("--grid-seeds", grid_seeds),
        seeds=opt.parse_ints("--seeds", seeds), test_images=test_images)
    run_features_study(out, data, cfg, **_runtime_args(rt))


@study("synthetic-size")
def synthetic_size_command(
    ensemble: LabellingEnsemble,
    data: ScoredData,
    out: opt.Out = Path("runs/study_synthetic_size"),
    sizes: Annotated[str, typer.Option(help="Kept pairs per DeepLab row, increasing (one run of ceil(largest / 0.9) samples).")] = "250,500,1000,2000,4000",
    deeplab_seeds: Annotated[str, typer.Option(help="DeepLab training seeds per size.")] = "0,1,2",
    budget: Annotated[str, typer.Option(help="DeepLab budget: 'epochs' (the same epochs for every size: larger sets get "
                                             "more steps) or 'steps' (every size the largest set's steps).")] = "epochs",
    model: opt.Model = "embedded",
    deeplab_epochs: Annotated[int, typer.Option(help="DeepLab epochs per run (with --budget steps: the largest set's).")] = RECIPE.epochs,
    arch: opt.SegmenterArch = RECIPE.arch,
    real_fraction: opt.RealFraction = RECIPE.real_fraction,
    quick: Quick = False,
    workers: Annotated[int, typer.Option(help="CPU worker processes for sampling, labelling and DeepLab.")] = 1,
    seed: opt.Seed = 0,
    *,
    rt: Runtime,
) -> None:
    """DeepLab mIoU against the number of synthetic pairs (paper Appendix B), over seeds, each size's gain over
    the previous with an interval, and where it saturates."""
    from ..studies.synthetic_size import SyntheticSizeConfig, run_synthetic_size_study
    cfg = SyntheticSizeConfig.quick(model) if quick else SyntheticSizeConfig(
        model=model, sizes=opt.parse_ints("--sizes", sizes), seed=seed, budget=budget, deeplab_epochs=deeplab_epochs,
        deeplab_seeds=opt.parse_ints("--deeplab-seeds", deeplab_seeds))
    cfg = replace(cfg, arch=arch, real_fraction=real_fraction)
    run_synthetic_size_study(out, ensemble, data, cfg, **_runtime_args(rt, workers))


@study("precision", quiet_option=False)
def precision_command(
    ensemble: Annotated[Path, typer.Option(help="Ensemble (diffusion features, the embedded domain) that labels the "
                                                "test images and the samples at each precision.")],
    data: Annotated[Path, typer.Option(help="Labelled dataset root: real/test is labelled at each precision.")],
    out: opt.Out = Path("runs/study_precision"),
    precisions: Annotated[str, typer.Option(help="Reduced precisions compared with fp32 (bf16, fp16; tf32 on a GPU); "
                                                 "the first acceptable one is recommended.")] = "bf16,fp16",
    n: Annotated[int, typer.Option(help="Samples per precision (the same seeds).")] = 200,
    test_images: TestImages = 200,
    sampling_steps: Annotated[int, typer.Option(help="DDIM steps (sample's default).")] = 50,
    batch_size: Annotated[int, typer.Option(help="Samples per UNet call (sample's default).")] = 50,
    quick: Quick = False,
    seed: opt.Seed = 0,
    *,
    rt: Runtime,
) -> None:
    """What --precision bf16/fp16 costs against fp32: label agreement and mIoU difference on real test images,
    and on samples of the same seeds the pixel difference, the oracle's sample check and label agreement, all
    with paired intervals; recommends the first precision a stated rule accepts."""
    from ..studies.precision import PrecisionStudyConfig, run_precision_study
    chosen = tuple(p.strip().lower() for p in precisions.split(",") if p.strip())
    cfg = PrecisionStudyConfig.quick(chosen) if quick else PrecisionStudyConfig(
        precisions=chosen, n=n, seed=seed, sampling_steps=sampling_steps, batch_size=batch_size,
        test_images=test_images)
    run_precision_study(out, ensemble, data, cfg, device=rt.device_option)  # it draws no progress bars
