"""Result tables rendered from result JSON, so a document cannot disagree with its data.

A markdown file holds blocks

    <!-- result docs/demo/demo.json demo-compare -->
    ...the table...
    <!-- /result -->

and `datasetddpm report --readme README.md` re-renders each from its JSON with the named view, and
redraws the study.png beside a study's JSON (`PLOTS`); `tests/test_results.py` fails when the README's
blocks, or those pictures, differ from what their files render.
"""

from __future__ import annotations

import functools
import io
import re
from pathlib import Path

import numpy as np

from ..errors import InputError, OptionError
from ..io import atomic_path, read_json

BLOCK = re.compile(r"(<!-- result (\S+) (\S+) -->\n)(.*?)(<!-- /result -->)", re.S)


def _pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}"


def _iou_table(methods: dict, first: str = "method", extra: tuple[str, ...] = ("s / image",)) -> str:
    names = list(next(iter(methods.values()))["iou"])
    lines = [f"| {first} | mIoU | " + " | ".join([*extra, *names]) + " |",
             "|---|---:|" + "---:|" * (len(extra) + len(names))]
    for m, r in methods.items():
        cells = [f"{r['seconds_per_image']:.4f}"] if extra else []
        lines.append(f"| {m} | {_pct(r['miou'])} | " + " | ".join(cells + [_pct(r["iou"][c]) for c in names]) + " |")
    return "\n".join(lines)


def demo_compare(d: dict) -> str:
    """DeepLab-from-synthetic vs direct mode of one demo run."""
    methods = dict(d["datasetddpm"]["compare"])
    pairs = d["datasetddpm"]["pairs"]["kept"]
    share = d["datasetddpm"]["deeplab"].get("real_fraction")
    from ..segmenters.model import ARCH_NAMES
    best = d["datasetddpm"]["deeplab"]
    segmenter = ARCH_NAMES[best.get("arch", "deeplabv3")]  # demos before --arch trained DeepLabV3
    name = f"{segmenter} ({pairs} synthetic pairs" + (f" + labelled images at {share:.0%} of each epoch)"
                                                      if share else ")")
    methods = {(k if k == "direct DDPM" else name): v for k, v in methods.items()}
    direct, deeplab = methods["direct DDPM"], methods[name]
    speed = direct["seconds_per_image"] / deeplab["seconds_per_image"]
    return _iou_table(methods) + (f"\n\n{segmenter} minus direct mode: {_pct(deeplab['miou'] - direct['miou'])} mIoU "
                                  f"points; {segmenter} is {speed:.1f}× " + ("faster" if speed >= 1 else "slower")
                                  + f" per image. Its best epoch: {best['best_epoch'] + 1}, with mIoU "
                                  f"{_pct(best['best_val_miou'])} on the {d['train_images']} real labelled images "
                                  "that choose it." + _epochs_line(best))


def _epochs_line(deeplab: dict) -> str:
    """DeepLab's training loss and validation mIoU epoch by epoch, where the demo recorded them."""
    if "epochs_log" not in deeplab:
        return ""
    return (" Training loss by epoch: " + ", ".join(f"{e['loss']:.3f}" for e in deeplab["epochs_log"])
            + "; validation mIoU: " + ", ".join(_pct(e["val_miou"]) for e in deeplab["epochs_log"]) + ".")


def demo_stages(d: dict) -> str:
    lines = ["| stage | s |", "|---|---:|"]
    lines += [f"| {stage} | {s:.1f} |" for stage, s in d["timings_seconds"].items()]
    if "wall_seconds" in d:
        lines += ["", f"Wall clock: {_wall_clock(d)} (the stages, model loading and set-up; the "
                      "interpreter's start and imports come on top)."]
    return _with_provenance("\n".join(lines), d)


def _wall_clock(d: dict) -> str:
    minutes, seconds = divmod(round(d["wall_seconds"]), 60)
    return f"{minutes} min {seconds} s"


def demo_summary(d: dict) -> str:
    """One demo run in a few lines: the compare table, its wall clock and the command that ran it (for
    demos kept beside the main one, whose stage table would repeat the main demo's)."""
    wall = f" Wall clock: {_wall_clock(d)}." if "wall_seconds" in d else ""
    return _with_provenance(demo_compare(d) + wall, d)


