"""The recommended recipe is one source: the pages show its current rendering, its commands parse with the
real CLI into the recipe's settings, and those settings are the ones the committed studies measured."""

import json
import re
from pathlib import Path

import pytest
import typer

from datasetddpm.cli.main import get_app
from datasetddpm.recipes import CPU, DOCUMENTS, GPU, RECIPES, Recipe, render, with_blocks

ROOT = Path(__file__).resolve().parents[1]


def _parse(args: list[str]) -> dict:
    """The parameters the real command would receive for `args` (parsed by click, nothing run)."""
    command = typer.main.get_command(get_app()).commands[args[0]]
    return command.make_context(args[0], list(args[1:])).params


def test_the_pages_show_the_current_recipes():
    for doc in DOCUMENTS:
        text = (ROOT / doc).read_text()
        assert with_blocks(text) == text, f"{doc}: run `python -m datasetddpm.recipes --write`"
    assert render(CPU) in (ROOT / "README.md").read_text()
    custom = (ROOT / "docs/custom_data.md").read_text()
    assert render(CPU) in custom and render(GPU) in custom


def test_a_stale_block_is_rewritten_and_the_rest_kept():
    text = "before\n<!-- recipe:gpu:start -->\nold commands\n<!-- recipe:gpu:end -->\nafter\n"
    out = with_blocks(text)
    assert out.startswith("before\n") and out.endswith("\nafter\n") and "old commands" not in out
    assert render(GPU) in out and with_blocks(out) == out


@pytest.mark.parametrize("recipe", list(RECIPES.values()), ids=list(RECIPES))
def test_every_command_parses_into_the_recipes_settings(recipe: Recipe):
    sample, finalize, deeplab, compare = (_parse(args) for args in recipe.commands())
    assert (sample["n"], sample["sampler"], sample["sampling_steps"]) == \
        (recipe.samples, recipe.sampler, recipe.sampling_steps)
    assert finalize["out"] == deeplab["run"] == sample["out"]
    assert (deeplab["arch"], deeplab["input_scale"], deeplab["epochs"], deeplab["real_fraction"]) == \
        (recipe.arch, recipe.input_scale, recipe.epochs, recipe.real_fraction)
    assert str(deeplab["real"]) == str(deeplab["val"]) == str(compare["data"])
    assert [str(s) for s in compare["segmenter"]] == [f"{deeplab['out']}/best"]


def test_finalize_keeps_exactly_the_recipes_pairs_from_its_samples():
    from datasetddpm.pipeline.selection import kept_ids
    import numpy as np
    for recipe in RECIPES.values():
        n = recipe.samples
        kept = kept_ids(np.arange(n), np.random.default_rng(0).random(n), 0.1, 50_000)
        assert len(kept) == recipe.pairs
        fewer = kept_ids(np.arange(n - 1), np.random.default_rng(0).random(n - 1), 0.1, 50_000)
        assert len(fewer) < recipe.pairs  # the fewest samples that give the pairs


def test_the_cpu_size_is_the_main_studys_larger_configuration():
    from datasetddpm.studies.main import MainStudyConfig
    study = json.loads((ROOT / CPU.measured_by).read_text())
    assert "--sampler" not in study["command"] and "--sampling-steps" not in study["command"]
    assert (MainStudyConfig.sampler, MainStudyConfig.sampling_steps) == (CPU.sampler, CPU.sampling_steps)
    assert study["pairs"] == CPU.pairs and study["real_fraction"] == CPU.real_fraction
    seg = study["segmenter"]
    assert (seg["arch"], seg["input_scale"], seg["epochs"]) == (CPU.arch, CPU.input_scale, CPU.epochs)
    assert seg["lr_schedule"] == "constant"  # train-deeplab's default, so the commands leave it out


def test_the_gpu_size_is_where_the_synthetic_size_study_stopped_gaining():
    study = json.loads((ROOT / GPU.measured_by).read_text())
    assert study["saturates_at"] == GPU.pairs
    assert (study["sampler"], study["sampling_steps"]) == (GPU.sampler, GPU.sampling_steps)
    seg = study["segmenter"]
    assert (seg["arch"], seg["input_scale"], seg["epochs"], seg["real_fraction"]) == \
        (GPU.arch, GPU.input_scale, GPU.epochs, GPU.real_fraction)


def test_the_numbers_quoted_beside_the_recipes_are_the_studies():
    text = " ".join((ROOT / "docs/custom_data.md").read_text().split())
    main = json.loads((ROOT / CPU.measured_by).read_text())["rows"]
    ours, direct = main["DatasetDDPM"], main["direct DDPM"]
    assert f"scored {100 * ours['miou_mean']:.1f} ± {100 * ours['miou_std']:.1f} mIoU over 3 seeds" in text
    assert f"against {100 * direct['miou_mean']:.1f} for direct mode" in text
    size = json.loads((ROOT / GPU.measured_by).read_text())["rows"][str(GPU.pairs)]
    assert f"the GPU size {100 * size['miou_mean']:.1f}" in text


def test_the_step_by_step_page_trains_with_the_recipes_flags():
    text = (ROOT / "docs/pipeline.md").read_text().replace("\\\n", " ")
    line = next(l for l in text.splitlines() if l.startswith("datasetddpm train-deeplab"))
    flags = dict(re.findall(r"(--[a-z-]+) (\S+)", line))
    assert (flags["--arch"], int(flags["--input-scale"]), int(flags["--epochs"]), float(flags["--real-fraction"])) == \
        (CPU.arch, CPU.input_scale, CPU.epochs, CPU.real_fraction)
    sample = next(l for l in text.splitlines() if l.startswith("datasetddpm sample"))
    assert f"--n {CPU.samples} " in sample and f"--sampling-steps {CPU.sampling_steps}" in sample


def test_the_study_defaults_are_the_readmes_quick_start_segmenter():
    """The studies measure the segmenter the README's quick start trains (the demo's budget: 12 epochs), so
    a study command without segmenter flags measures what a new user runs."""
    from datasetddpm.cli.study import RECIPE
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    line = next(l for l in text.splitlines() if l.startswith("datasetddpm train-deeplab --run run "))
    flags = dict(re.findall(r"(--[a-z-]+) (\S+)", line))
    assert (flags["--arch"], int(flags["--input-scale"]), int(flags["--epochs"]), float(flags["--real-fraction"])) == \
        (RECIPE.arch, RECIPE.input_scale, RECIPE.epochs, RECIPE.real_fraction)
