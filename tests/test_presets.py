import json

import numpy as np
import pytest
from PIL import Image
from datasetddpm.data.procedural import render
from datasetddpm.ensemble.model import EnsembleConfig, PixelEnsemble
from datasetddpm.errors import OptionError
from datasetddpm.presets import EMBEDDED, PRESETS, get_preset
from datasetddpm.workflows import resolve_problem
from conftest import one_line_error, run

# Paper Table 1 / appendix E.1: classes the mIoU averages over, and the labelled real splits.
PAPER = {"bedroom_28": (28, (40, 20)), "ffhq_34": (34, (20, 20)), "cat_15": (15, (30, 20)),
         "horse_21": (21, (30, 30)), "celeba_19": (19, (20, 500)), "ade_bedroom_30": (30, (50, 650))}
# Paper appendix C: hidden layers of 128 and 32 for datasets with fewer than 30 classes, 256 and 128 for others.
PAPER_MLP = {"bedroom_28": (128, 32), "ffhq_34": (256, 128), "cat_15": (128, 32), "horse_21": (128, 32),
             "celeba_19": (128, 32), "ade_bedroom_30": (256, 128)}


@pytest.mark.parametrize("name", PAPER)
def test_paper_preset_classes_and_settings(name):
    p = get_preset(name)
    count, split = PAPER[name]
    assert len(p.evaluated_classes) == count == int(name.rsplit("_", 1)[1])
    assert len(set(p.class_names)) == p.num_classes
    assert p.split == split and p.resolution == 256 and p.model is None
    assert p.features.blocks == (5, 6, 7, 8, 12) and p.features.steps == (50, 150, 250)
    # The paper's MLP sizes (appendix C, per dataset), stated by the preset and built by the ensemble for its classes.
    assert p.mlp_hidden == PAPER_MLP[name]
    ensemble = PixelEnsemble(EnsembleConfig(in_dim=4, num_classes=p.num_classes, members=1))
    assert (ensemble.fc1.weight.shape[-1], ensemble.fc2.weight.shape[-1]) == PAPER_MLP[name]
    assert ensemble.fc3.weight.shape[-1] == p.num_classes
    assert p.adm_flags == ("ffhq_256" if name in ("ffhq_34", "celeba_19") else "lsun_256")
    assert (p.deeplab.encoder, p.deeplab.input_scale, p.deeplab.epochs, p.deeplab.batch_size) == ("resnet101", 1, 20, 8)
    # Every class gets its own colour, none of them the ignore label's white.
    assert len(set(p.palette)) == p.num_classes and (255, 255, 255) not in p.palette


def test_ignore_labels_follow_the_reference_configs():
    bedroom = get_preset("bedroom_28")
    assert bedroom.ignore_label == 0 and bedroom.num_classes == 29
    assert bedroom.class_names[:3] == ("unlabelled", "bed", "footboard") and bedroom.class_names[28] == "table staff"
    assert "unlabelled" not in bedroom.evaluated_classes
    for name in PAPER:
        if name != "bedroom_28":
            p = get_preset(name)
            assert p.ignore_label == 255 and p.num_classes == len(p.evaluated_classes)


@pytest.mark.parametrize("name,index,expected", [
    ("ffhq_34", 0, "background"), ("ffhq_34", 27, "ala of nose"), ("ffhq_34", 33, "wrinkles"),
    ("cat_15", 14, "neck"), ("horse_21", 20, "leg protection"), ("celeba_19", 3, "eye_g"),
    ("celeba_19", 18, "u_lip"), ("ade_bedroom_30", 0, "wall"), ("ade_bedroom_30", 29, "television")])
def test_class_names_in_paper_order(name, index, expected):
    assert get_preset(name).class_names[index] == expected


def test_embedded_preset_is_unchanged():
    assert PRESETS["embedded"] is EMBEDDED
    assert EMBEDDED.num_classes == 7 and EMBEDDED.resolution == 32 and EMBEDDED.model == "embedded"
    assert EMBEDDED.features.blocks == (0, 1, 2, 3, 4, 5) and EMBEDDED.features.steps == (10, 50, 100)
    problem = resolve_problem("embedded")
    assert problem.model == "embedded" and problem.resolution == 32 and problem.ignore_label == 255


