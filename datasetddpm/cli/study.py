"""`datasetddpm study <name>`: one command per measured question, each writing JSON + a markdown table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .app import app, command

study_app = typer.Typer(no_args_is_help=True, help="Measured studies (JSON + markdown table in --out).")
app.add_typer(study_app, name="study")


@command("samplers", group=study_app)
def samplers_command(
    ensemble: Annotated[Path, typer.Option(help="Ensemble that labels the samples (trained on real labelled images).")],
    data: Annotated[Path, typer.Option(help="Labelled dataset root: real/train picks DeepLab's epoch, real/test scores it.")],
    out: opt.Out = Path("runs/study_samplers"),
    settings: Annotated[str, typer.Option(help="sampler:steps list; the first is the baseline.")] = "ddpm:1000,ddim:50,dpm++:20,ddim:20,dpm++:10",
    n: Annotated[int, typer.Option(help="Samples per setting (the same seeds for every setting).")] = 256,
    model: opt.Model = "embedded",
    deeplab_epochs: Annotated[int, typer.Option(help="DeepLabV3 epochs per setting.")] = 6,
    input_scale: Annotated[int, typer.Option(help="DeepLabV3 input upsampling.")] = 2,
    timing_samples: Annotated[int, typer.Option(help="Samples timed per setting, side by side.")] = 8,
    workers: Annotated[int, typer.Option(help="CPU worker processes for sampling and labelling.")] = 1,
    seed: opt.Seed = 0,
    threads: opt.Threads = None,
    device: Annotated[str, typer.Option(help="cpu (default), cuda or cuda:N: every stage on that device.")] = "cpu",
    quiet: opt.Quiet = False,
) -> None:
    """Full ancestral DDPM vs fast samplers: UNet evaluations, s/sample, label and DeepLab mIoU with paired CIs."""
    from ..studies.samplers import SamplerSetting, SamplerStudyConfig, run_sampler_study
    opt.set_threads(threads)
    cfg = SamplerStudyConfig(settings=tuple(SamplerSetting.parse(s) for s in settings.split(",") if s.strip()),
                             model=model, n=n, seed=seed, deeplab_epochs=deeplab_epochs, input_scale=input_scale,
                             timing_samples=timing_samples)
    run_sampler_study(out, ensemble, data, cfg, workers=workers, threads=threads, device=device, progress=not quiet)
    typer.echo((out / "study.md").read_text())
