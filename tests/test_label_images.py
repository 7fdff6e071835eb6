"""`label-images`: the user's own unlabelled real images labelled into the run layout."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import one_line_error, run, tree_state

from datasetddpm.data.images import read_image, read_mask, write_image
from datasetddpm.data.procedural import render_batch


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory):
    """12 procedural images at the tiny model's 32 px, as a user's unlabelled folder (one JPEG among them)."""
    folder = tmp_path_factory.mktemp("unlabelled")
    images, _ = render_batch(range(100, 112), 32)
    for i, image in enumerate(images):
        write_image(folder / f"img_{i:02d}.png", image)
    from PIL import Image
    Image.fromarray(images[3]).save(folder / "img_03.jpg", quality=95)
    (folder / "img_03.png").unlink()
    return folder


def _label(images, ensemble, out, *extra):
    return run("label-images", "--images", images, "--ensemble", ensemble, "--out", out, "--batch-size", 2,
               "--shard-size", 4, "--device", "cpu", "--threads", 1, "--quiet", *extra)


def test_labels_are_direct_mode_on_each_file_and_the_run_finalizes(real_folder, tiny_ensemble, tmp_path):
    out = tmp_path / "run"
    result = _label(real_folder, tiny_ensemble, out)
    assert result.exit_code == 0, result.output
    assert "12 of 12 images labelled" in result.output
    # The labels are what `segment` (direct mode) writes for the same files, and images keep their pixels.
    assert run("segment", "--images", real_folder, "--ensemble", tiny_ensemble, "--out", tmp_path / "seg",
               "--device", "cpu", "--quiet").exit_code == 0
    names = sorted(p.name for p in real_folder.iterdir())
    uncertainty = json.loads((tmp_path / "seg" / "uncertainty.json").read_text())
    for k in range(3):
        side = json.loads((out / f"shards/{k:05d}.json").read_text())["samples"]
        labels = json.loads((out / f"shards/{k:05d}.labels.json").read_text())["samples"]
        for s, lab in zip(side, labels):
            assert s["source"] == names[s["id"]] and s["seed"] is None
            stem = s["source"].rsplit(".", 1)[0]
            mask = read_mask(out / f"shards/{k:05d}/masks/{s['id']:07d}.png")
            assert np.array_equal(mask, read_mask(tmp_path / "seg" / f"{stem}.png"))
            assert lab["uncertainty"] == pytest.approx(uncertainty[stem], abs=1e-6)
            assert np.array_equal(read_image(out / f"shards/{k:05d}/images/{s['id']:07d}.png"),
                                  read_image(real_folder / s["source"]))
    assert run("finalize", "--out", out, "--drop-fraction", 0.25).exit_code == 0
    card = json.loads((out / "dataset_card.json").read_text())
    assert card["counts"] == {"generated": 12, "kept": 9, "dropped": 3} and card["sampler"] == "real-images"
    assert card["images"] == str(real_folder.resolve())
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows] == names
    assert run("verify", out).exit_code == 0


def test_rerun_resumes_to_the_same_bytes_and_a_changed_folder_is_refused(real_folder, tiny_ensemble, tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert _label(real_folder, tiny_ensemble, whole).exit_code == 0
    assert _label(real_folder, tiny_ensemble, resumed).exit_code == 0
    (resumed / "shards/00001.labels.json").unlink()  # as if killed before shard 1's labels were committed
    shutil.rmtree(resumed / "shards/00002")
    (resumed / "shards/00002.json").unlink()
    assert _label(real_folder, tiny_ensemble, resumed).exit_code == 0
    assert tree_state(whole / "shards") == tree_state(resumed / "shards")
    # Another folder content is another run: refused without --overwrite, nothing changed.
    changed = shutil.copytree(real_folder, tmp_path / "changed")
    write_image(changed / "img_00.png", 255 - read_image(changed / "img_00.png"))
    before = tree_state(whole)
    one_line_error(_label(changed, tiny_ensemble, whole), "different config", "--overwrite")
    assert tree_state(whole) == before
    assert _label(changed, tiny_ensemble, whole, "--overwrite").exit_code == 0
    assert tree_state(whole / "shards/00000/images") != before and (whole / "shards/00002.labels.json").is_file()


def test_bad_inputs_are_one_line_and_write_nothing(real_folder, tiny_ensemble, tmp_path):
    out = tmp_path / "run"
    mixed = shutil.copytree(real_folder, tmp_path / "mixed")
    write_image(mixed / "img_05.png", np.zeros((16, 16, 3), np.uint8))
    one_line_error(_label(mixed, tiny_ensemble, out), "img_05.png", "16x16", "32x32")
    broken = shutil.copytree(real_folder, tmp_path / "broken")
    (broken / "img_07.png").write_bytes(b"not a png")
    one_line_error(_label(broken, tiny_ensemble, out), "img_07.png", "unreadable image")
    one_line_error(_label(tmp_path / "nowhere", tiny_ensemble, out), "nowhere", "not found")
    one_line_error(_label(real_folder, tiny_ensemble, out, "--shard-size", 3), "--shard-size")
    assert not out.exists()


def test_a_stylegan2_ensemble_is_refused_with_the_inversion_reason(real_folder, tmp_path):
    from datasetddpm.ensemble.model import EnsembleConfig, PixelEnsemble, save_ensemble
    from datasetddpm.generators.stylegan2 import save_stylegan2
    from datasetddpm.generators.stylegan2_net import StyleGAN2, StyleGAN2Config
    torch.manual_seed(0)
    sg2 = tmp_path / "sg2"
    save_stylegan2(sg2, StyleGAN2(StyleGAN2Config(resolution=32, z_dim=8, w_dim=8, mapping_layers=1,
                                                  channel_base=64, channel_max=8)))
    ens = tmp_path / "ens"
    cfg = EnsembleConfig(in_dim=8, num_classes=2, members=1, features={"blocks": [0], "steps": [0], "noise_seed": 0},
                         model=str(sg2))
    save_ensemble(ens, PixelEnsemble(cfg, seed=0))
    one_line_error(_label(real_folder, ens, tmp_path / "run"), "ensemble.json", "latents", "inversion")
    assert not (tmp_path / "run").exists()


def test_workers_and_tasks_give_the_bytes_of_one_process(real_folder, tiny_ensemble, tmp_path):
    """label-images owns shards like sample: two workers, or two independent tasks, write what one process does."""
    def shards(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "shards").rglob("*")) if p.is_file()}
    assert _label(real_folder, tiny_ensemble, tmp_path / "one").exit_code == 0
    workers = _label(real_folder, tiny_ensemble, tmp_path / "two", "--workers", 2)
    assert workers.exit_code == 0, workers.output
    for index in (1, 0):
        task = _label(real_folder, tiny_ensemble, tmp_path / "tasks", "--task-index", index, "--task-count", 2)
        assert task.exit_code == 0, task.output
    assert shards(tmp_path / "two") == shards(tmp_path / "one") == shards(tmp_path / "tasks")
