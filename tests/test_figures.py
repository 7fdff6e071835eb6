"""Pictures: every command that writes one writes a real picture (decodes, expected size, not blank),
the same bytes for the same inputs, and `compare.html` is self-contained and renders in a browser."""

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import finished_run as make_finished_run
from conftest import run
from PIL import Image

from datasetddpm.reporting.figures import (
    METHOD_COLOURS,
    drop_threshold,
    figure_png,
    plot_training_rows,
    uncertainty_figure,
)
from datasetddpm.data.overlays import image_grid
from datasetddpm.pipeline.preview import first_committed_samples


def check_png(source, size: tuple[int, int] | None = None, min_colours: int = 20) -> np.ndarray:
    """A PNG that decodes, has `size` (width, height), many colours (not blank, not one flat fill) and no
    matplotlib version stamp; returns its RGB pixels."""
    with Image.open(source) as im:
        im.load()
        assert im.format == "PNG"
        if size is not None:
            assert im.size == size, im.size
        assert "Software" not in im.info
        rgb = np.asarray(im.convert("RGB"))
    colours = len(np.unique(rgb.reshape(-1, 3), axis=0))
    assert colours >= min_colours, f"only {colours} colours"
    return rgb


def colour_pixels(rgb: np.ndarray, hex_colour: str, tolerance: int = 6) -> int:
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb.astype(int) - target).max(-1) <= tolerance).sum())


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tiny_ensemble, tmp_path_factory):
    """12 samples, 1 dropped by the default --drop-fraction 0.1."""
    return make_finished_run(tmp_path_factory.mktemp("run"), tiny_model_dir, tiny_ensemble, n=12, batch=4)


def test_image_grid_is_make_grid_with_white_padding():
    a, b = np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 100, np.uint8)
    grid = image_grid([a, b, a], columns=2, pad=1, scale=2)
    assert grid.shape == (2 * 7, 2 * 7, 3) and grid.dtype == np.uint8
    assert (grid[2:6, 2:6] == 0).all() and (grid[2:6, 8:12] == 100).all() and (grid[8:12, 2:6] == 0).all()
    assert (grid[0:2] == 255).all() and (grid[8:12, 8:12] == 255).all()  # padding, and the empty fourth cell


def test_finalize_writes_preview_and_histogram_deterministically(finished):
    preview = check_png(finished / "preview.png", (660, 945), min_colours=200)
    check_png(finished / "uncertainty.png", (640, 360))
    assert colour_pixels(preview, "#000000", 0) > 0  # the legend's class-0 patch (palette: black)
    before = {n: (finished / n).read_bytes() for n in ("preview.png", "uncertainty.png")}
    assert run("finalize", "--out", finished).exit_code == 0
    assert {n: (finished / n).read_bytes() for n in before} == before
    # A different drop changes the split, so both pictures change.
    assert run("finalize", "--out", finished, "--drop-fraction", 0.5).exit_code == 0
    assert all((finished / n).read_bytes() != before[n] for n in before)
    assert run("finalize", "--out", finished).exit_code == 0
    assert run("verify", finished).exit_code == 0  # the pictures are no stray files of the run


def test_library_calls_draw_only_through_an_installed_writer(finished, tmp_path):
    """finalize_run alone writes no picture; inside `drawing(FigureWriter())` (what every command does) it writes
    the command's bytes, and the writer is gone after the block."""
    from datasetddpm.hooks import NO_FIGURES, current_figures, drawing
    from datasetddpm.pipeline.finalize import finalize_run
    from datasetddpm.reporting.hooks import FigureWriter
    run_dir = shutil.copytree(finished, tmp_path / finished.name)  # the same name: it is in the preview's title
    drawn = {n: (run_dir / n).read_bytes() for n in ("preview.png", "uncertainty.png")}
    for name in drawn:
        (run_dir / name).unlink()
    finalize_run(run_dir)
    assert (run_dir / "index.jsonl").is_file() and not any((run_dir / n).exists() for n in drawn)
    with drawing(FigureWriter()):
        finalize_run(run_dir)
    assert {n: (run_dir / n).read_bytes() for n in drawn} == drawn
    assert current_figures() is NO_FIGURES


def test_histogram_marks_the_largest_kept_score():
    scores = np.array([0.1, 0.5, 0.2, 0.9, 0.3])
    kept = np.array([True, True, True, False, True])
    assert drop_threshold(scores, kept) == 0.5
    assert drop_threshold(scores, np.ones(5, bool)) is None
    fig = uncertainty_figure(scores, kept, 0.2)
    assert [tuple(line.get_xdata()) for line in fig.axes[0].lines] == [(0.5, 0.5)]
    assert len(uncertainty_figure(scores, np.ones(5, bool), 0.0).axes[0].lines) == 0
    check_png(io.BytesIO(figure_png(fig)), (640, 360))


def test_sample_then_label_write_a_preview_of_what_they_made(tiny_model_dir, tiny_ensemble, tmp_path):
    out = tmp_path / "run"
    r = run("sample", "--out", out, "--n", 8, "--model", tiny_model_dir, "--sampling-steps", 2, "--batch-size", 4,
            "--shard-size", 4, "--threads", 1, "--quiet")
    assert r.exit_code == 0, r.output
    assert "samples_preview.png" in r.output
    unlabelled = (out / "samples_preview.png").read_bytes()
    check_png(out / "samples_preview.png", (600, 410), min_colours=200)
    r = run("label", "--out", out, "--ensemble", tiny_ensemble, "--threads", 1, "--quiet")
    assert r.exit_code == 0, r.output
    labelled = check_png(out / "samples_preview.png", (600, 660), min_colours=200)  # overlays: a second row
    assert colour_pixels(labelled, "#000000", 0) > 0 and (out / "samples_preview.png").read_bytes() != unlabelled
    assert first_committed_samples(tmp_path / "empty") is None  # nothing committed: no picture


