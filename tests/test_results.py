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
