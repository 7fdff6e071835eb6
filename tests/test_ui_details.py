"""What users read and where they find things (issue 38, the smaller items): legends inside the pictures,
titled compare pictures, headings that name the real segmenter and real images, mIoU in % wherever people
read it, progress lines without a fake best or clock-like ETAs, wide tables in logs, `label-images --limit /
--files`, and model folders found again after the whole tree moved."""

import base64
import hashlib
import io
import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from conftest import one_line_error, run, tree_state
from matplotlib.text import Text
from PIL import Image

from datasetddpm.data.images import write_image
from datasetddpm.data.procedural import render_batch
from datasetddpm.reporting import figures

LONG_NAMES = tuple(f"a rather long class name {k}" for k in range(12))


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def _legends_inside(fig) -> None:
    figures.figure_png(fig)  # draws: legend positions are final
    renderer = fig.canvas.get_renderer()
    assert fig.legends
    for legend in fig.legends:
        box = legend.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= fig.bbox.width, (box, fig.bbox)


# --- pictures --------------------------------------------------------------------------------------------

def test_a_legend_of_many_long_class_names_stays_inside_the_preview_and_the_overlay_grid():
    images = [np.full((32, 32, 3), 40 * k, np.uint8) for k in range(6)]
    masks = [np.full((32, 32), k, np.uint8) for k in range(6)]
    section = {"title": "t", "images": images, "masks": masks, "captions": [str(k) for k in range(6)]}
    preview = figures.preview_figure([section], LONG_NAMES, len(LONG_NAMES), "preview")
    _legends_inside(preview)
    assert {t for t in _texts(preview)} >= set(LONG_NAMES)  # every class still named
    grid = figures.overlay_grid_figure(np.stack(images), {"ground truth": np.stack(masks)}, LONG_NAMES,
                                       len(LONG_NAMES), limit=2)
    _legends_inside(grid)


def _methods(names=("a", "b")) -> dict:
    return {"direct DDPM": {"miou": 0.604, "iou": {n: 0.5 for n in names}, "seconds_per_image": 0.5},
            "U-Net (synthetic)": {"miou": 0.55, "iou": {n: 0.45 for n in names}, "seconds_per_image": 0.01}}


def test_compare_grid_png_is_the_html_overlay_picture_with_titles_and_legend(tmp_path):
    from types import SimpleNamespace

    from datasetddpm.reporting.hooks import FigureWriter
    images, _ = render_batch(range(3), 32)
    masks = np.stack([np.full((32, 32), k % 2, np.uint8) for k in range(3)])
    report = {"test_images": 3, "data": "d", "protocol": "p", "methods": _methods()}
    cfg = SimpleNamespace(class_names=("a", "b"), num_classes=2)
    columns = {"ground truth": masks, "direct DDPM": masks, "U-Net (synthetic)": masks}
    FigureWriter().compare_page(tmp_path, report, {}, images, columns, class_names=cfg.class_names,
                                num_classes=cfg.num_classes)
    html = (tmp_path / "compare.html").read_text()
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert (tmp_path / "compare_grid.png").read_bytes() in [base64.b64decode(u) for u in uris]
    fig = figures.overlay_grid_figure(images, columns, cfg.class_names, cfg.num_classes)
    assert {"image", "ground truth", "U-Net (synthetic)", "a", "b"} <= set(_texts(fig))  # titles and legend


def test_the_html_heading_names_the_segmenters_compared():
    from datasetddpm.reporting.html import compare_html
    report = {"test_images": 3, "data": "d", "protocol": "p", "methods": _methods()}
    png = figures.figure_png(figures.new_figure(1, 1))
    page = compare_html(report, {"speed": png, "iou": png, "overlays": png},
                        {"segmenter: U-Net (synthetic)": {"segmenter": {"arch": "unet"}}})
    heading = re.search(r"<h1>(.*)</h1>", page).group(1)
    assert "U-Net (synthetic)" in heading and "DeepLabV3" not in heading
    methods = {**_methods(), "DatasetGAN": _methods()["U-Net (synthetic)"]}
    page = compare_html({**report, "methods": methods}, {"speed": png, "iou": png, "overlays": png},
                        {"segmenter: DatasetGAN": {"segmenter": {"arch": "deeplabv3"}}})
    assert "DatasetGAN (DeepLabV3)" in re.search(r"<h1>(.*)</h1>", page).group(1)


def test_training_curves_show_validation_miou_in_percent(tmp_path, monkeypatch):
    rows = [{"epoch": e, "loss": 1.0 / (e + 1), "val_miou": v} for e, v in enumerate((0.5, 0.604))]
    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: drawn.append(fig))
    figures.plot_training_rows(rows, tmp_path / "c.png", "t")
    panel = next(ax for ax in drawn[0].axes if "mIoU" in ax.get_title())
    assert "%" in panel.get_title()
    assert list(panel.get_lines()[0].get_ydata()) == pytest.approx([50.0, 60.4])
    assert rows[1]["val_miou"] == 0.604  # the log's rows (and train_log.jsonl) keep fractions


# --- console and progress ----------------------------------------------------------------------------------

