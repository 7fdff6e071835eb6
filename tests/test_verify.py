"""`verify` finds each kind of damage (5/5) and `--repair` restores the original bytes."""

import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import run, tree_state


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tiny_ensemble, tmp_path_factory):
    root = tmp_path_factory.mktemp("verify") / "run"
    args = ["sample", "--out", root, "--n", 8, "--model", tiny_model_dir, "--sampling-steps", 2, "--batch-size", 4,
            "--shard-size", 4, "--ensemble", tiny_ensemble, "--threads", 1, "--quiet"]
    assert run(*args).exit_code == 0
    assert run("finalize", "--out", root).exit_code == 0
    return root


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _reencode_mask(path):
    mask = np.asarray(Image.open(path)).copy()
    mask[mask == mask.max()] = 6 if mask.max() != 6 else 5  # other ids, still a valid palette PNG
    Image.fromarray(mask, mode="P").save(path)


DAMAGE = {
    "flipped byte": (lambda r: _flip_byte(r / "shards/00001/images/0000005.png"), "0000005.png: sha256 differs"),
    "re-encoded mask": (lambda r: _reencode_mask(r / "shards/00000/masks/0000002.png"), "0000002.png: sha256 differs"),
    "truncated file": (lambda r: (r / "shards/00000/images/0000001.png").write_bytes(
        (r / "shards/00000/images/0000001.png").read_bytes()[:40]), "0000001.png: sha256 differs"),
    "missing file": (lambda r: (r / "shards/00001/masks/0000007.png").unlink(), "0000007.png: missing"),
    "stray file": (lambda r: (r / "shards/00000/masks/extra.png").write_bytes(b"x"), "extra.png: stray file"),
}


def test_a_clean_run_verifies(finished):
    r = run("verify", finished)
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith("8 samples, 8 labelled, 2 shards: clean")


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_verify_detects_damage_and_repair_restores_the_bytes(finished, tmp_path, kind):
    damaged = tmp_path / "run"
    shutil.copytree(finished, damaged)
    original = tree_state(damaged)
    damage, message = DAMAGE[kind]
    damage(damaged)
    r = run("verify", damaged)
    assert r.exit_code == 1 and message in r.output and "1 problem(s)" in r.output, r.output
    fixed = run("verify", damaged, "--repair", "--quiet")
    assert fixed.exit_code == 0, fixed.output
    assert tree_state(damaged) == original


def test_finalize_and_train_deeplab_refuse_a_run_that_fails_the_cheap_checks(finished, tiny_dataset, tmp_path):
    import json
    from conftest import one_line_error
    broken = tmp_path / "run"
    shutil.copytree(finished, broken)
    (broken / "shards/00001/images/0000004.png").unlink()
    one_line_error(run("train-deeplab", "--run", broken, "--val", tiny_dataset, "--out", tmp_path / "d", "--quiet"),
                   "file(s) of the index are missing", f"datasetddpm verify {broken}")
    side = broken / "shards/00000.json"
    meta = json.loads(side.read_text())
    meta["config_hash"] = "0" * 16
    side.write_text(json.dumps(meta))
    before = tree_state(broken)
    one_line_error(run("finalize", "--out", broken), "shard 00000 was made with another config", "verify")
    assert tree_state(broken) == before and not (tmp_path / "d").exists()
