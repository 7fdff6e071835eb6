"""The documentation a user reads: README.md (short, for users, every link resolving, its headline table
read from the committed result JSON) and the docs/ site, built by mkdocs in --strict mode so that a
broken link, a missing page or a missing image fails the suite."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<img[^>]*\ssrc=\"([^\"]+)\"")


def _json(relative: str) -> dict:
    return json.loads((ROOT / relative).read_text())


def _pm(row: dict) -> str:
    return f"{100 * row['miou_mean']:.1f} ± {100 * row['miou_std']:.1f}"


def _ci(c: dict) -> str:
    return f"{100 * c['difference']:+.1f} [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]"


def headline_rows() -> list[list[str]]:
    """The headline table's cells up to its last column, each number read from the result JSON it quotes."""
    main, large = _json("docs/studies/main/study.json"), _json("docs/studies/main/large/study.json")
    size = _json("docs/studies/synthetic_size/study.json")
    labeller = _json("docs/studies/synthetic_size/labeller_direct.json")
    real = "20 real labelled images"
    rows = main["rows"]
    at_8000 = size["rows"]["8000"]
    return [
        ["direct mode", real, "—", "—", str(len(main["seeds"])), _pm(rows["direct DDPM"]), "—", "—"],
        ["DatasetDDPM", real, str(main["pairs"]), str(main["segmenter"]["epochs"]), str(len(main["seeds"])),
         _pm(rows["DatasetDDPM"]), _ci(rows["DatasetDDPM"]["vs_labeller"]), "its labeller in direct mode"],
        ["DatasetDDPM", real, str(large["pairs"]), str(large["segmenter"]["epochs"]), str(len(large["seeds"])),
         _pm(large["rows"]["DatasetDDPM"]), _ci(large["rows"]["DatasetDDPM"]["vs_labeller"]),
         "its labeller in direct mode"],
        ["DatasetDDPM", real, str(at_8000["pairs"]), str(at_8000["epochs"]), str(len(size["deeplab_seeds"])),
         _pm(at_8000), f"{100 * (at_8000['miou_mean'] - labeller['miou']):+.1f}",
         f"its labeller in direct mode ({100 * labeller['miou']:.1f}, one ensemble; no interval)"],
        ["DatasetGAN", "20 annotated StyleGAN2 samples", str(main["pairs"]), str(main["segmenter"]["epochs"]),
         str(len(main["seeds"])), _pm(rows["DatasetGAN"]), _ci(rows["DatasetGAN"]["vs_datasetddpm_paper"]),
         f"DatasetDDPM on 20 annotated DDPM samples ({100 * rows['DatasetDDPM (paper protocol)']['miou_mean']:.1f})"],
    ]


def _table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ")]


@pytest.mark.parametrize("page", ["README.md", "docs/results/index.md"])
def test_headline_table_is_what_the_result_json_says(page):
    rows = _table_rows((ROOT / page).read_text())
    for expected in headline_rows():
        assert any(row[:len(expected)] == expected for row in rows), \
            f"{page}: headline row {' | '.join(expected)} is not there (its numbers come from the result JSON)"


def test_headline_rows_change_with_the_json(tmp_path, monkeypatch):
    """The check above reads the JSON: another number in a study gives another row."""
    study = _json("docs/studies/main/large/study.json")
    study["rows"]["DatasetDDPM"]["miou_mean"] += 0.01
    fake = tmp_path / "docs/studies/main/large"
    fake.mkdir(parents=True)
    (fake / "study.json").write_text(json.dumps(study))
    before = headline_rows()
    original = _json
    monkeypatch.setattr(sys.modules[__name__], "_json", lambda rel: json.loads((tmp_path / rel).read_text())
                        if (tmp_path / rel).is_file() else original(rel))
    after = headline_rows()
    assert before[2][5] != after[2][5] and before[:2] == after[:2]


def test_readme_is_short_and_for_users():
    text = README.read_text()
    assert len(text.splitlines()) <= 300, f"README.md has {len(text.splitlines())} lines (at most 300)"
    assert "pip install" in text and "CUDA" in text
    for stale in ("previous shipped", "ddpm_24000_steps", "ddpm_3000_steps", "<!-- result "):
        assert stale not in text, f"README.md: {stale!r} belongs in docs/results/"
    assert "../shared" not in text and not re.search(r"\b(session|issue)s?\b", text, re.I)


def _relative_targets(text: str) -> list[str]:
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_every_relative_link_and_image_of_the_readme_resolves():
    targets = _relative_targets(README.read_text())
    assert len(targets) >= 10 and any(t.endswith(".png") for t in targets)
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
    outside = [t for t in targets if not (ROOT / t.split("#")[0]).resolve().is_relative_to(ROOT)]
    assert not outside, f"README.md links outside the repository: {outside}"


def test_link_check_finds_a_broken_link_and_image():
    text = "see [a](docs/nope.md#x), ![p](docs/none.png) and <img src=\"docs/x.png\">, [web](https://a.b)"
    assert _relative_targets(text) == ["docs/nope.md#x", "docs/none.png", "docs/x.png"]


def _mkdocs(site: Path, config: Path = ROOT / "mkdocs.yml") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_docs_site_builds_in_strict_mode(tmp_path):
    r = _mkdocs(tmp_path / "site")
    assert r.returncode == 0, r.stderr[-3000:]
    site = tmp_path / "site"
    for page in ("index.html", "gpus/index.html", "results/index.html", "results/main/index.html",
                 "results/history/index.html", "cli/index.html", "development/index.html"):
        assert (site / page).is_file(), page
    assert (site / "studies/main/study.png").is_file()  # images the pages show are part of the site


def test_strict_build_fails_on_a_broken_link_or_missing_image(tmp_path):
    """The same configuration on a copy of two pages: a link to a missing page, then a missing image, fail."""
    for case, broken in enumerate(("[gone](missing.md)", "![gone](missing.png)")):
        docs = tmp_path / str(case) / "docs"
        docs.mkdir(parents=True)
        (docs / "index.md").write_text(f"# Home\n\n{broken}\n")
        config = docs.parent / "mkdocs.yml"
        config.write_text((ROOT / "mkdocs.yml").read_text().split("\nnav:")[0] + "\nnav:\n  - Home: index.md\n")
        r = _mkdocs(docs.parent / "site", config)
        assert r.returncode != 0 and "missing." in r.stderr, r.stderr[-2000:]
