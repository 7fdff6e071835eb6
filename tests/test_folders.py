"""Labelled folders: the reference layout, users' PNG masks, and one-line validation errors."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from datasetddpm.cli.main import get_app
from datasetddpm.data.folders import read_labelled, resolve_split
from datasetddpm.data.images import palette_for
from datasetddpm.data.procedural import render
from datasetddpm.errors import InputError
from datasetddpm.generators.diffusion import save_checkpoint

from conftest import SCHEDULER, one_line_error, run, tiny_unet

runner = CliRunner()
app = get_app()
K = 7  # the procedural domain's classes


def write_pair(folder, stem, seed, size=32, image_ext=".png", mask="npy", dtype=np.uint8):
    """One image and its mask in one of the accepted formats; returns the mask array."""
    folder.mkdir(parents=True, exist_ok=True)
    image, m = render(seed, size)
    Image.fromarray(image).save(folder / f"{stem}{image_ext}")
    if mask == "npy":
        np.save(folder / f"{stem}.npy", m.astype(dtype))
    elif mask == "L":
        Image.fromarray(m.astype(np.uint8), mode="L").save(folder / f"{stem}_mask.png")
    elif mask == "P":
        im = Image.fromarray(m.astype(np.uint8), mode="P")
        im.putpalette([c for rgb in palette_for(256) for c in rgb])
        im.save(folder / f"{stem}_mask.png")
    elif mask == "RGB":
        rgb = np.array(palette_for(K), dtype=np.uint8)[m]
        Image.fromarray(rgb, mode="RGB").save(folder / f"{stem}_mask.png")
    return m.astype(np.int64)


def test_reference_layout_with_jpg_npy_and_png_masks(tmp_path):
    root = tmp_path / "bedroom_28"
    train = root / "real" / "train"
    expected = [write_pair(train, "a", 1, image_ext=".jpg", dtype=np.uint16),
                write_pair(train, "b", 2, image_ext=".jpg", dtype=np.int32),
                write_pair(train, "c", 3, mask="P"),
                write_pair(train, "d", 4, mask="L"),
                write_pair(train, "e", 5, image_ext=".jpeg", dtype=np.int64)]
    write_pair(root / "real" / "test", "t", 6)
    write_pair(root / "ddpm", "sample_0", 7)  # annotated generated samples beside real/

    assert resolve_split(root, "train") == train and resolve_split(train, "train") == train
    labelled = read_labelled(resolve_split(root, "train"), K, resolution=32)
    assert [p.name for p in labelled.paths] == ["a.jpg", "b.jpg", "c.png", "d.png", "e.jpeg"]
    assert labelled.images.shape == (5, 32, 32, 3) and labelled.masks.dtype == np.int64
    assert np.array_equal(labelled.masks, np.stack(expected))  # masks are exact whatever the format
    assert len(read_labelled(resolve_split(root, "test"), K)) == 1
    assert len(read_labelled(root / "ddpm", K)) == 1


def test_rgb_masks_map_only_through_a_palette(tmp_path):
    m = write_pair(tmp_path, "a", 1, mask="RGB")
    with pytest.raises(InputError, match="a_mask.png: mask PNG is an RGB colour image.*palette \\(P\\) or grayscale"):
        read_labelled(tmp_path, K)
    assert np.array_equal(read_labelled(tmp_path, K, palette=palette_for(K)).masks[0], m)
    with pytest.raises(InputError, match=r"a_mask.png: colour \(\d+, \d+, \d+\) at pixel \(\d+, \d+\) is not in the palette"):
        read_labelled(tmp_path, K, palette=[(0, 0, 0)])


# ---- every validation error: one line naming the file, exit 2, nothing written ----------------------------

def _damage_missing_mask(d):
    (d / "train_00002.npy").unlink()
    return "train_00002.png", "no mask found"


def _damage_mask_size(d):
    np.save(d / "train_00001.npy", np.zeros((16, 32), np.uint8))
    return "train_00001.npy", "mask is 32x16 but its image is 32x32"


def _damage_class_id(d):
    m = np.load(d / "train_00000.npy")
    m[5, 5] = 7
    np.save(d / "train_00000.npy", m)
    return "train_00000.npy", "class id 7 is out of range"


def _damage_corrupt_image(d):
    (d / "train_00003.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return "train_00003.png", "unreadable image"


def _damage_truncated_jpg(d):
    (d / "train_00003.png").unlink()
    Image.fromarray(render(9, 32)[0]).save(d / "train_00003.jpg")
    (d / "train_00003.jpg").write_bytes((d / "train_00003.jpg").read_bytes()[:300])
    return "train_00003.jpg", "unreadable image"


def _damage_float_npy(d):
    np.save(d / "train_00001.npy", np.load(d / "train_00001.npy").astype(np.float32))
    return "train_00001.npy", "2-D integer array"


def _damage_pickle_npy(d):
    np.save(d / "train_00001.npy", np.array([{"label": 1}], dtype=object), allow_pickle=True)
    return "train_00001.npy", "need unpickling (refused for safety)"


def _damage_not_npy(d):
    (d / "train_00001.npy").write_bytes(b"garbage")
    return "train_00001.npy", "not a .npy array file"


def _damage_rgb_png_mask(d):
    (d / "train_00002.npy").unlink()
    Image.new("RGB", (32, 32), (128, 0, 0)).save(d / "train_00002_mask.png")
    return "train_00002_mask.png", "RGB colour image"


def _damage_other_size(d):
    for p in d.glob("*.png"):
        Image.fromarray(render(1, 64)[0]).save(p)
    for p in d.glob("*.npy"):
        np.save(p, np.zeros((64, 64), np.uint8))
    return "train_00000.png", "expects 32x32"


def _damage_empty(d):
    for p in d.iterdir():
        p.unlink()
    return "train", "no .png/.jpg images found"


DAMAGES = [_damage_missing_mask, _damage_mask_size, _damage_class_id, _damage_corrupt_image, _damage_truncated_jpg,
           _damage_float_npy, _damage_pickle_npy, _damage_not_npy, _damage_rgb_png_mask, _damage_other_size,
           _damage_empty]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__[8:])
def test_validation_errors_name_the_file_before_the_model_loads(damage, tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    filename, message = damage(data / "real" / "train")
    # The model folder does not exist: the data error must come first, before any heavy work.
    result = run("train-ensemble", "--data", data, "--out", tmp_path / "ens", "--model", tmp_path / "no_model",
                 "--resolution", "32", "--members", "2", "--quiet")
    one_line_error(result, filename, message)
    assert not (tmp_path / "ens").exists()


# ---- custom data at the user's own resolution (docs/custom_data.md) ----------------------------------------

def _custom_dataset(root, size=48):
    for split, n, seed0 in (("train", 4, 100), ("test", 2, 200)):
        for i in range(n):
            # Three classes: the critter's body parts merged into one "animal" class, its eye kept apart.
            image, m = render(seed0 + i, size)
            m = np.where(m == 0, 0, np.where(m == 5, 2, 1)).astype(np.uint8)
            d = root / "real" / split
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(d / f"{i:03d}.png")
            Image.fromarray(m, mode="L").save(d / f"{i:03d}_mask.png")
    return root


def test_custom_data_at_its_own_resolution(tmp_path):
    data = _custom_dataset(tmp_path / "mine")
    model48 = tmp_path / "ddpm48"
    save_checkpoint(model48, tiny_unet(sample_size=48), SCHEDULER)
    ens = tmp_path / "ens"
    args = ["train-ensemble", "--data", data, "--out", ens, "--blocks", "1,3", "--steps", "50,150",
            "--members", "2", "--quiet"]
    # Class count is validated against the masks, and the image size against the model's own resolution.
    one_line_error(run(*args, "--model", model48, "--num-classes", "2"), "_mask.png", "class id 2 is out of range")
    one_line_error(run(*args, "--model", tmp_path / "no_model", "--num-classes", "3", "--resolution", "64"),
                   "000.png", "expects 64x64")
    model32 = tmp_path / "ddpm32"
    save_checkpoint(model32, tiny_unet(), SCHEDULER)
    one_line_error(run(*args, "--model", model32, "--class-names", "ground,animal,eye"),
                   "000.png", "model was trained at 32x32")
    assert not ens.exists()

    result = run(*args, "--model", model48, "--class-names", "ground,animal,eye")
    assert result.exit_code == 0, result.output
    meta = json.loads((ens / "ensemble.json").read_text())["ensemble"]
    assert meta["class_names"] == ["ground", "animal", "eye"] and meta["resolution"] == 48
    result = run("evaluate", "--ensemble", ens, "--data", data, "--out", tmp_path / "eval.json", "--quiet")
    assert result.exit_code == 0, result.output
    assert list(json.loads((tmp_path / "eval.json").read_text())["iou"]) == ["ground", "animal", "eye"]
