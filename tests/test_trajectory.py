"""Trajectory features: labels from the sampler's own UNet activations (`sample --trajectory-features`)."""

import json

import numpy as np
import torch

from conftest import assert_study_outputs, one_line_error, run, tree_state
from datasetddpm.generators.base import FeatureSpec


def test_captured_maps_are_the_sampling_unets_activations(tiny_generator):
    """Same images as `sample`; the maps at the first visited step are the UNet's on x_T (the seeded noise)."""
    g = tiny_generator
    spec = FeatureSpec((0, 2), (500, 0))
    images, maps = g.sample_with_features([3, 4], spec, sampler="ddim", num_steps=2)
    assert torch.equal(images, g.sample([3, 4], sampler="ddim", num_steps=2))
    assert [m.shape[1:] for m in maps] == [m.shape[1:] for m in g.feature_maps(images, spec)]
    x_T = torch.stack([torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(s)) for s in (3, 4)])
    seen = {}
    hooks = [g.blocks[b].module.register_forward_hook(lambda _m, _i, out, b=b: seen.setdefault(b, out)) for b in (0, 2)]
    with torch.no_grad():
        g.unet(x_T, torch.tensor([500, 500]))
    for h in hooks:
        h.remove()
    assert torch.allclose(maps[0], seen[0], atol=1e-6) and torch.allclose(maps[1], seen[2], atol=1e-6)
    assert not torch.allclose(maps[2], maps[0])  # step 0's maps are of another x_t than step 500's
    assert g.visited_steps("ddim", 2) == [0, 500]


def _args(out, model, ensemble, *extra):
    return ("sample", "--out", out, "--n", 4, "--model", model, "--sampling-steps", 20, "--batch-size", 2,
            "--shard-size", 2, "--ensemble", ensemble, "--threads", 1, "--quiet", *extra)


def test_trajectory_run_is_deterministic_resumable_and_marked(tiny_model_dir, tiny_ensemble, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(*_args(a, tiny_model_dir, tiny_ensemble, "--trajectory-features")).exit_code == 0
    assert run(*_args(b, tiny_model_dir, tiny_ensemble, "--trajectory-features")).exit_code == 0
    assert tree_state(a / "shards") == tree_state(b / "shards")  # (the preview names its run folder)
    manifest = json.loads((a / "labels_manifest.json").read_text())
    assert manifest["config"]["features"] == "trajectory" and manifest["hash"].endswith("-trajectory")
    # Same images as a plain run; masks from other features, in the same layout.
    plain = tmp_path / "plain"
    assert run(*_args(plain, tiny_model_dir, tiny_ensemble)).exit_code == 0
    images = sorted(p.relative_to(plain) for p in (plain / "shards").glob("*/images/*.png"))
    masks = sorted(p.relative_to(plain) for p in (plain / "shards").glob("*/masks/*.png"))
    assert len(images) == len(masks) == 4
    assert all((a / p).read_bytes() == (plain / p).read_bytes() for p in images)
    assert sorted(p.relative_to(a) for p in (a / "shards").glob("*/masks/*.png")) == masks
    # A shard sampled but not labelled (labels lost) is sampled again, to the same bytes.
    (b / "shards" / "00001.labels.json").unlink()
    assert run(*_args(b, tiny_model_dir, tiny_ensemble, "--trajectory-features")).exit_code == 0
    assert tree_state(a / "shards") == tree_state(b / "shards")
    # `label` with standard features is another labelling: refused without --overwrite.
    r = run("label", "--out", a, "--ensemble", tiny_ensemble, "--threads", 1, "--quiet")
    assert r.exit_code != 0 and "different config" in r.output


def test_trajectory_errors_write_nothing(tiny_model_dir, tiny_ensemble, tmp_path):
    out = tmp_path / "r"
    one_line_error(run("sample", "--out", out, "--n", 2, "--model", tiny_model_dir, "--sampling-steps", 2,
                       "--batch-size", 2, "--shard-size", 2, "--ensemble", tiny_ensemble, "--trajectory-features"),
                   "--trajectory-features", "[50]", "visits 0, 500", "--steps 0")
    one_line_error(run("sample", "--out", out, "--n", 2, "--model", tiny_model_dir, "--trajectory-features"),
                   "--trajectory-features", "needs --ensemble")
    assert not out.exists()


def test_trajectory_dry_run_counts_no_feature_pass(tiny_model_dir, tiny_ensemble, tmp_path):
    r = run(*_args(tmp_path / "d", tiny_model_dir, tiny_ensemble, "--trajectory-features", "--dry-run"))
    assert r.exit_code == 0 and "no extra network evaluation" in r.output
    assert not (tmp_path / "d").exists()


def test_repair_of_a_trajectory_run_restores_the_bytes(tiny_model_dir, tiny_ensemble, tmp_path):
    out = tmp_path / "r"
    assert run(*_args(out, tiny_model_dir, tiny_ensemble, "--trajectory-features")).exit_code == 0
    assert run("finalize", "--out", out).exit_code == 0
    assert json.loads((out / "dataset_card.json").read_text())["label_features"] == "trajectory"
    before = tree_state(out)
    (out / "shards" / "00001" / "masks" / "0000003.png").write_bytes(b"broken")
    r = run("verify", str(out), "--repair", "--quiet")
    assert r.exit_code == 0, r.output
    assert tree_state(out) == before


def test_trajectory_study_quick(tiny_model_dir, tiny_dataset, tmp_path):
    """Every arm runs on the same samples; the reported numbers are those of the saved confusions."""
    from datasetddpm.studies.stats import miou_of
    from datasetddpm.studies.trajectory import STANDARD, TRAJECTORY, VISITED
    out = tmp_path / "t"
    r = run("study", "trajectory", "--data", tiny_dataset, "--out", out, "--model", tiny_model_dir, "--quick",
            "--quiet", "--threads", 1)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "study.json").read_text())
    assert list(report["arms"]) == [STANDARD, VISITED, TRAJECTORY]
    assert report["arms"][STANDARD]["steps"] == [10, 50, 100] and report["arms"][VISITED]["steps"] == [0, 50, 100]
    assert report["arms"][TRAJECTORY]["feature_passes_per_sample"] == 0
    for arm, name in ((STANDARD, "standard"), (VISITED, "standard-visited-steps"), (TRAJECTORY, "trajectory")):
        cms = np.load(out / "seed-0" / f"confusions-{name}.npy")
        assert cms.shape == (4, 7, 7) and abs(report["arms"][arm]["label_miou_mean"] - miou_of(cms)) < 1e-12
    # The three labellings are of the same images (the trajectory run sampled them again).
    runs = [out / "seed-0" / f"run-{n}" for n in ("standard", "trajectory")]
    assert tree_state(runs[0] / "shards" / "00000" / "images") == tree_state(runs[1] / "shards" / "00000" / "images")
    d = report["arms"][TRAJECTORY]["vs_visited"]["difference"]
    assert abs(d - (report["arms"][TRAJECTORY]["label_miou_mean"] - report["arms"][VISITED]["label_miou_mean"])) < 1e-12
    assert "| trajectory | 0, 50, 100 | 0 |" in (out / "study.md").read_text()
    assert_study_outputs(out, "trajectory")
