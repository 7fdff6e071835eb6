"""`datasetddpm reproduce PRESET`: the paper's experiment for one preset as one resumable command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as opt
from .app import command
from .runtime import runtime


def _default_model(preset: str) -> str:
    """A paper preset's model: the folder `datasetddpm download <checkpoint>` converts into checkpoints/."""
    from ..downloads.registry import checkpoint_for
    from ..presets import get_preset
    p = get_preset(preset)
    if p.checkpoint is None:
        return ""
    entry = checkpoint_for(p.checkpoint)
    folder = Path("checkpoints") / entry.model_dir
    if not folder.is_dir():
        raise opt.option_error("--model", f"preset {preset} needs the {entry.name} ADM: run `datasetddpm download "
                                          f"{entry.name}` (it converts it to {folder}) or give --model")
    return str(folder.resolve())  # the ensembles record it: a resume from another folder still finds it


# The options that split a run for a batch queue (a Slurm job array), and the shard size that sets its unit.
ShardSize = Annotated[int, typer.Option(help="Samples per generation shard, the unit batch tasks split (0: the "
                                        "batch size x (500 // batch size)).")]
StopBefore = Annotated[Optional[str], typer.Option(help="Run only the stages before every method's stage of this kind "
                                                   "(sample | label | finalize | train-deeplab | compare), then stop; "
                                                   "`sample` prepares batch tasks.")]
TaskIndex = Annotated[Optional[int], typer.Option("--task-index", help="This batch task's index, 0..N-1 (default: "
                                                  "$SLURM_ARRAY_TASK_ID): it makes only its shards of the sample "
                                                  "stages, after a --stop-before sample run.")]
TaskCount = Annotated[Optional[int], typer.Option("--task-count", help="Batch tasks (default: $SLURM_ARRAY_TASK_COUNT, "
                                                  "else 1); once all are done, the same command without task options "
                                                  "finishes the run.")]


def _kinds(stages: list[str]) -> str:
    """'sample, label, finalize' for the stage names left (each kind once, in order)."""
    return ", ".join(dict.fromkeys(name.rsplit(": ", 1)[-1] for name in stages)) or "nothing"


@command("reproduce")
def reproduce_command(
    preset: Annotated[str, typer.Argument(help="Preset to reproduce: embedded, bedroom_28, ffhq_34, cat_15, horse_21, "
                                          "celeba_19, ade_bedroom_30.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Results folder (default: runs/<preset>); rerun the same "
                                                "command to resume.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Dataset root in the reference layout (default: datasets/<preset>; "
                                                 "embedded: a procedural one made in <out>/data).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Diffusion model (default: checkpoints/<name> as `download` "
                                                 "converts it; embedded: the shipped one).")] = None,
    seeds: Annotated[str, typer.Option(help="Direct-mode seeds, one ensemble each (the paper: 5 runs).")] = "0,1,2",
    n: Annotated[int, typer.Option("--n", help="Samples to generate (the 10 % most uncertain are dropped; the "
                                   "paper's 50000 pairs: 55556).")] = 55_556,
    sampler: Annotated[str, typer.Option(help="ddpm (the paper's) | ddim | dpm++")] = "ddpm",
    sampling_steps: Annotated[int, typer.Option(help="Reverse diffusion steps (the paper: 1000).")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Samples per UNet batch.")] = 50,
    shard_size: ShardSize = 0,
    members: Annotated[int, typer.Option(help="MLPs per ensemble.")] = 10,
    ensemble_steps: Annotated[Optional[int], typer.Option(help="Cap on each ensemble's optimisation steps (smoke "
                                                          "runs; default: early stopping as the paper).")] = None,
    deeplab_epochs: Annotated[Optional[int], typer.Option(help="DeepLab epochs (default: the preset's).")] = None,
    annotated: Annotated[int, typer.Option(help="Embedded only: generated samples the oracle annotates for the "
                                           "labeller (0: as many as real/train).")] = 0,
    stylegan2: Annotated[Optional[str], typer.Option(help="A StyleGAN2 (folder or 'embedded-stylegan2'): adds the "
                                                     "DatasetGAN row.")] = None,
    stylegan2_data: Annotated[Optional[Path], typer.Option(help="Its annotated samples with latents (default: "
                                                           "<data>/gan; embedded: annotated by the oracle).")] = None,
    gpus: Annotated[int, typer.Option(help="GPU workers for sample, label and train-deeplab; 0 = none.")] = 0,
    device: opt.Device = "auto",
    threads: opt.Threads = None,
    stop_before: StopBefore = None,
    task_index: TaskIndex = None,
    task_count: TaskCount = None,
    dry_run: opt.DryRun = False,
) -> None:
    """The paper's experiment for one preset: direct mode over several seeds, DatasetDDPM in the paper's
    protocol (and DatasetGAN with --stylegan2), then a table beside the paper's numbers in <out>/results.md.
    Each stage writes its own subfolder and is skipped once finished: rerun the command to resume. For a
    job array: --stop-before sample once, then N tasks (--task-index I --task-count N), then a plain run."""
    from ..distributed import resolve_tasks
    from ..reproduce import ReproduceConfig
    from ..presets import get_preset
    get_preset(preset)
    tasks = resolve_tasks(task_index, task_count)
    runtime(threads=threads)  # this process's threads; the stages get the options as given
    seed_list = opt.parse_ints("--seeds", seeds)
    cfg = ReproduceConfig(
        preset=preset, out=str(out or Path("runs") / preset),
        data=str(data) if data else ("" if preset == "embedded" else str(Path("datasets") / preset)),
        model=model or _default_model(preset), seeds=seed_list, n=n, sampler=sampler, sampling_steps=sampling_steps,
        batch_size=batch_size, shard_size=shard_size, members=members, ensemble_steps=ensemble_steps,
        deeplab_epochs=deeplab_epochs, annotated=annotated, stylegan2=stylegan2 or "",
        stylegan2_data=str(stylegan2_data) if stylegan2_data else "", gpus=gpus, device=device, threads=threads)
    _run(cfg, stop_before, tasks, dry_run)


def _run(cfg, stop_before: str | None, tasks, dry_run: bool) -> None:
    """The plan (--dry-run), or the run: a whole one, one stopped before a stage kind, or one batch task."""
    from ..reproduce import plan_reproduce, reproduce
    if dry_run:
        typer.echo(plan_reproduce(cfg, stop_before, tasks))
        return
    results = reproduce(cfg, log=typer.echo, stop_before=stop_before, tasks=tasks)
    if "task" in results:
        typer.echo(f"task {results['task']} of {results['tasks']} done; when all tasks are done, run the same command "
                   f"without --task-index/--task-count to finish ({_kinds(results['left'])})")
        return
    if "left" in results:
        typer.echo(f"stopped before {stop_before}; left: {_kinds(results['left'])}. Rerun without --stop-before"
                   + (", or first run the batch tasks (--task-index I --task-count N)" if stop_before == "sample" else ""))
        return
    for method, row in results["table"].items():
        ours = row["this run"]
        typer.echo(f"{method}: " + (f"{ours[0]:.1f}" if ours else "-") + " (paper "
                   + (f"{row['paper'][0]:.1f}" if row["paper"] else "-") + ")")
    typer.echo(f"table: {cfg.root}/results.md (results.json records the environment)")
