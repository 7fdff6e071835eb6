"""`datasetddpm sample | label | finalize`: the DatasetDDPM generation run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as opt
from .app import command
from .runtime import runtime

Workers = Annotated[int, typer.Option("--workers", help="CPU worker processes (torch.distributed, gloo).")]
Gpus = Annotated[int, typer.Option("--gpus", help="GPU worker processes (torch.distributed, NCCL); 0 = none.")]
Device = opt.Device
Run = Annotated[Path, typer.Option("--out", help="Run directory (rerun the same command to resume).")]


@command("sample")
def sample_command(
    out: Run,
    n: Annotated[int, typer.Option("--n", "--num-samples", help="Samples to generate (--num-samples under "
                                                                "torchrun, whose parser takes --n for its own).")] = 1000,
    model: Annotated[Optional[str], typer.Option("--model", help="Model folder (diffusion or StyleGAN2), 'embedded', "
                                                 "'embedded-stylegan2', or "
                                                 "adm:<flags>:<file.pt> (default: the --ensemble's own model, else "
                                                 "the embedded one).")] = None,
    sampler: Annotated[str, typer.Option(help="ddpm (full ancestral) | ddim | dpm++")] = "ddim",
    sampling_steps: Annotated[int, typer.Option(help="Reverse diffusion steps.")] = 50,
    batch_size: Annotated[int, typer.Option(help="Samples per UNet batch (part of the run config).")] = 50,
    shard_size: Annotated[int, typer.Option(help="Samples per shard (a multiple of --batch-size).")] = 500,
    ensemble: Annotated[Optional[Path], typer.Option(help="Label each shard as it is made (fused) with this ensemble.")] = None,
    for_annotation: Annotated[Optional[int], typer.Option(help="Instead of a run: export K samples as a folder for annotators.")] = None,
    oracle_annotate: Annotated[bool, typer.Option("--oracle-annotate", help="With --for-annotation on the embedded domain: the oracle writes the masks.")] = False,
    trajectory_features: Annotated[bool, typer.Option("--trajectory-features", help="Label from the sampler's own "
                                                      "decoder activations (no feature pass); the --ensemble's steps "
                                                      "must be ones the sampler visits.")] = False,
    generator: opt.GeneratorKind = None,
    workers: Workers = 1,
    gpus: Gpus = 0,
    device: Device = "auto",
    seed: opt.Seed = 0,
    overwrite: opt.Overwrite = False,
    threads: Annotated[Optional[int], typer.Option(help="Torch threads per CPU worker (recorded: CPU kernels "
                                                   "round differently; default: the run's own, else all cores).")] = None,
    precision: opt.Precision = "auto",
    compile: opt.Compile = None,
    task_index: opt.TaskIndex = None,
    task_count: opt.TaskCount = None,
    dist_timeout: opt.DistTimeout = None,
    dry_run: opt.DryRun = False,
    quiet: opt.Quiet = False,
) -> None:
    """Sample images (reverse diffusion, or one StyleGAN2 pass) into sharded, resumable output (optionally
    labelling them).

    The recommended recipe (docs/custom_data.md) samples with --sampler ddim --sampling-steps 20, ceil(P / 0.9)
    samples for P pairs; the default stays DDIM-50 so that existing runs resume."""
    from ..pipeline.generate import resolve_run_model
    model = resolve_run_model(model, generator, ensemble)
    if for_annotation is not None:  # the older spelling of `datasetddpm annotate`
        _check_for_annotation(for_annotation, (("--n", n != 1000), ("--ensemble", ensemble is not None),
                                               ("--trajectory-features", trajectory_features),
                                               ("--workers", workers != 1), ("--gpus", gpus != 0),
                                               ("--overwrite", overwrite), ("--dry-run", dry_run)))
        _annotate(out, for_annotation, model, seed, sampler, sampling_steps, batch_size, oracle_annotate, device, threads,
                  k_option="--for-annotation")
        return
    from ..distributed import resolve_tasks
    from ..pipeline.config import SampleConfig
    rt = runtime(threads=threads, quiet=quiet, pin_threads=False)  # the run records them; each worker pins its own
    cfg = SampleConfig(model=model or "", n=n, seed=seed, sampler=sampler, sampling_steps=sampling_steps,
                       batch_size=batch_size, shard_size=shard_size)
    _sample(out, cfg, dict(ensemble=ensemble, workers=workers, gpus=gpus, device=device,
                           trajectory_features=trajectory_features, precision=precision, compile=compile,
                           threads=rt.threads),
            dict(overwrite=overwrite, progress=rt.progress, tasks=resolve_tasks(task_index, task_count),
                 timeout_s=dist_timeout), dry_run)


def _sample(out: Path, cfg, checked: dict, run_only: dict, dry_run: bool) -> None:
    """`sample`'s run: `checked` options go to the dry run's plan too, `run_only` ones to the run alone."""
    if dry_run:
        from ..plans import from_command_line, plan_sample_run
        typer.echo(from_command_line(lambda: plan_sample_run(out, cfg, **checked)).text())
        return
    from ..pipeline.generate import sample_run
    result = sample_run(out, cfg, **checked, **run_only)
    if result["main"]:  # under torchrun: rank 0 reports
        labelled = f", {result['labelled']} labelled" if checked["ensemble"] else ""
        _report(out, result, f"{result['samples']} samples{labelled}")


def _report(out: Path, result: dict, counts: str) -> None:
    """The run's state once this process's shards are done: a preview when every shard is committed and no
    other task or rank still writes, else what is missing (other tasks may still be running)."""
    from ..io import live_part_locks
    if result["complete"] and not live_part_locks(out):
        preview = _write_preview(out)
        typer.echo(f"{out}: {counts}" + (f"; preview: {preview}" if preview else ""))
        return
    missing = result["missing_shards"]
    who = f"task {result['task']} of {result['tasks']}: its shards are done; " if result["tasks"] > 1 else ""
    typer.echo(f"{out}: {who}{counts} so far" + (f"; {len(missing)} shard(s) not committed yet (first: "
                                                f"{missing[0]}), by other tasks or ranks" if missing else ""))


def _check_for_annotation(k: int, given: tuple[tuple[str, bool], ...]) -> None:
    if k < 1:
        raise opt.option_error("--for-annotation", f"must be >= 1 samples, got {k}")
    ignored = [name for name, was_given in given if was_given]
    if ignored:
        raise opt.option_error("--for-annotation", f"exports samples for annotators and takes no {', '.join(ignored)} "
                                                   "(see `datasetddpm annotate --help`)")


def _annotate(out, k, model, seed, sampler, sampling_steps, batch_size, oracle_annotate, device, threads,
              k_option: str = "--k", ensemble: Path | None = None) -> None:
    from ..pipeline.annotate import annotate_folder
    rt = runtime(device=device, threads=threads)
    model = model or ("embedded" if ensemble is None else None)  # None: the ensemble's own model
    paths = annotate_folder(out, k, model=model, seed=seed, sampler=sampler,
                            sampling_steps=sampling_steps, batch_size=batch_size, oracle_annotate=oracle_annotate,
                            device=rt.device, k_option=k_option, ensemble=ensemble)
    typer.echo(f"wrote {len(paths)} samples for annotation to {out}" + (" (masks by the oracle)" if oracle_annotate else ""))
    if (Path(out) / "label_studio_tasks.json").is_file():
        typer.echo(f"Label Studio import: {out}/label_studio_config.xml and label_studio_tasks.json "
                   "(docs/labelling_tools.md); back with `datasetddpm import-annotations`")


@command("annotate")
def annotate_command(
    out: opt.Out,
    k: Annotated[int, typer.Option("--k", help="Samples to export for annotators.")] = 20,
    model: Annotated[Optional[str], typer.Option(help="Model folder (diffusion or StyleGAN2), 'embedded', "
                                                 "'embedded-stylegan2' or adm:<flags>:<file.pt> (default: the "
                                                 "--ensemble's model, else 'embedded').")] = None,
    generator: opt.GeneratorKind = None,
    sampler: Annotated[str, typer.Option(help="ddpm (full ancestral) | ddim | dpm++")] = "ddim",
    sampling_steps: Annotated[int, typer.Option(help="Reverse diffusion steps.")] = 50,
    batch_size: Annotated[int, typer.Option(help="Samples per UNet batch.")] = 50,
    oracle_annotate: Annotated[bool, typer.Option("--oracle-annotate", help="On the embedded domain: the oracle "
                                                  "writes the masks (the paper's labeller protocol, end to end).")] = False,
    ensemble: Annotated[Optional[Path], typer.Option("--ensemble", help="Pre-annotate: this ensemble's masks and "
                                                     "uncertainty go into the Label Studio and CVAT imports.")] = None,
    device: Device = "auto",
    seed: opt.Seed = 0,
    threads: opt.Threads = None,
) -> None:
    """Export K generated samples as a labelled-folder layout for annotators (`<stem>.png`; annotators add
    `<stem>.npy` or `<stem>_mask.png`), with their seeds (and a StyleGAN2's latents): the paper's protocol.
    Beside them, a Label Studio import and CVAT masks (pre-annotated by --ensemble or the oracle; see
    docs/labelling_tools.md); `import-annotations` brings the labels back."""
    from ..generators.loading import resolve_model
    _annotate(out, k, resolve_model(model, generator), seed, sampler, sampling_steps, batch_size, oracle_annotate,
              device, threads, ensemble=ensemble)


def _write_preview(out: Path):
    """RUN/samples_preview.png once the workers are done; under the run lock like every other write."""
    from ..io import run_lock
    from ..pipeline.preview import first_committed_samples
    from ..reporting.figures import write_samples_preview
    with run_lock(out):
        preview = first_committed_samples(out)
        return write_samples_preview(out, preview) if preview is not None else None


@command("label")
def label_command(
    out: Run,
    ensemble: Annotated[Path, typer.Option(help="Ensemble checkpoint (from train-ensemble).")],
    generator: opt.GeneratorKind = None,
    workers: Workers = 1,
    gpus: Gpus = 0,
    device: Device = "auto",
    overwrite: opt.Overwrite = False,
    threads: Annotated[Optional[int], typer.Option(help="Torch threads per worker.")] = None,
    precision: opt.Precision = "auto",
    task_index: opt.TaskIndex = None,
    task_count: opt.TaskCount = None,
    dist_timeout: opt.DistTimeout = None,
    dry_run: opt.DryRun = False,
    quiet: opt.Quiet = False,
) -> None:
    """Label the samples of a run with the ensemble's vote and score each image's JS uncertainty."""
    from ..pipeline.generate import check_run_generator, label_run
    check_run_generator(out, generator)
    rt = runtime(threads=threads, quiet=quiet, pin_threads=False)  # each worker pins its own
    if dry_run:
        from ..plans import from_command_line, plan_label_run
        typer.echo(from_command_line(lambda: plan_label_run(out, ensemble, workers=workers, gpus=gpus, device=device,
                                                            threads=rt.threads,
                                                            precision=precision)).text())
        return
    from ..distributed import resolve_tasks
    result = label_run(out, ensemble, workers=workers, gpus=gpus, device=device, threads=rt.threads,
                       overwrite=overwrite, progress=rt.progress, precision=precision,
                       tasks=resolve_tasks(task_index, task_count), timeout_s=dist_timeout)
    if result["main"]:
        _report(out, result, f"{result['labelled']} labelled")


@command("label-images")
def label_images_command(
    images: Annotated[Path, typer.Option(help="Folder of your own unlabelled real images (.png/.jpg, one size).")],
    ensemble: Annotated[Path, typer.Option(help="Ensemble checkpoint (from train-ensemble) on diffusion or colour features.")],
    out: Run,
    batch_size: Annotated[int, typer.Option(help="Images per labelling batch (part of the run config).")] = 50,
    shard_size: Annotated[int, typer.Option(help="Images per shard (a multiple of --batch-size).")] = 500,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Label only the first N images (in name order; "
                                                 "after --files). Part of the run config: repeat it to "
                                                 "resume.")] = None,
    files: Annotated[Optional[Path], typer.Option(help="Text file naming the images to label, one path per line "
                                                  "relative to --images (labelled in name order). Part of the run "
                                                  "config: repeat it to resume.")] = None,
    workers: Workers = 1,
    gpus: Gpus = 0,
    device: Device = "auto",
    overwrite: opt.Overwrite = False,
    threads: opt.Threads = None,
    precision: opt.Precision = "auto",
    task_index: opt.TaskIndex = None,
    task_count: opt.TaskCount = None,
    dist_timeout: opt.DistTimeout = None,
    quiet: opt.Quiet = False,
) -> None:
    """Label your own unlabelled real images with the ensemble into a run folder (shards, JS scores), like
    `sample --ensemble` does for samples: `finalize`, `train-deeplab` and `export` then work on it."""
    from ..distributed import resolve_tasks
    from ..pipeline.real_images import label_images_run
    rt = runtime(threads=threads, quiet=quiet, pin_threads=False)  # each worker pins its own
    result = label_images_run(images, ensemble, out, batch_size=batch_size, shard_size=shard_size, device=device,
                              overwrite=overwrite, progress=rt.progress, workers=workers, gpus=gpus,
                              threads=rt.threads, precision=precision,
                              tasks=resolve_tasks(task_index, task_count), timeout_s=dist_timeout,
                              limit=limit or 0, files=files)
    if result["main"]:
        _report(out, result, f"{result['labelled']} of {result['images']} images labelled")


@command("finalize")
def finalize_command(
    out: Run,
    drop_fraction: Annotated[float, typer.Option(help="Fraction of most uncertain images to drop.")] = 0.1,
    max_pairs: Annotated[int, typer.Option(help="Keep at most this many image-mask pairs.")] = 50_000,
    prefer_classes: Annotated[Optional[str], typer.Option(help="Mine for rare or small parts, e.g. 'eye,beak': of the "
                                                          "pairs the filter keeps, the --max-pairs with the most "
                                                          "pixels of these classes (sample more than you keep).")] = None,
) -> None:
    """Rank all images by uncertainty, mark the kept pairs, write index.jsonl + dataset_card.json."""
    from ..pipeline.finalize import finalize_run
    card = finalize_run(out, drop_fraction=drop_fraction, max_pairs=max_pairs, prefer_classes=prefer_classes)
    typer.echo(f"{out}: kept {card['counts']['kept']} of {card['counts']['generated']} pairs; pictures: "
               f"{out}/preview.png, {out}/uncertainty.png")
    for name, row in card.get("class_balance", {}).items():
        ref = f" (labeller's labels: {100 * row['labeller_pixel_share']:.2f} %)" if "labeller_pixel_share" in row else ""
        typer.echo(f"  {name:>16}: {100 * row['kept_pixel_share']:6.2f} % of kept label pixels{ref}")
    for warning in card.get("warnings", []):
        typer.echo(f"Warning: {warning}", err=True)


@command("verify")
def verify_command(
    run: Annotated[Path, typer.Argument(help="Generation run directory.")],
    repair: Annotated[bool, typer.Option("--repair", help="Regenerate damaged or missing samples from their seeds, "
                                                          "relabel them, remove stray files, rewrite the index.")] = False,
    workers: Workers = 1,
    quiet: opt.Quiet = False,
) -> None:
    """Check every file of a run against its records (sha256, sizes, class ids, index, stray files).
    Exit 0 only when the run is clean; 1 when problems are listed."""
    from ..pipeline.repair import repair_run
    from ..pipeline.verify import verify_run
    if workers < 1:  # checked up front, as every integer option: a clean run would otherwise never look at it
        raise opt.option_error("--workers", f"must be >= 1, got {workers}")

    def found(report) -> None:  # under the run lock when repairing: nothing is printed for a refused repair
        for problem in report.problems:
            typer.echo(str(problem))
        if repair and not report.clean:
            typer.echo(f"repairing {len(report.problems)} problem(s) ...")
    if repair:
        first = []
        report = repair_run(run, workers=workers, progress=runtime(quiet=quiet).progress,
                            found=lambda r: (first.append(r), found(r)))
        for problem in report.problems if not first[0].clean else ():
            typer.echo(f"still: {problem}")
    else:
        report = verify_run(run)
        found(report)
    status = "clean" if report.clean else f"{len(report.problems)} problem(s)"
    typer.echo(f"{run}: {report.samples} samples, {report.labelled} labelled, {report.shards} shards: {status}")
    if not report.clean:
        raise typer.Exit(1)