def _log(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_curves_are_the_same_bytes_in_another_process(tmp_path):
    log = _log(tmp_path / "train_log.jsonl", [{"epoch": e, "loss": 1 / (e + 1), "val_miou": 0.1 * e, "seconds": e}
                                             for e in range(5)])
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    mine = plot_training_rows(rows, tmp_path / "a.png", "t").read_bytes()
    code = ("import json, sys; from datasetddpm.reporting.figures import plot_training_rows; "
            "plot_training_rows([json.loads(x) for x in open(sys.argv[1])], sys.argv[2], 't')")
    subprocess.run([sys.executable, "-c", code, log, tmp_path / "b.png"], check=True)
    assert (tmp_path / "b.png").read_bytes() == mine
    check_png(tmp_path / "a.png", (840, 340))
    rows = [{"epoch": e, "loss": 2 / (e + 1), "val_miou": 0.1 * e, "seconds": e} for e in range(5)]
    assert plot_training_rows(rows, tmp_path / "c.png", "t").read_bytes() != mine  # the data is drawn


def test_train_ensemble_writes_its_loss_curve(tiny_dataset, tmp_path):
    r = run("train-ensemble", "--data", tiny_dataset, "--out", tmp_path / "ens", "--members", 2, "--threads", 1,
            "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.output
    training = json.loads((tmp_path / "ens" / "ensemble.json").read_text())["training"]
    losses = training["loss_per_epoch"]
    assert len(losses) == training["epochs"] and all(v > 0 for v in losses) and losses[-1] < losses[0]
    check_png(tmp_path / "ens" / "training_curves.png", (640, 340))


def test_train_ddpm_writes_loss_and_lr_curves_at_each_checkpoint(tmp_path):
    args = ["train-ddpm", "--steps", 4, "--checkpoint-every", 2, "--pool-size", 8, "--batch-size", 2,
            "--channels", "16,32,32", "--threads", 1, "--device", "cpu", "--quiet", "--out", tmp_path / "ddpm"]
    r = run(*args[:2], 2, *args[3:])
    assert r.exit_code == 0, r.output
    first = (tmp_path / "ddpm" / "training_curves.png").read_bytes()
    assert run(*args).exit_code == 0  # resumes to step 4: the curve is redrawn with the new checkpoint
    check_png(tmp_path / "ddpm" / "training_curves.png", (840, 340))
    assert (tmp_path / "ddpm" / "training_curves.png").read_bytes() != first


@pytest.fixture(scope="module")
def compared(finished, tiny_dataset, tiny_ensemble, tmp_path_factory):
    """train-deeplab (2 epochs) on the finished run, then compare: the folders of both."""
    root = tmp_path_factory.mktemp("cmp")
    r = run("train-deeplab", "--run", finished, "--val", tiny_dataset, "--out", root / "deeplab", "--epochs", 2,
            "--batch-size", 4, "--threads", 1, "--quiet")
    assert r.exit_code == 0, r.output
    r = run("compare", "--ensemble", tiny_ensemble, "--segmenter", root / "deeplab" / "best", "--data", tiny_dataset,
            "--out", root / "compare", "--threads", 1, "--quiet")
    assert r.exit_code == 0, r.output
    return root


def test_train_deeplab_writes_loss_and_miou_curves(compared):
    check_png(compared / "deeplab" / "training_curves.png", (840, 340))


def test_compare_html_is_self_contained(compared):
    out = compared / "compare"
    assert {"compare.json", "compare.md", "compare.html"} <= {p.name for p in out.iterdir()}
    text = (out / "compare.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"'](?!data:)", text)  # nothing loaded from elsewhere
    assert "<script" not in text and "<link" not in text and "http" not in text
    uris = re.findall(r"src=\"data:image/png;base64,([A-Za-z0-9+/=]+)\"", text)
    assert len(uris) == 3
    for uri in uris:
        check_png(io.BytesIO(base64.b64decode(uri)), min_colours=30)
    report = json.loads((out / "compare.json").read_text())
    for method, r in report["methods"].items():
        assert method in text and f"{100 * r['miou']:.1f}" in text
    assert all(name in text for name in "abcdefg") and "Resolved configuration" in text
    assert '&quot;members&quot;: 3' in text  # the ensemble's recorded config, resolved into the page


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("DATASETDDPM_REQUIRE_BROWSER"):
            pytest.fail("DATASETDDPM_REQUIRE_BROWSER is set but chromium is not on PATH")
        pytest.skip("chromium is not installed (apt-get install chromium, as .ci/run does); "
                    "the HTML report cannot be rendered")
    return found


def test_compare_html_renders_in_a_headless_browser(compared, tmp_path):
    browser = _chromium()
    shot = tmp_path / "shot.png"
    # --no-sandbox: CI containers run as root, where chromium refuses its sandbox.
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
                    (compared / "compare" / "compare.html").as_uri()],
                   check=True, capture_output=True, timeout=180)
    rgb = check_png(shot, (1200, 2000), min_colours=100)
    assert colour_pixels(rgb, METHOD_COLOURS[0]) > 100  # the charts' first colour: the inline images were drawn
