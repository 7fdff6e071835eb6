"""README result tables are rendered from committed result JSON (`datasetddpm report --readme README.md`)."""

import json
from pathlib import Path

import pytest

from conftest import one_line_error, run
from datasetddpm.results import VIEWS, render, render_blocks, result_files

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_are_what_their_json_renders():
    readme = (ROOT / "README.md").read_text()
    files = result_files(readme)
    assert len(files) >= 4 and all((ROOT / f).is_file() for f in files)
    assert render_blocks(readme, ROOT) == readme, "README is stale: datasetddpm report --readme README.md"


def test_docs_tables_are_what_their_json_renders():
    docs = [d for d in sorted((ROOT / "docs").glob("*.md")) if result_files(d.read_text())]
    assert docs, "docs/custom_data.md renders the budget table"
    for doc in docs:
        text = doc.read_text()
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
