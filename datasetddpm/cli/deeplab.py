"""`datasetddpm train-deeplab | compare`: the standard segmenter trained on generated pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as opt
from .app import command
from .runtime import runtime

# train-deeplab's longer options, named here so that the command's signature reads as a list.
ValImages = Annotated[Path, typer.Option("--val", help="Real labelled images to choose the epoch on (dataset root: "
                                         "real/train); all of them unless --val-split.")]
LrSchedule = Annotated[Optional[str], typer.Option(help="constant | cosine (to 0 at the last step) | poly (DeepLab's, "
                                                   "power 0.9); a decaying schedule is fixed by --epochs  "
                                                   "[default: constant]")]
RealImages = Annotated[Optional[Path], typer.Option("--real", help="Real labelled images (dataset root: real/train) "
                                                    "mixed into every epoch beside the synthetic pairs.")]
RealFraction = Annotated[float, typer.Option(help="With --real: the real images' share of each epoch (they are "
                                             "repeated to reach it).")]
ValSplit = Annotated[int, typer.Option(help="Hold out K of the real images (--real naming the --val folder): never "
                                       "trained on, they alone choose the epoch; which ones is recorded in "
                                       "train_config.json. 0: the epoch is chosen on all of --val, which --real then "
                                       "also trains on (an optimistic score).")]
LoaderWorkers = Annotated[Optional[int], typer.Option(help="DataLoader processes per worker that read and augment "
                                                      "pairs (the batches do not depend on it)  [default: up to 4 "
                                                      "per GPU process, 0 with <= 2 cores per process]")]
EncoderWeights = Annotated[Optional[str], typer.Option(help="Pretrained encoder: a local smp/timm encoder state dict "
                                                       "(.safetensors or weights-only .pt, loaded strictly), or "
                                                       "'imagenet' (smp's download; online).")]


@command("train-deeplab")
def train_deeplab_command(
    run: Annotated[Path, typer.Option(help="Finalized generation run (from sample/label/finalize).")],
    val: ValImages,
    out: opt.Out,
    preset: Annotated[Optional[str], typer.Option(help="Take arch, encoder, input scale, epochs, batch size and lr "
                                                  "from this preset (`datasetddpm presets NAME`); flags override.")] = None,
    arch: Annotated[Optional[str], typer.Option(help="deeplabv3 | deeplabv3plus | unet  [default: deeplabv3]")] = None,
    encoder: Annotated[Optional[str], typer.Option(help="smp encoder (resnet101 as the reference; resnet18 for small "
                                                   "runs)  [default: resnet18]")] = None,
    input_scale: Annotated[Optional[int], typer.Option(help="Train and run at this input upsampling factor (small "
                                                       "images)  [default: 1]")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs over the kept pairs  [default: 20]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per step on each GPU / worker (DDP convention: the "
                                                      "global batch is this x the number of workers)  [default: 8]")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate  [default: 0.001]")] = None,
    lr_schedule: LrSchedule = None,
    real: RealImages = None,
    real_fraction: RealFraction = 0.1,
    val_split: ValSplit = 0,
    no_augment: Annotated[bool, typer.Option("--no-augment", help="Disable albumentations augmentations.")] = False,
    workers: Annotated[int, typer.Option(help="Data-parallel CPU worker processes (gloo).")] = 1,
    gpus: Annotated[int, typer.Option(help="Data-parallel GPU workers (NCCL); 0 = none.")] = 0,
    device: opt.Device = "auto",
    loader_workers: LoaderWorkers = None,
    amp: Annotated[bool, typer.Option("--amp", help="Mixed precision (bf16 autocast on CPU, fp16 + scaler on CUDA).")] = False,
    amp_dtype: Annotated[Optional[str], typer.Option(help="bf16 | fp16: mixed precision of this type (implies --amp); "
                                                     "bf16 needs no gradient scaler.")] = None,
    sync_bn: Annotated[bool, typer.Option("--sync-bn", help="SyncBatchNorm: BatchNorm statistics over all GPUs' "
                                          "batches (several GPU processes).")] = False,
    encoder_weights: EncoderWeights = None,
    dist_timeout: opt.DistTimeout = None,
    seed: opt.Seed = 0,
    threads: Annotated[Optional[int], typer.Option(help="Torch threads per worker.")] = None,
    dry_run: opt.DryRun = False,
    quiet: opt.Quiet = False,
) -> None:
    """Train DeepLabV3 (or --arch unet) on the kept pairs; resumable per epoch; best epoch on real images
    (all of --val, or --val-split K held out).

    Recommended (the measured recipe, docs/custom_data.md): --arch unet --input-scale 2 --epochs 24 --real DATA
    --real-fraction 0.1. The defaults stay as they were so that existing runs resume."""
    from ..workflows import deeplab_config, train_deeplab_run
    rt = runtime(threads=threads, quiet=quiet, pin_threads=False)  # each worker pins its own
    cfg = deeplab_config(preset, arch=arch, encoder=encoder, input_scale=input_scale, epochs=epochs,
                         batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, augment=not no_augment, seed=seed,
                         loader_workers=loader_workers, real=str(real.resolve()) if real else "",
                         real_fraction=real_fraction, sync_bn=sync_bn or None, encoder_weights=encoder_weights,
                         val_split=val_split or None)
    if dry_run:
        from ..plans import from_command_line
        from ..workflows import plan_deeplab_run
        typer.echo(from_command_line(lambda: plan_deeplab_run(run, val, out, cfg, workers=workers, gpus=gpus,
                                                              device=device, amp=amp_dtype or amp,
                                                              threads=rt.threads)).text())
        return
    result = train_deeplab_run(run, val, out, cfg, workers=workers, gpus=gpus, device=device, amp=amp_dtype or amp,
                               threads=rt.threads, timeout_s=dist_timeout, progress=rt.progress)
    typer.echo(_best_line(result, out))


def _best_line(result: dict, out: Path) -> str:
    """The closing line: the kept epoch, its score and what the score was measured on."""
    from ..segmenters.train_deeplab import chosen_on
    return (f"best epoch {result['best_epoch']} (mIoU {100 * result['best_val_miou']:.1f} on "
            f"{chosen_on(result['val_images'], result['val_held_out'], result['val_also_trained'])}); "
            f"model: {out}/best")


@command("compare")
def compare_command(
    ensemble: Annotated[Path, typer.Option(help="Ensemble checkpoint (direct DDPM mode).")],
    segmenter: Annotated[list[str], typer.Option(help="Segmenter directory (train-deeplab's <out>/best), or "
                                                "NAME=DIR; repeat it to compare several (e.g. DatasetDDPM's and "
                                                "DatasetGAN's DeepLab).")],
    data: Annotated[Path, typer.Option(help="Real labelled test folder (dataset root: real/test).")],
    out: opt.Out,
    model: opt.ModelOverride = None,
    limit: opt.TestLimit = None,
    device: opt.Device = "auto",
    threads: opt.Threads = None,
    quiet: opt.Quiet = False,
) -> None:
    """DeepLabV3-from-synthetic vs direct DDPM mode: IoU per class, mIoU, seconds per image."""
    from ..compare import compare
    from ..reporting.console import print_compare
    rt = runtime(device=device, threads=threads, quiet=quiet)
    report = compare(ensemble, _named_segmenters(segmenter), data, out, model=model, limit=limit, device=rt.device,
                     progress=rt.progress)
    print_compare(report)
    typer.echo(f"report: {out}/compare.html (also compare.md, compare.json)")


def _named_segmenters(values: list[str]) -> dict[str, Path]:
    """`DIR` or `NAME=DIR` per --segmenter; an unnamed one is named by its architecture, the first as
    DatasetDDPM's ("DeepLabV3 (synthetic)"), later ones by their run folder."""
    from ..compare import segmenter_name
    named = {}
    for i, value in enumerate(values):
        name, sep, folder = value.partition("=")
        if not sep:
            name, folder = segmenter_name(value, "synthetic" if i == 0 else Path(value).parent.name or value), value
        if name in named:
            raise opt.option_error("--segmenter", f"two segmenters are named {name!r}: name them NAME=DIR")
        named[name] = Path(folder)
    return named

