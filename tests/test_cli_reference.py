"""The README's command table and docs/cli.md are what the app renders (regenerate with
`python -m datasetddpm.cli.reference --write`)."""

from pathlib import Path

from datasetddpm.cli.reference import full_reference, readme_with_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_command_table_is_current():
    readme = (ROOT / "README.md").read_text()
    assert readme_with_table(readme) == readme, "README command table is stale: python -m datasetddpm.cli.reference --write"


def test_docs_cli_reference_is_current():
    rendered = full_reference()
    assert (ROOT / "docs" / "cli.md").read_text() == rendered, "docs/cli.md is stale: python -m datasetddpm.cli.reference --write"
    for command in ("sample", "label", "finalize", "train-deeplab", "show-config"):
        assert f"## `datasetddpm {command}`" in rendered
    assert "| `--n` / `--num-samples` | `1000` |" in rendered
