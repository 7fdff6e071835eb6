"""`datasetddpm presets`: what each named preset sets (classes, size, features, ignore label, ADM flags)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .app import command

# Plain aligned text rather than a rich table: rich truncates cells to the terminal width, and preset
# names and numbers must stay whole (users copy them into commands).
COLUMNS = ("name", "classes", "ignore", "px", "blocks", "steps", "MLP", "ADM flags", "train/test")


@command("presets")
def presets_command(
    name: Annotated[Optional[str], typer.Argument(help="Show one preset in full: class ids, names and colours.")] = None,
) -> None:
    """List the presets (embedded + the paper's six datasets), or show one in full."""
    from ..presets import PRESETS, get_preset
    if name is not None:
        p = get_preset(name)
        for key, value in describe(p).items():
            typer.echo(f"{key}: {value}")
        typer.echo("classes (id, name, colour):")
        for k, (cls, rgb) in enumerate(zip(p.class_names, p.palette)):
            typer.echo(f"  {k:3d}  {cls + (' (ignored)' if k == p.ignore_label else ''):<28} #{bytes(rgb).hex()}")
        return
    rows = [COLUMNS]
    for p in PRESETS.values():
        d = describe(p)
        rows.append((p.name, str(len(p.evaluated_classes)), str(p.ignore_label), str(p.resolution), d["blocks"],
                     d["steps"], d["mlp_hidden"], d["adm_flags"], d["split"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    typer.echo("`datasetddpm presets NAME` shows a preset's class names, model and DeepLab settings.")


def describe(p) -> dict[str, str]:
    """A preset as printable fields (one line each)."""
    def join(xs) -> str:
        return ",".join(str(x) for x in xs)
    dl = p.deeplab
    ddpm, dataset_ddpm = p.paper_miou or (None, None)
    return {
        "name": p.name,
        "notes": p.notes,
        "outputs": f"{p.num_classes} (mIoU over {len(p.evaluated_classes)} classes)",
        "ignore_label": str(p.ignore_label),
        "resolution": str(p.resolution),
        "blocks": join(p.features.blocks),
        "steps": join(p.features.steps),
        "mlp_hidden": join(p.mlp_hidden),
        "model": p.model or f"yours: --model adm:{p.adm_flags}:<{p.checkpoint}>",
        "adm_flags": p.adm_flags or "-",
        "split": f"{p.split[0]}/{p.split[1]}" if p.split else "-",
        "deeplab": f"--arch {dl.arch} --encoder {dl.encoder} --input-scale {dl.input_scale} --epochs {dl.epochs} "
                   f"--batch-size {dl.batch_size} --lr {dl.lr:g}",
        "paper_miou": f"DDPM {ddpm}, DatasetDDPM {dataset_ddpm or '-'}" if ddpm else "-",
    }


@command("env")
def env_command() -> None:
    """Versions, devices, torch threads and the OpenMP wait policy in use (paste it into bug reports)."""
    from ..environment import describe
    for key, value in describe().items():
        typer.echo(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
