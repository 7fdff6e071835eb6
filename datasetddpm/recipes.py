"""The recommended DatasetDDPM recipe for your own data, in two sizes, as one source.

README.md and docs/custom_data.md show these commands between `recipe` markers, written by
`python -m datasetddpm.recipes --write` (tests/test_recipes.py fails when a page differs, when a command
does not parse with the real CLI, or when a recipe's settings leave the study result they come from).
Each size is a configuration that was measured on the embedded default: the CPU size is the main study's
larger configuration (DatasetDDPM 1.6 points above direct mode), the GPU size the synthetic-size study's
saturation point. The commands spell every setting out because several CLI defaults are older choices
that existing runs' resume keys depend on (`train-deeplab`: DeepLabV3, input x1, 20 epochs, no real
images; `sample`: DDIM-50)."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

DROP_FRACTION = 0.1  # finalize's default: the 10 % most uncertain samples are dropped

# Where the commands write, as the docs show them; the cost benchmark substitutes its own folders.
DOC_PATHS = {"model": "runs/mine/ddpm/ema", "data": "mydata", "ensemble": "runs/mine/ensemble",
             "run": "runs/mine/generated", "segmenter": "runs/mine/segmenter", "compare": "runs/mine/compare"}


@dataclass(frozen=True)
class Recipe:
    name: str
    pairs: int              # kept pairs after finalize drops the most uncertain 10 %
    sampler: str
    sampling_steps: int
    arch: str               # the segmenter trained on the pairs
    input_scale: int
    epochs: int
    real_fraction: float    # the labelled real images' share of every epoch
    measured_by: str        # the committed study result these settings were measured in

    @property
    def samples(self) -> int:
        """The fewest samples from which finalize keeps `pairs` (it drops round(0.1 n) of n)."""
        n = self.pairs
        while n - int(round(DROP_FRACTION * n)) < self.pairs:
            n += 1
        return n

    def commands(self, paths: dict[str, str] = DOC_PATHS) -> list[list[str]]:
        """The recipe's four commands as argument lists (after `datasetddpm`)."""
        p = paths
        return [["sample", "--model", p["model"], "--ensemble", p["ensemble"], "--out", p["run"],
                 "--n", str(self.samples), "--sampler", self.sampler, "--sampling-steps", str(self.sampling_steps)],
                ["finalize", "--out", p["run"]],
                ["train-deeplab", "--run", p["run"], "--val", p["data"], "--out", p["segmenter"], "--arch", self.arch,
                 "--input-scale", str(self.input_scale), "--epochs", str(self.epochs), "--real", p["data"],
                 "--real-fraction", f"{self.real_fraction:g}"],
                ["compare", "--ensemble", p["ensemble"], "--segmenter", f"{p['segmenter']}/best", "--data", p["data"],
                 "--out", p["compare"]]]


CPU = Recipe("cpu", pairs=2000, sampler="ddim", sampling_steps=20, arch="unet", input_scale=2, epochs=24,
             real_fraction=0.1, measured_by="docs/studies/main/large/study.json")
GPU = Recipe("gpu", pairs=8000, sampler="ddim", sampling_steps=20, arch="unet", input_scale=2, epochs=12,
             real_fraction=0.1, measured_by="docs/studies/synthetic_size/study.json")
RECIPES = {r.name: r for r in (CPU, GPU)}

_COMMENTS = {"finalize": "drops the 10 % most uncertain: {pairs} pairs",
             "compare": "the segmenter against direct mode on mydata/real/test"}


def _option_groups(words: list[str]) -> list[str]:
    """Each option with its value, so a wrapped line never separates them."""
    groups: list[str] = []
    for word in words:
        if groups and not word.startswith("--") and groups[-1].startswith("--") and " " not in groups[-1]:
            groups[-1] += f" {word}"
        else:
            groups.append(word)
    return groups


def render(recipe: Recipe) -> str:
    """A bash block of the recipe's commands, one per line, long ones wrapped at about 100 characters."""
    lines = []
    for args in recipe.commands():
        line = ""
        for group in _option_groups(["datasetddpm", *args]):
            if line and len(line) + len(group) + 1 > 100:
                lines.append(line + " \\")
                line = "   "
            line = f"{line} {group}" if line else group
        comment = _COMMENTS.get(args[0], "").format(pairs=recipe.pairs)
        lines.append(line + (f"   # {comment}" if comment else ""))
    return "```bash\n" + "\n".join(lines) + "\n```"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- recipe:{name}:start -->", f"<!-- recipe:{name}:end -->"


def with_blocks(text: str) -> str:
    """`text` with every recipe block between its markers replaced by the current rendering."""
    for name, recipe in RECIPES.items():
        start, end = _markers(name)
        block = f"{start}\n{render(recipe)}\n{end}"
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.DOTALL)
    return text


DOCUMENTS = ("README.md", "docs/custom_data.md")


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parents[1]
    stale = [d for d in DOCUMENTS if with_blocks((root / d).read_text()) != (root / d).read_text()]
    if "--write" in argv:
        for d in stale:
            (root / d).write_text(with_blocks((root / d).read_text()))
        return 0
    sys.stdout.write("".join(f"{d}: recipe blocks are stale\n" for d in stale))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
