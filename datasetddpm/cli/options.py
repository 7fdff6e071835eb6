"""Option definitions shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Model = Annotated[str, typer.Option("--model", help="Diffusion checkpoint directory, or 'embedded' for the shipped model.")]
Out = Annotated[Path, typer.Option("--out", help="Output directory.")]
GeneratorKind = Annotated[Optional[str], typer.Option("--generator", help="diffusion | stylegan2 (DatasetGAN mode). "
                                                      "Optional: a model folder says which it is; with --model it is "
                                                      "checked, alone 'stylegan2' picks the embedded StyleGAN2.")]
ModelOverride = Annotated[Optional[str], typer.Option("--model", help="Override the diffusion model recorded in the ensemble.")]
# Integer options with a range say so to the parser (`min=`): a value outside is one line before the command runs.
TestLimit = Annotated[Optional[int], typer.Option("--limit", min=1, help="Use only the first N test images.")]
ClassReport = Annotated[bool, typer.Option("--class-report", help="Per-class IoU beside each class's labelled training "
                                           "pixels, with the mIoU of the small and the large classes apart (small: "
                                           "share below the median); added to the JSON.")]
Seed = Annotated[int, typer.Option("--seed", min=0, help="Random seed; the same seed gives the same result.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing run with a different config.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Check the inputs, time a few steps on this device and print the plan (work, disk, time); write nothing.")]
# Options every generator trainer takes (train-ddpm, train-stylegan2), each with its own default.
TrainData = Annotated[str, typer.Option("--data", help="Image folder, or 'embedded' for the procedural domain.")]
TrainSteps = Annotated[int, typer.Option("--steps", help="Optimisation steps (raise it and rerun to extend a run).")]
TrainBatch = Annotated[int, typer.Option("--batch-size", help="Images per step.")]
PoolSize = Annotated[int, typer.Option("--pool-size", help="Procedural images rendered for --data embedded.")]
CheckpointEvery = Annotated[int, typer.Option("--checkpoint-every", help="Steps between checkpoints.")]
# The segmenter of a study's DeepLab runs (train-deeplab --arch / --real), shared by the sampling studies.
SegmenterArch = Annotated[str, typer.Option("--arch", help="Segmenter the DeepLab runs train: deeplabv3 | "
                                            "deeplabv3plus | unet.")]
RealFraction = Annotated[float, typer.Option("--real-fraction", help="Mix the real labelled images (--data's "
                                             "real/train) into every DeepLab epoch at this share; 0 = synthetic "
                                             "pairs only.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
Threads = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch (default: all cores).")]
Device = Annotated[str, typer.Option("--device", help="auto (a GPU when one is visible), cpu, cuda or cuda:N.")]
# Speed options of every command that runs a diffusion UNet (the CUDA default: generators.loading).
Precision = Annotated[str, typer.Option("--precision", help="UNet arithmetic: auto | fp32 | tf32 | bf16 | fp16. auto: "
                                        "fp32 on a CPU, fp16 on a GPU (its labels agree with fp32's: "
                                        "docs/studies/precision); a run keeps the one it started with.")]
Compile = Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the sampling UNet "
                                                 "(GPU; minutes to compile, then faster; default: the run's own, else off).")]
# Independent tasks of one run (a Slurm job array, a batch queue): no network between them.
TaskIndex = Annotated[Optional[int], typer.Option("--task-index", help="This task's index, 0..N-1 (default: "
                                                  "$SLURM_ARRAY_TASK_ID); it writes shards k with k mod N == I.")]
TaskCount = Annotated[Optional[int], typer.Option("--task-count", help="Independent tasks sharing the run (default: "
                                                  "$SLURM_ARRAY_TASK_COUNT, else 1); `finalize` once all are done.")]
DistTimeout = Annotated[Optional[float], typer.Option("--dist-timeout", help="Seconds a process waits at a "
                                                      "collective (torchrun's start, DDP steps; default 1800).")]
Preset = Annotated[str, typer.Option("--preset", help="Named preset: classes, ignore label, blocks, steps, resolution "
                                      "(embedded, bedroom_28, ffhq_34, cat_15, horse_21, celeba_19, ade_bedroom_30; "
                                      "see `datasetddpm presets`).")]
Blocks = Annotated[Optional[str], typer.Option("--blocks", help="Decoder blocks, ADM numbering, e.g. '5,6,7,8,12' (default: preset).")]
Steps = Annotated[Optional[str], typer.Option("--steps", help="Diffusion steps t, e.g. '50,150,250' (default: preset).")]
IgnoreLabel = Annotated[Optional[int], typer.Option("--ignore-label", help="Label id that marks unlabelled pixels (default: preset, usually 255).")]
NumClasses = Annotated[Optional[int], typer.Option("--num-classes", help="Class count K, ids 0..K-1 (default: the "
                                                   "preset's; another count names the classes class_0..).")]
ClassNames = Annotated[Optional[str], typer.Option("--class-names", help="Comma-separated class names in id order "
                                                   "(sets the class count; default: the preset's).")]
Resolution = Annotated[Optional[int], typer.Option("--resolution", help="Image side the data must have (default: the "
                                                   "preset's, or the model's own for a model of yours).")]


def parse_ints(option: str, text: str | None) -> tuple[int, ...] | None:
    from ..errors import OptionError
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v != "")
    except ValueError:
        raise OptionError(option, f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise OptionError(option, "expected at least one integer")
    return values


def check_threads(threads: int | None) -> int | None:
    if threads is not None and threads < 1:
        from ..errors import OptionError
        raise OptionError("--threads", f"must be >= 1 (leave it out to use every core), got {threads}")
    return threads


def set_threads(threads: int | None) -> None:
    """--threads N pins torch to N threads; unset leaves torch's default (all cores)."""
    if check_threads(threads) is not None:
        import torch
        torch.set_num_threads(threads)


def set_precision(precision: str, device) -> None:
    """--precision of a feature command, resolved for its device (auto: fp32 on a CPU, the CUDA default on a
    GPU) and applied to every generator the command loads."""
    from ..generators.loading import resolve_precision, set_process_precision
    set_process_precision(resolve_precision(precision, device))


def option_error(option: str, problem: str):
    """The one-line error for a bad option value (raise it)."""
    from ..errors import OptionError
    return OptionError(option, problem)


def parse_names(option: str, text: str | None) -> tuple[str, ...] | None:
    from ..errors import OptionError
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise OptionError(option, f"expected comma-separated non-empty names, got {text!r}")
    if len(set(names)) != len(names):
        raise OptionError(option, "class names must be distinct")
    return names
