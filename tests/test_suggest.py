"""`datasetddpm suggest`: the most uncertain unlabelled images, kept diverse, copied for annotators."""

import json

import numpy as np

from conftest import one_line_error, run, tree_state


def test_suggest_picks_uncertain_images_and_copies_them(tiny_ensemble, tiny_dataset, tmp_path):
    images = tiny_dataset / "real" / "test"
    r = run("segment", "--images", images, "--out", tmp_path / "seg", "--ensemble", tiny_ensemble, "--quiet")
    assert r.exit_code == 0, r.output
    scores = json.loads((tmp_path / "seg" / "uncertainty.json").read_text())
    top = sorted(scores, key=lambda s: -scores[s])[:2]
    r = run("suggest", "--images", images, "--ensemble", tiny_ensemble, "--k", 2, "--no-diversity", "--out",
            tmp_path / "plain", "--quiet")
    assert r.exit_code == 0, r.output
    plain = json.loads((tmp_path / "plain" / "suggestions.json").read_text())["suggestions"]
    assert [s["file"] for s in plain] == [f"{stem}.png" for stem in top]
    assert abs(plain[0]["uncertainty"] - scores[top[0]]) < 1e-6
    for s in plain:  # the annotators get the images' own bytes
        assert (tmp_path / "plain" / s["file"]).read_bytes() == (images / s["file"]).read_bytes()
    assert run("suggest", "--images", images, "--ensemble", tiny_ensemble, "--k", 3, "--out", tmp_path / "d",
               "--quiet").exit_code == 0
    diverse = json.loads((tmp_path / "d" / "suggestions.json").read_text())["suggestions"]
    assert diverse[0]["file"] == f"{top[0]}.png" and len({s["file"] for s in diverse}) == 3


def test_k_center_spreads_out():
    from datasetddpm.suggest import k_center
    points = np.array([[0.0, 0], [0.1, 0], [0.2, 0], [5, 5], [10, 0]])
    assert k_center(points, 3, 0) == [0, 4, 3]


def test_suggest_refuses_a_k_beyond_the_folder(tiny_ensemble, tiny_dataset, tmp_path):
    before = tree_state(tmp_path)
    one_line_error(run("suggest", "--images", tiny_dataset / "real" / "test", "--ensemble", tiny_ensemble, "--k", 9,
                       "--out", tmp_path / "s"), "--k: must be in [1, 4]")
    assert tree_state(tmp_path) == before


def test_suggest_is_deterministic(tiny_ensemble, tiny_dataset, tmp_path):
    """The same folder and ensemble give the same picks, in the same order, with the same scores."""
    images = tiny_dataset / "real" / "test"
    for name in ("a", "b"):
        assert run("suggest", "--images", images, "--ensemble", tiny_ensemble, "--k", 3, "--out", tmp_path / name,
                   "--quiet").exit_code == 0
    a, b = (json.loads((tmp_path / n / "suggestions.json").read_text()) for n in ("a", "b"))
    assert a == b and len(a["suggestions"]) == 3
