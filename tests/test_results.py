"""The result tables of the documentation (docs/results/ and the guides) are rendered from committed result
JSON (`datasetddpm report --readme PAGE`)."""

import json
from pathlib import Path

import pytest

from conftest import one_line_error, run
from datasetddpm.reporting.results import VIEWS, render, render_blocks, result_files

ROOT = Path(__file__).resolve().parents[1]


def _documents() -> list[Path]:
    """README.md and every page of the site (a study folder's own study.md is data, not a page)."""
    pages = [d for d in sorted((ROOT / "docs").rglob("*.md")) if d.parent.name == "results" or d.parent.name == "docs"]
    return [ROOT / "README.md", *pages]


def test_results_pages_tables_are_what_their_json_renders():
    pages = sorted((ROOT / "docs" / "results").glob("*.md"))
    files = [f for page in pages for f in result_files(page.read_text())]
    assert len(files) >= 30 and all((page.parent / f).is_file() for page in pages for f in result_files(page.read_text()))
    for page in pages:
        text = page.read_text()
        assert render_blocks(text, page.parent) == text, \
            f"{page.relative_to(ROOT)} is stale: datasetddpm report --readme {page.relative_to(ROOT)}"


def test_docs_tables_are_what_their_json_renders():
    docs = [d for d in _documents() if result_files(d.read_text())]
    assert ROOT / "docs" / "custom_data.md" in docs, "docs/custom_data.md renders the budget table"
    for doc in docs:
        text = doc.read_text()
        assert all((doc.parent / f).is_file() for f in result_files(text)), doc.name
        assert render_blocks(text, doc.parent) == text, f"{doc.name} is stale: datasetddpm report --readme {doc}"


def test_budget_view_says_faster_or_slower_from_the_measured_ratio(tmp_path):
    side = {"train_step_seconds": 1.0, "train_seconds_per_1000_pairs_epoch": 125.0, "seconds_per_image": 0.01}
    d = {"batch": 8, "repeats": 5, "torch_threads": 1, "machine": "m", "date": "d", "load_average_at_start": [1, 1, 1],
         "peak_rss_mb": 10, "ddpm": {"32px": {"train_step_seconds": 2.0}}, "direct": {"32px": {"seconds_per_image": 0.1}},
         "deeplab": {"32px x1": {**side, "faster_than_direct": 10.0}, "32px x4": {**side, "faster_than_direct": 0.25}}}
    (tmp_path / "b.json").write_text(json.dumps(d))
    table = render(tmp_path / "b.json", "budget")
    assert "| 32px | 2.00 s | 0.100 | ×1 | 1.00 s | 125 s | 0.010 | 10.0× faster |" in table
    assert "| ×4 | 1.00 s | 125 s | 0.010 | 4.0× slower |" in table


def test_a_changed_number_changes_the_table(tmp_path):
    demo = json.loads((ROOT / "docs/demo/demo.json").read_text())
    demo["datasetddpm"]["compare"]["direct DDPM"]["miou"] = 0.5
    (tmp_path / "demo.json").write_text(json.dumps(demo))
    assert "| direct DDPM | 50.0 |" in render(tmp_path / "demo.json", "demo-compare")
    doc = "x\n<!-- result demo.json demo-compare -->\nold\n<!-- /result -->\ny\n"
    out = render_blocks(doc, tmp_path)
    assert "old" not in out and "| direct DDPM | 50.0 |" in out and out.startswith("x\n") and out.endswith("y\n")


def test_direct_view_means_and_stds_are_computed_from_the_runs(tmp_path):
    runs = [{"seed": s, "miou": m, "iou": {"a": m, "b": 0.0}} for s, m in ((0, 0.40), (1, 0.50))]
    d = {"seeds": [0, 1], "direct": {"direct DDPM": {"miou_mean": 0.45, "miou_std": 0.05, "runs": runs}}}
    (tmp_path / "d.json").write_text(json.dumps(d))
    table = render(tmp_path / "d.json", "demo-direct")
    assert "| direct DDPM | 45.0 ± 5.0 | 45 | 0 |" in table and "40.0, 50.0" in table


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_a_json_of_another_kind_is_one_line(tmp_path, view):
    (tmp_path / "x.json").write_text("{}")
    one_line_error(run("report", tmp_path / "x.json", "--view", view), "x.json: is not a result")