def test_resolve_problem_with_a_paper_preset():
    with pytest.raises(OptionError, match="adm:lsun_256:<lsun_cat.pt>"):
        resolve_problem("cat_15")
    problem = resolve_problem("cat_15", model="adm:lsun_256:lsun_cat.pt")
    assert problem.num_classes == 15 and problem.ignore_label == 255 and problem.resolution == 256
    assert problem.spec.blocks == (5, 6, 7, 8, 12) and problem.model == "adm:lsun_256:lsun_cat.pt"
    small = resolve_problem("cat_15", model="m", blocks=(1,), steps=(50,), resolution=64)
    assert small.resolution == 64 and small.spec.blocks == (1,) and small.class_names[1] == "back"
    assert resolve_problem("embedded", model="mine").resolution is None  # a user's model: its own size
    assert resolve_problem("embedded", model="mine", class_names=("a", "b")).num_classes == 2
    with pytest.raises(OptionError, match="3 names but --num-classes 2"):
        resolve_problem("embedded", model="mine", class_names=("a", "b", "c"), num_classes=2)


def test_presets_command_lists_and_shows():
    result = run("presets")
    assert result.exit_code == 0, result.output
    for name in PRESETS:
        assert name in result.output
    result = run("presets", "bedroom_28")
    assert result.exit_code == 0, result.output
    assert "ignore_label: 0" in result.output and "adm:lsun_256:<lsun_bedroom.pt>" in result.output
    assert "unlabelled (ignored)" in result.output and "table staff" in result.output
    one_line_error(run("presets", "bedroom_29"), "--preset", "unknown preset 'bedroom_29'")


def test_paper_preset_needs_a_model(tmp_path):
    result = run("train-ensemble", "--preset", "horse_21", "--data", tmp_path, "--out", tmp_path / "ens")
    one_line_error(result, "--model", "adm:lsun_256:<lsun_horse.pt>")


def _bedroom_style_dataset(root, n_train=4, n_test=3, size=32):
    """Procedural critters relabelled the bedroom_28 way: background -> 0 (unlabelled), parts -> ids 1..6.
    Train images are JPEG as in the reference datasets."""
    for split, n, seed0 in (("train", n_train, 10), ("test", n_test, 50)):
        folder = root / "real" / split
        folder.mkdir(parents=True)
        for i in range(n):
            image, mask = render(seed0 + i, size)
            Image.fromarray(image).save(folder / f"{i:03d}.jpg" if split == "train" else folder / f"{i:03d}.png")
            np.save(folder / f"{i:03d}.npy", mask.astype(np.uint8))  # 0 = background = unlabelled
    return root


def test_bedroom_style_dataset_trains_and_evaluates_skipping_label_0(tiny_model_dir, tmp_path):
    data = _bedroom_style_dataset(tmp_path / "bedroom")
    ens = tmp_path / "ens"
    args = ["train-ensemble", "--preset", "bedroom_28", "--data", data, "--out", ens, "--model", tiny_model_dir,
            "--blocks", "1,3", "--steps", "50,150", "--members", "2", "--quiet"]
    # The preset expects 256-px data: 32-px images are refused before the model loads ...
    one_line_error(run(*args), "000.jpg", "expects 256x256", "--resolution")
    # ... unless the resolution is overridden.
    result = run(*args, "--resolution", "32")
    assert result.exit_code == 0, result.output
    meta = json.loads((ens / "ensemble.json").read_text())["ensemble"]
    assert meta["ignore_label"] == 0 and meta["num_classes"] == 29
    assert tuple(meta["class_names"]) == get_preset("bedroom_28").class_names

    result = run("evaluate", "--ensemble", ens, "--data", data, "--out", tmp_path / "eval.json", "--quiet")
    assert result.exit_code == 0, result.output
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert list(ev["iou"]) == list(get_preset("bedroom_28").evaluated_classes)  # 28 classes, no "unlabelled"
    assert ev["miou"] == pytest.approx(np.mean(list(ev["iou"].values())))
    confusion = np.array(ev["confusion"])
    assert confusion.shape == (29, 29) and confusion[0].sum() == 0  # ground-truth 0 pixels are not scored
    labelled = sum((np.load(p) != 0).sum() for p in (data / "real" / "test").glob("*.npy"))
    assert confusion.sum() == labelled > 0