def test_compare_table_is_not_cut_when_output_is_not_a_terminal(capsys):
    from datasetddpm.compare import compare_markdown
    from datasetddpm.reporting.console import print_compare
    report = {"test_images": 3, "methods": _methods(LONG_NAMES)}
    print_compare(report)  # pytest captures stdout: not a terminal
    out = capsys.readouterr().out
    assert "…" not in out and all(name in out for name in LONG_NAMES) and "60.4" in out and "mIoU (%)" in out
    assert "| 60.4 | 0.5000 | 50.0 |" in compare_markdown(report)  # markdown: % with one decimal too


def test_progress_durations_read_as_spans_not_clock_times():
    from datasetddpm.progress import PlainProgress, duration
    assert [duration(s) for s in (45, 1271, 3900, 7260.4)] == ["45s", "21m11s", "1h05m", "2h01m"]
    out = io.StringIO()
    bar = PlainProgress(stream=out, interval=0)
    task = bar.add_task("sample", total=3, info="")
    bar.tasks[task]["start"] -= 1271.0  # one third done in 21m11s: 42m22s to go
    bar.update(task, completed=1)
    assert out.getvalue().strip().endswith("elapsed 21m11s, 42m22s left")
    from types import SimpleNamespace

    from datasetddpm.progress import TimeLeftColumn  # the terminal's bar says it in the same words
    column = TimeLeftColumn()
    assert column.render(SimpleNamespace(time_remaining=3900.0, finished=False)).plain == "1h05m left"
    assert column.render(SimpleNamespace(time_remaining=None, finished=False)).plain == ""


def test_the_best_score_is_shown_only_once_an_epoch_was_validated():
    from datasetddpm.segmenters.train_deeplab import best_shown
    assert best_shown({"miou": -1.0, "epoch": -1}) == "-"
    assert best_shown({"miou": 0.604, "epoch": 2}) == "60.4"


def test_suggest_progress_is_named_suggest(tiny_ensemble, tiny_dataset, tmp_path, capsys):
    from datasetddpm.suggest import suggest
    suggest(tiny_dataset / "real" / "test", tiny_ensemble, 2, tmp_path / "s", diversity=False, progress=True)
    err = capsys.readouterr().err
    assert err.startswith("suggest: 4/4") and "segment" not in err


# --- label-images: --limit, --files, and its pictures ------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("unlabelled")
    images, _ = render_batch(range(200, 206), 32)
    for i, image in enumerate(images):
        write_image(root / f"img_{i:02d}.png", image)
    return root


def _label(images, ensemble, out, *extra):
    return run("label-images", "--images", images, "--ensemble", ensemble, "--out", out, "--batch-size", 2,
               "--shard-size", 2, "--device", "cpu", "--threads", 1, "--quiet", *extra)


def _sources(out) -> list[str]:
    return [s["source"] for p in sorted((out / "shards").glob("*[0-9].json"))
            for s in json.loads(p.read_text())["samples"]]


def test_limit_labels_the_first_images_and_resumes(folder, tiny_ensemble, tmp_path):
    out = tmp_path / "run"
    result = _label(folder, tiny_ensemble, out, "--limit", 3)
    assert result.exit_code == 0, result.output
    assert "3 of 3 images labelled" in result.output and _sources(out) == ["img_00.png", "img_01.png", "img_02.png"]
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["limit"] == 3 and config["files"] == "" and config["n"] == 3
    before = tree_state(out / "shards")
    assert _label(folder, tiny_ensemble, out, "--limit", 3).exit_code == 0  # the same command resumes
    assert tree_state(out / "shards") == before
    one_line_error(_label(folder, tiny_ensemble, out), "different config", "--overwrite")  # all 6 is another run
    assert tree_state(out / "shards") == before