def _pixels(png):
    """A PNG's RGB pixels, from its bytes or its file."""
    import io
    import numpy as np
    from PIL import Image
    with Image.open(io.BytesIO(png) if isinstance(png, bytes) else png) as im:
        return np.asarray(im.convert("RGB"))


def test_docs_study_pictures_are_what_their_json_draws():
    import numpy as np
    from datasetddpm.reporting.results import PLOTS, draw, plots_of
    pictures = {png: (source, view, doc) for doc in _documents()
                for png, (source, view) in plots_of(doc.read_text(), doc.parent).items()}
    views = {view for _, view, _ in pictures.values()}
    assert {"main", "labelled-count", "filter", "samplers", "synthetic-size", "features"} <= views <= set(PLOTS)
    for png, (source, view, doc) in pictures.items():
        fix = f"datasetddpm report --readme {doc.relative_to(ROOT)}"
        assert png.is_file(), f"{png.resolve().relative_to(ROOT)} is missing: {fix}"
        assert np.array_equal(_pixels(png), _pixels(draw(source, view))), f"{png.resolve().relative_to(ROOT)} is stale: {fix}"


def test_a_changed_number_changes_the_picture(tmp_path):
    import numpy as np
    from datasetddpm.reporting.results import draw
    study = json.loads((ROOT / "docs/studies/main/study.json").read_text())
    (tmp_path / "a.json").write_text(json.dumps(study))
    study["rows"]["DatasetDDPM"]["miou_per_seed"][0] += 0.05
    (tmp_path / "b.json").write_text(json.dumps(study))
    assert not np.array_equal(_pixels(draw(tmp_path / "a.json", "main")), _pixels(draw(tmp_path / "b.json", "main")))
    assert draw(tmp_path / "a.json", "main") == draw(tmp_path / "a.json", "main")  # same JSON, same bytes


def test_bars_show_each_rows_mean_and_std_over_seeds():
    """Known answer: seeds 40 % and 60 % give a bar of 50 with whiskers of ±10; one value, no whiskers."""
    from datasetddpm.reporting.study_plots import Bar, Panel, bars_figure
    fig = bars_figure([Panel("p", [Bar("two seeds", [0.4, 0.6], "+1.0 [+0.5, +1.5]"), Bar("one", [0.3])])], "t")
    ax = fig.axes[0]
    assert [round(p.get_width(), 9) for p in ax.patches] == [50.0, 30.0]
    (whiskers,) = [c for c in ax.collections if c.__class__.__name__ == "LineCollection"]
    ((x0, _), (x1, _)) = whiskers.get_segments()[0]
    assert (round(x0, 9), round(x1, 9)) == (40.0, 60.0)
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["50.0  Δ +1.0 [+0.5, +1.5]", "30.0"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["two seeds", "one"]


def test_report_plot_draws_a_study_picture_and_refuses_bad_requests(tmp_path):
    import numpy as np
    from datasetddpm.reporting.results import draw
    study = ROOT / "docs/studies/filter/study.json"
    r = run("report", study, "--view", "filter", "--plot", tmp_path / "f.png")
    assert r.exit_code == 0, r.output
    assert "| 10 % |" in r.output and np.array_equal(_pixels(tmp_path / "f.png"), _pixels(draw(study, "filter")))
    one_line_error(run("report", study, "--view", "filter", "--plot", tmp_path / "f.jpg"), "--plot", "give a .png")
    one_line_error(run("report", study, "--view", "filter", "--plot", tmp_path / "no" / "f.png"), "--plot", "no such folder")
    one_line_error(run("report", ROOT / "docs/demo/demo.json", "--view", "demo-compare", "--plot", tmp_path / "d.png"),
                   "--view", "has no picture")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]


def test_synthetic_size_confusions_are_the_ones_behind_its_table():
    """docs/studies/synthetic_size/confusions.npz keeps every size's and seed's per-image test confusions (a
    later session's sizes resume from them): each seed's mIoU and each step's difference recompute."""
    import numpy as np
    from datasetddpm.studies.stats import miou_of
    study = ROOT / "docs" / "studies" / "synthetic_size"
    report = json.loads((study / "study.json").read_text())
    with np.load(study / "confusions.npz") as kept:
        for size, row in report["rows"].items():
            confusions = [kept[f"deeplab-{size}.seed-{s}"] for s in report["deeplab_seeds"]]
            assert [miou_of(c, 255) for c in confusions] == pytest.approx(row["miou_per_seed"], abs=1e-12)
