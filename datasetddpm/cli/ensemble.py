"""`datasetddpm train-ensemble | segment | evaluate`: direct DDPM mode."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as opt
from .app import command
from .runtime import runtime

EnsembleDir = Annotated[Path, typer.Option("--ensemble", help="Ensemble checkpoint directory (from train-ensemble).")]


@command("train-ensemble")
def train_ensemble_command(
    data: Annotated[Path, typer.Option(help="Labelled folder: a dataset root (uses real/train) or a folder of images + masks.")],
    out: opt.Out,
    preset: opt.Preset = "embedded",
    model: Annotated[Optional[str], typer.Option(help="Diffusion model: a checkpoint folder, 'embedded', or "
                                                 "adm:<flags>:<file.pt> (default: the preset's; paper presets need one).")] = None,
    blocks: opt.Blocks = None,
    steps: opt.Steps = None,
    noise_seed: Annotated[Optional[int], typer.Option(help="Seed of the fixed feature noise (default: preset).")] = None,
    ignore_label: opt.IgnoreLabel = None,
    num_classes: opt.NumClasses = None,
    class_names: opt.ClassNames = None,
    resolution: opt.Resolution = None,
    generator: opt.GeneratorKind = None,
    colour: Annotated[bool, typer.Option(help="Use the RGB-3x3 colour baseline instead of diffusion features.")] = False,
    members: Annotated[int, typer.Option(help="MLPs in the ensemble.")] = 10,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use only the first N labelled images.")] = None,
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    threads: opt.Threads = None,
    precision: opt.Precision = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an ensemble in --out trained with other "
                                            "options (runs labelled with it then point at another model).")] = False,
    dry_run: opt.DryRun = False,
    quiet: opt.Quiet = False,
) -> None:
    """Train the pixel MLP ensemble on a labelled folder; writes safetensors + JSON (no pickles).

    The checkpoint records the classes, ignore label, blocks, steps and model, so segment / evaluate /
    label need no preset. Every image and mask is validated before any feature is computed."""
    from ..ensemble.train import EnsembleTrainConfig
    from ..workflows import resolve_problem, train_ensemble_folder
    rt = runtime(device=device, threads=threads, quiet=quiet, precision=precision)
    if members < 1:
        raise opt.option_error("--members", f"must be >= 1, got {members}")
    from ..generators.loading import resolve_model
    model = resolve_model(model, generator)
    problem = resolve_problem(preset, model=model, blocks=opt.parse_ints("--blocks", blocks),
                              steps=opt.parse_ints("--steps", steps), noise_seed=noise_seed,
                              ignore_label=ignore_label, num_classes=num_classes, resolution=resolution,
                              class_names=opt.parse_names("--class-names", class_names), require_model=not colour)
    if not colour:  # DatasetGAN mode: synthesis layers, no steps (the preset's steps are a diffusion model's)
        from ..generators.loading import stylegan2_problem
        problem = stylegan2_problem(problem, opt.parse_ints("--blocks", blocks), steps, noise_seed)
    if dry_run:
        from ..workflows import plan_ensemble_folder
        typer.echo(plan_ensemble_folder(data, out, problem, colour=colour, limit=limit,
                                        train=EnsembleTrainConfig(members=members, seed=seed), device=rt.device).text())
        return
    log = train_ensemble_folder(data, out, problem, colour=colour, limit=limit,
                                train=EnsembleTrainConfig(members=members, seed=seed), device=rt.device,
                                overwrite=overwrite, progress=rt.progress)
    typer.echo(f"ensemble: {out} ({log['pixels']} pixels, {log['epochs']} epochs, {log['seconds_total']} s)")
    _print_class_diagnostics(log)
    if log["unchanged"]:
        typer.echo(f"{out} already held these weights, bit for bit: left as it was, so runs labelled with it "
                   f"stay valid")


def _print_class_diagnostics(log: dict) -> None:
    """Each class's labelled pixels and training recall; a warning line per class the labeller cannot learn,
    printed now, before any sampling (a class the labeller misses, every sample's label misses too)."""
    from ..ensemble.diagnostics import class_summary
    typer.echo("\n".join(class_summary(tuple(log["class_names"]), log["class_pixels"], log["training_recall"],
                                       log["ignore_label"])))
    for warning in log["class_warnings"]:
        typer.echo(f"Warning: {warning}", err=True)


@command("segment")
def segment_command(
    images: Annotated[Path, typer.Option(help="Folder of images to segment.")],
    out: opt.Out,
    ensemble: Annotated[Optional[Path], typer.Option(help="Ensemble checkpoint (direct DDPM mode).")] = None,
    segmenter: Annotated[Optional[Path], typer.Option(help="Trained segmenter (train-deeplab's <out>/best); no diffusion model needed.")] = None,
    model: opt.ModelOverride = None,
    generator: opt.GeneratorKind = None,
    device: opt.Device = "auto",
    threads: opt.Threads = None,
    precision: opt.Precision = "auto",
    quiet: opt.Quiet = False,
) -> None:
    """Segment images with an ensemble (direct DDPM mode) or a trained segmenter; writes palette PNG masks."""
    from ..workflows import segment_folder
    rt = runtime(device=device, threads=threads, quiet=quiet, precision=precision)
    n = segment_folder(images, out, ensemble=ensemble, segmenter=segmenter, model=model, generator=generator,
                       device=rt.device, progress=rt.progress)
    typer.echo(f"wrote {n} masks to {out}")


@command("evaluate")
def evaluate_command(
    ensemble: EnsembleDir,
    data: Annotated[Path, typer.Option(help="Labelled test folder: a dataset root (uses real/test) or a folder.")],
    out: Annotated[Optional[Path], typer.Option(help="Write the result as JSON here.")] = None,
    model: opt.ModelOverride = None,
    limit: opt.TestLimit = None,
    class_report: opt.ClassReport = False,
    device: opt.Device = "auto",
    threads: opt.Threads = None,
    precision: opt.Precision = "auto",
    quiet: opt.Quiet = False,
) -> None:
    """Per-class IoU and mIoU (reference protocol) on a labelled test split."""
    from ..reporting.console import print_evaluation
    from ..workflows import evaluate_folder
    rt = runtime(device=device, threads=threads, quiet=quiet, precision=precision)
    ev = evaluate_folder(ensemble, data, out, model=model, limit=limit, device=rt.device, progress=rt.progress,
                         class_report=class_report)
    if ev.class_report is not None:
        from ..reporting.class_table import print_class_report
        print_class_report(ev.class_report, f"{ensemble} on {data} ({ev.num_images} images)")
    else:
        print_evaluation(ev, f"{ensemble} on {data} ({ev.num_images} images)")


@command("suggest")
def suggest_command(
    images: Annotated[Path, typer.Option(help="Folder of unlabelled real images.")],
    ensemble: EnsembleDir,
    out: opt.Out,
    k: Annotated[int, typer.Option("--k", help="Images to suggest for annotation.")] = 10,
    diversity: Annotated[bool, typer.Option("--diversity/--no-diversity", help="Pick among the 3k most uncertain by "
                                            "k-center on pooled features (default), or just the k most uncertain.")] = True,
    model: opt.ModelOverride = None,
    device: opt.Device = "auto",
    threads: opt.Threads = None,
    precision: opt.Precision = "auto",
    quiet: opt.Quiet = False,
) -> None:
    """Suggest which unlabelled images to annotate next: the ensemble's most uncertain, kept diverse;
    copies them into --out with suggestions.json."""
    from ..suggest import suggest
    rt = runtime(device=device, threads=threads, quiet=quiet, precision=precision)
    rows = suggest(images, ensemble, k, out, diversity=diversity, model=model, device=rt.device,
                   progress=rt.progress)
    from ..errors import printable
    typer.echo(f"suggested {len(rows)} images in {out}: " + ", ".join(printable(r["file"]) for r in rows))
    typer.echo(f"Label Studio import with the ensemble's masks: {out}/label_studio_config.xml and "
               "label_studio_tasks.json (docs/labelling_tools.md); back with `datasetddpm import-annotations`")