def demo_direct(d: dict) -> str:
    """Direct mode vs the colour baseline over seeds: mean ± std, per-class means."""
    direct = d["direct"]
    names = list(next(iter(direct.values()))["runs"][0]["iou"])
    lines = ["| method | mIoU (mean ± std) | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for method, r in direct.items():
        per_class = [np.mean([run["iou"][n] for run in r["runs"]]) for n in names]
        lines.append(f"| {method} | {_pct(r['miou_mean'])} ± {_pct(r['miou_std'])} | "
                     + " | ".join(_pct(v, 0) for v in per_class) + " |")
    seeds = ", ".join(f"{m}: " + ", ".join(_pct(run["miou"]) for run in r["runs"]) for m, r in direct.items())
    first, *rest = direct.items()
    gaps = "".join(f" {first[0]} minus {m}: {_pct(first[1]['miou_mean'] - r['miou_mean'])} points (means)."
                   for m, r in rest)
    return _with_provenance("\n".join(lines) + f"\n\nPer seed ({len(d['seeds'])} seeds) — {seeds}.{gaps}", d)


def samples_vs_real(d: dict) -> str:
    """The oracle on real images vs on a model's samples (`check-samples`)."""
    small = ("head", "eye", "beak")

    def fractions(freq):
        return " / ".join(f"{100 * freq[c]:.1f} %" for c in small)
    true = d["true_class_frequency"]
    lines = ["| oracle on … | flip-consistency mIoU | mean confidence | " + " / ".join(small) + " pixels |",
             "|---|---:|---:|---:|",
             f"| {d['num_samples']} real procedural images | {_pct(d['real']['flip_consistency_miou'])} | "
             f"{d['real']['mean_confidence']:.3f} | {fractions(d['real']['class_frequency'])} (true: "
             + " / ".join(f"{100 * true[c]:.1f}" for c in small) + ") |",
             f"| {d['num_samples']} samples of `{d['model']}`{_digest_of(d)} ("
             + (f"{d['sampler']}-{d['sampling_steps']}" if d["sampler"] else "one generator pass") + ") | "
             f"{_pct(d['samples']['flip_consistency_miou'])} | {d['samples']['mean_confidence']:.3f} | "
             f"{fractions(d['samples']['class_frequency'])} |"]
    real, samples = d["real"]["class_frequency"], d["samples"]["class_frequency"]
    ci = d.get("class_share_interval", {})  # reports before the interval existed have none

    def share(c):
        bounds = f" [{100 * ci[c][0]:.0f}, {100 * ci[c][1]:.0f}]" if c in ci else ""
        return f"{c} {100 * samples[c] / real[c]:.0f} %{bounds}"
    shares = ", ".join(share(c) for c in real if real[c] > 0)
    provenance = f" (`{d['command']}`, {d['date']}, {_machine(d)}{_weights(d)})" if d.get("command") else ""
    return "\n".join(lines) + (f"\n\nEach class's pixels in the samples as a share of its pixels in the real images "
                               f"(both as the oracle segments them{'; 95 % bootstrap interval over images' if ci else ''}"
                               f"): {shares}. The oracle's mIoU on these "
                               f"{d['num_samples']} real images: {_pct(d['oracle_miou_on_real'])}{provenance}.")


def budget(d: dict) -> str:
    """What each stage costs per step and per epoch on one machine (`benchmarks/budget.py`)."""
    sides = list(d["direct"])
    lines = ["| image side | DDPM train step (batch 32) | direct mode, s / image | DeepLabV3 input | train step "
             f"(batch {d['batch']}) | epoch of 1000 pairs | inference, s / image | DeepLab vs direct, per image |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    for side in sides:
        for key, r in d["deeplab"].items():
            if not key.startswith(side + " "):
                continue
            first = key.endswith("x1")
            ratio = r["faster_than_direct"]
            lines.append(f"| {side if first else ''} | "
                         + (f"{d['ddpm'][side]['train_step_seconds']:.2f} s | {d['direct'][side]['seconds_per_image']:.3f} |"
                            if first else " |  |")
                         + f" ×{key.rsplit('x', 1)[1]} | {r['train_step_seconds']:.2f} s | "
                         f"{r['train_seconds_per_1000_pairs_epoch']:.0f} s | {r['seconds_per_image']:.3f} | "
                         + (f"{ratio:.1f}× faster |" if ratio >= 1 else f"{1 / ratio:.1f}× slower |"))
    load = ", ".join(f"{x:.2f}" for x in d["load_average_at_start"])
    return "\n".join(lines) + (f"\n\nMedians of {d['repeats']} interleaved repeats, {d['torch_threads']} torch "
                               f"thread(s), {d['machine']}, {d['date']} (load average at the start: {load}); "
                               f"peak memory {d['peak_rss_mb']:.0f} MB. Direct mode: the embedded features "
                               "(6 blocks x 3 steps) and a 10-member ensemble; the same UNet architecture at each side.")


def recipe_cost(d: dict) -> str:
    """The recipe's commands timed end to end (`benchmarks/recipe_cost.py`): wall and CPU time per command."""
    cpu = d["cpu_seconds"]
    lines = ["| command | wall time | CPU time (user + system) |", "|---|---:|---:|"]
    lines += [f"| `{name}` | {_duration(s)} | {_duration(cpu[name])} |" for name, s in d["seconds"].items()]
    lines.append(f"| **total** | **{_duration(d['total_seconds'])}** | **{_duration(d['total_cpu_seconds'])}** |")
    miou = ", ".join(f"{m} {_pct(v)}" for m, v in d["miou"].items())
    busiest = max(d["load_average_after"].values(), key=lambda x: x[1])
    return "\n".join(lines) + (f"\n\n{d['samples']} samples, {d['settings']['pairs']} pairs; mIoU on the 200 test "
                               f"images: {miou}. {d['torch_threads']} torch threads, {d['machine']}, {d['date']}; "
                               f"the 5-minute load average as a command ended was at most {busiest[1]:.2f} (with other "
                               "work on the machine the wall time grows, the CPU time much less).")


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{seconds:.0f} s" if seconds < 90 else f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 \
        else f"{minutes} min"


def _ddpm_digest(d: dict) -> str:
    """The shipped DDPM's digest, where the result recorded it ('' otherwise): `embedded` is retrained
    from time to time."""
    return d.get("embedded_weights", {}).get("ddpm", "")


def _digest_of(d: dict) -> str:
    """' <digest>' after the name of the shipped DDPM."""
    return f" {_ddpm_digest(d)}" if _ddpm_digest(d) and d.get("model") == "embedded" else ""


@functools.lru_cache(maxsize=1)
def _shipped_ddpm_digest() -> str:
    from ..environment import embedded_weights
    return embedded_weights().get("ddpm", "")


def _machine(d: dict) -> str:
    """The machine, with its CPU where the result records it (seeded runs repeat on the same kind of CPU)."""
    return d["machine"] + (f", {d['cpu']}" if d.get("cpu") else "")


def _weights(d: dict) -> str:
    """The DDPM a result used; one that is no longer the shipped model says so (a table rendered again
    after the embedded DDPM changes then names it as the previous one)."""
    digest = _ddpm_digest(d)
    if not digest:
        return ""
    current = _shipped_ddpm_digest()
    return f"; shipped DDPM {digest}" if digest == current else f"; previous shipped DDPM {digest}"


def _with_provenance(table: str, d: dict) -> str:
    return table.rstrip("\n") + (f"\n\n`{d['command']}` ({d['date']}, {_machine(d)}{_weights(d)})."
                                  if d.get("command") else "")


def _markdown_view(module: str, function: str):
    """A view that renders a result with its own module's markdown function (imported when used), then
    the command, date and machine it recorded."""
    def view(d: dict) -> str:
        from importlib import import_module
        return _with_provenance(getattr(import_module(module, __package__), function)(d), d)
    return view


VIEWS = {"demo-compare": demo_compare, "demo-stages": demo_stages, "demo-summary": demo_summary, "demo-direct": demo_direct,
         "samples-vs-real": samples_vs_real, "budget": budget, "recipe-cost": recipe_cost,
         "samplers": _markdown_view("..studies.samplers", "study_markdown"),
         "trajectory": _markdown_view("..studies.trajectory", "trajectory_markdown"),
         "segmenter": _markdown_view("..studies.segmenter", "segmenter_markdown"),
         "real-images": _markdown_view("..studies.real_images", "real_images_markdown"),
         "suggest": _markdown_view("..studies.suggest", "suggest_markdown"),
         "main": _markdown_view("..studies.main", "main_markdown"),
         "labelled-count": _markdown_view("..studies.labelled_count", "labelled_count_markdown"),
         "filter": _markdown_view("..studies.filter", "filter_markdown"),
         "mining": _markdown_view("..studies.mining", "mining_markdown"),
         "features": _markdown_view("..studies.features", "features_markdown"),
         "synthetic-size": _markdown_view("..studies.synthetic_size", "synthetic_size_markdown"),
         "precision": _markdown_view("..studies.precision", "precision_markdown"),
         "compare": _markdown_view("..compare", "compare_markdown")}


# Views whose result has a picture: its figure function in `study_figures`, drawn to study.png beside the JSON.
PLOTS = {"samplers": "samplers_figure", "trajectory": "trajectory_figure", "segmenter": "segmenter_figure",
         "real-images": "real_images_figure", "suggest": "suggest_figure", "main": "main_figure",
         "labelled-count": "labelled_count_figure", "filter": "filter_figure", "mining": "mining_figure",
         "features": "features_figure", "synthetic-size": "synthetic_size_figure", "precision": "precision_figure"}


def study_figure(view: str, report: dict):
    """The matplotlib figure of a study report (`PLOTS[view]`)."""
    from . import study_figures
    return getattr(study_figures, PLOTS[view])(report)


def plot_path(path: str | Path) -> Path:
    """Where a study result's picture lives: study.png beside study.json."""
    return Path(path).with_suffix(".png")


def draw(path: str | Path, view: str) -> bytes:
    """The PNG bytes of a result's picture (`PLOTS[view]`), drawn from its JSON."""
    from .figures import figure_png
    if view not in PLOTS:
        raise OptionError("--view", f"view {view!r} has no picture; these do: {', '.join(PLOTS)}")
    data = read_json(path)
    try:
        return figure_png(study_figure(view, data))
    except (KeyError, TypeError, StopIteration, ValueError) as e:
        raise InputError(path, f"is not a result the {view!r} picture can draw (missing {e})") from None


def render(path: str | Path, view: str) -> str:
    if view not in VIEWS:
        raise OptionError("--view", f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    data = read_json(path)
    try:
        return VIEWS[view](data)
    except (KeyError, TypeError, StopIteration) as e:
        raise InputError(path, f"is not a result the {view!r} view can render (missing {e})") from None


def render_blocks(text: str, root: Path) -> str:
    """`text` with every result block re-rendered from its JSON (paths relative to `root`)."""
    def replace(m: re.Match) -> str:
        return m.group(1) + render(root / m.group(2), m.group(3)) + "\n" + m.group(5)
    return BLOCK.sub(replace, text)


def plots_of(text: str, root: Path) -> dict[Path, tuple[Path, str]]:
    """The pictures of a document's result blocks: png path -> (its JSON, the view that draws it)."""
    return {plot_path(root / m.group(2)): (root / m.group(2), m.group(3)) for m in BLOCK.finditer(text)
            if m.group(3) in PLOTS}


def update_blocks(document: str | Path) -> bool:
    """Re-render every result block of a markdown file in place, and redraw the pictures of its study
    results whose pixels differ; True when anything changed."""
    from .figures import read_rgb
    document = Path(document)
    text = document.read_text()
    rendered = render_blocks(text, document.parent)
    pictures = {png: draw(source, view) for png, (source, view) in plots_of(text, document.parent).items()}
    changed = [png for png, data in pictures.items()
               if not png.is_file() or not np.array_equal(read_rgb(png), read_rgb(io.BytesIO(data)))]
    for png in changed:
        with atomic_path(png) as tmp:
            tmp.write_bytes(pictures[png])
    if rendered != text:
        with atomic_path(document) as tmp:
            tmp.write_text(rendered)
    return rendered != text or bool(changed)


def result_files(text: str) -> list[str]:
    return [m.group(2) for m in BLOCK.finditer(text)]