def test_files_labels_the_listed_images_in_name_order(folder, tiny_ensemble, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("img_04.png\n\n./img_01.png\nimg_05.png\n")
    out = tmp_path / "run"
    result = _label(folder, tiny_ensemble, out, "--files", listing, "--limit", 2)
    assert result.exit_code == 0, result.output
    assert _sources(out) == ["img_01.png", "img_04.png"]
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["files"] == str(listing.resolve()) and config["limit"] == 2
    assert _label(folder, tiny_ensemble, out, "--files", listing, "--limit", 2).exit_code == 0


@pytest.mark.parametrize("lines, needles", [
    ("img_00.png\nnope.png\n", ["list.txt", "line 2", "'nope.png' is not an image"]),
    ("img_00.png\nimg_00.png\n", ["list.txt", "line 2", "listed twice"]),
    ("\n\n", ["list.txt", "lists no images"]),
    (None, ["list.txt", "unreadable file list"]),
])
def test_a_bad_file_list_is_one_line_and_writes_nothing(folder, tiny_ensemble, tmp_path, lines, needles):
    listing = tmp_path / "list.txt"
    if lines is not None:
        listing.write_text(lines)
    one_line_error(_label(folder, tiny_ensemble, tmp_path / "run", "--files", listing), *needles)
    assert not (tmp_path / "run").exists()


def test_limit_0_is_one_line_and_writes_nothing(folder, tiny_ensemble, tmp_path):
    one_line_error(_label(folder, tiny_ensemble, tmp_path / "run", "--limit", 0), "--limit")
    assert not (tmp_path / "run").exists()


def test_a_run_of_the_whole_folder_keeps_its_key():
    """--limit / --files at their defaults leave the hash what it was before they existed."""
    from datasetddpm.pipeline.config import SampleConfig
    cfg = SampleConfig(model="", n=6, sampler="real-images", sampling_steps=0, images="/x", images_digest="abc")
    before = {k: v for k, v in asdict(cfg).items() if k not in ("limit", "files", "precision", "compile", "threads")}
    assert cfg.hash() == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert SampleConfig(**{**asdict(cfg), "limit": 3}).hash() != cfg.hash()


def test_pictures_of_a_label_images_run_call_its_images_real(folder, tiny_ensemble, tmp_path, monkeypatch):
    out = tmp_path / "run"
    drawn = {}
    save = figures.save_figure
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: (drawn.update({Path(path).name: fig}),
                                                                  save(fig, path))[1])
    assert _label(folder, tiny_ensemble, out).exit_code == 0
    assert run("finalize", "--out", out, "--drop-fraction", 0.5).exit_code == 0
    assert set(drawn) == {"samples_preview.png", "preview.png", "uncertainty.png"}
    texts = " ".join(t for fig in drawn.values() for t in _texts(fig))
    assert "generated" not in texts and "samples" not in texts
    assert "6 real images" in texts and "real images and their labels" in texts


# --- model folders recorded relative to the ensemble ----------------------------------------------------------

@pytest.fixture()
def tree(tiny_model_dir, tiny_dataset, tmp_path):
    """A user's working tree: a model, the labelled data and an ensemble trained on the model's features."""
    root = tmp_path / "work"
    shutil.copytree(tiny_model_dir, root / "models" / "ddpm")
    ens = root / "ensembles" / "e1"
    result = run("train-ensemble", "--data", tiny_dataset, "--out", ens, "--model", root / "models" / "ddpm",
                 "--blocks", "1,4", "--steps", "50", "--members", 2, "--device", "cpu", "--threads", 1, "--quiet")
    assert result.exit_code == 0, result.output
    return root


def test_an_ensemble_records_its_model_relative_and_a_rerun_leaves_it_unchanged(tree, tiny_dataset):
    from datasetddpm.ensemble.model import load_ensemble
    ens = tree / "ensembles" / "e1"
    meta = json.loads((ens / "ensemble.json").read_text())
    assert meta["ensemble"]["model"] == "../../models/ddpm"
    assert load_ensemble(ens).cfg.model == str((tree / "models" / "ddpm").resolve())
    before = tree_state(ens)
    result = run("train-ensemble", "--data", tiny_dataset, "--out", ens, "--model", tree / "models" / "ddpm",
                 "--blocks", "1,4", "--steps", "50", "--members", 2, "--device", "cpu", "--threads", 1, "--quiet")
    assert result.exit_code == 0, result.output  # not refused as "other options"
    assert tree_state(ens) == before  # the same ensemble: its bytes (and the labels hash of runs) kept


def test_evaluate_and_segment_find_the_model_after_the_tree_moved(tree, tiny_dataset, tmp_path):
    ens = tree / "ensembles" / "e1"
    assert run("segment", "--images", tiny_dataset / "real" / "test", "--ensemble", ens, "--out", tmp_path / "s0",
               "--device", "cpu", "--quiet").exit_code == 0
    moved = tmp_path / "elsewhere" / "work"
    moved.parent.mkdir()
    shutil.move(tree, moved)
    ens = moved / "ensembles" / "e1"
    result = run("segment", "--images", tiny_dataset / "real" / "test", "--ensemble", ens, "--out", tmp_path / "s1",
                 "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    labels = {k: v for k, v in tree_state(tmp_path / "s1").items() if k.endswith(".png")}
    assert labels and labels == {k: v for k, v in tree_state(tmp_path / "s0").items() if k.endswith(".png")}
    result = run("evaluate", "--ensemble", ens, "--data", tiny_dataset, "--out", tmp_path / "e.json", "--device", "cpu",
                 "--quiet")
    assert result.exit_code == 0, result.output


def test_an_ensemble_moved_alone_or_recorded_absolute_still_finds_its_model(tree, tmp_path):
    from datasetddpm.ensemble.model import load_ensemble
    model = str((tree / "models" / "ddpm").resolve())
    alone = shutil.copytree(tree / "ensembles" / "e1", tmp_path / "copied")  # the relative path leads nowhere here
    assert load_ensemble(alone).cfg.model == model
    old = shutil.copytree(alone, tmp_path / "old")  # a record made before relative ones: absolute, no fallback
    meta = json.loads((old / "ensemble.json").read_text())
    meta.pop("model_absolute")
    meta["ensemble"]["model"] = model
    (old / "ensemble.json").write_text(json.dumps(meta))
    assert load_ensemble(old).cfg.model == model
    embedded = json.loads((tree / "ensembles" / "e1" / "ensemble.json").read_text())
    assert Path(embedded["model_absolute"]) == Path(model)
