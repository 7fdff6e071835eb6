import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from datasetddpm.cli.main import get_app

runner = CliRunner()
app = get_app()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def dataset(tiny_dataset, tmp_path):
    """A private copy of the tiny dataset that a test may damage."""
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    return root


def _train_args(data, out, model):
    return ["train-ensemble", "--data", data, "--out", out, "--model", model, "--blocks", "1,3", "--steps", "50,150",
            "--members", "2", "--quiet"]


def test_make_dataset_writes_reference_layout(tmp_path):
    result = run("make-dataset", "--out", tmp_path / "d", "--train", "3", "--test", "2", "--unlabelled", "2")
    assert result.exit_code == 0, result.output
    train = sorted(p.name for p in (tmp_path / "d" / "real" / "train").iterdir())
    assert train == ["train_00000.npy", "train_00000.png", "train_00001.npy", "train_00001.png",
                     "train_00002.npy", "train_00002.png"]
    mask = np.load(tmp_path / "d" / "real" / "train" / "train_00000.npy")
    assert mask.shape == (32, 32) and mask.max() < 7
    assert len(list((tmp_path / "d" / "unlabelled").glob("*.png"))) == 2


def test_train_segment_evaluate_round_trip(dataset, tiny_model_dir, tmp_path):
    ens = tmp_path / "ens"
    result = run(*_train_args(dataset, ens, tiny_model_dir))
    assert result.exit_code == 0, result.output
    meta = json.loads((ens / "ensemble.json").read_text())
    assert meta["ensemble"]["features"]["blocks"] == [1, 3] and meta["ensemble"]["in_dim"] == 2 * (16 + 16)
    assert not list(ens.glob("*.pt")) and not list(ens.glob("*.pkl"))

    masks_out = tmp_path / "masks"
    result = run("segment", "--ensemble", ens, "--images", dataset / "real" / "test", "--out", masks_out, "--quiet")
    assert result.exit_code == 0, result.output
    pngs = sorted(masks_out.glob("*.png"))
    assert len(pngs) == 4
    with Image.open(pngs[0]) as im:
        assert im.mode == "P" and im.size == (32, 32) and np.asarray(im).max() < 7

    result = run("evaluate", "--ensemble", ens, "--data", dataset, "--out", tmp_path / "eval.json", "--quiet")
    assert result.exit_code == 0, result.output
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert set(ev["iou"]) == {"background", "body", "head", "leg", "tail", "eye", "beak"}
    assert ev["miou"] == pytest.approx(np.mean(list(ev["iou"].values())))
    assert ev["cpu"] and ev["machine"] and ev["embedded_weights"]["ddpm"]  # where the number came from
    assert "mIoU" in result.output


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_mask(dataset, tiny_model_dir, tmp_path):
    (dataset / "real" / "train" / "train_00002.npy").unlink()
    result = run(*_train_args(dataset, tmp_path / "ens", tiny_model_dir))
    _one_line_error(result, "train_00002.png", "no mask found")
    assert not (tmp_path / "ens").exists()


def test_mask_size_mismatch(dataset, tiny_model_dir, tmp_path):
    np.save(dataset / "real" / "train" / "train_00001.npy", np.zeros((16, 32), dtype=np.uint8))
    result = run(*_train_args(dataset, tmp_path / "ens", tiny_model_dir))
    _one_line_error(result, "train_00001.npy", "mask is 32x16 but its image is 32x32")
    assert not (tmp_path / "ens").exists()


def test_class_id_out_of_range(dataset, tiny_model_dir, tmp_path):
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[3, 3] = 9
    np.save(dataset / "real" / "train" / "train_00000.npy", mask)
    result = run(*_train_args(dataset, tmp_path / "ens", tiny_model_dir))
    _one_line_error(result, "train_00000.npy", "class id 9")
    assert not (tmp_path / "ens").exists()


def test_ignore_label_is_not_out_of_range(dataset, tiny_model_dir, tmp_path):
    mask = np.load(dataset / "real" / "train" / "train_00000.npy")
    mask[:4] = 255
    np.save(dataset / "real" / "train" / "train_00000.npy", mask)
    assert run(*_train_args(dataset, tmp_path / "ens", tiny_model_dir)).exit_code == 0


def test_unreadable_image(dataset, tiny_model_dir, tmp_path):
    (dataset / "real" / "test" / "test_00001.png").write_bytes(b"not a png at all")
    result = run(*_train_args(dataset, tmp_path / "ens", tiny_model_dir))
    assert result.exit_code == 0, result.output  # training only reads real/train
    result = run("segment", "--ensemble", tmp_path / "ens", "--images", dataset / "real" / "test",
                 "--out", tmp_path / "masks", "--quiet")
    _one_line_error(result, "test_00001.png", "unreadable image")
    assert not (tmp_path / "masks").exists()


def test_truncated_png(dataset, tiny_model_dir, tmp_path):
    path = dataset / "real" / "train" / "train_00003.png"
    path.write_bytes(path.read_bytes()[:60])
    result = run(*_train_args(dataset, tmp_path / "ens", tiny_model_dir))
    _one_line_error(result, "train_00003.png", "unreadable image")


@pytest.mark.parametrize("flag,value,needle", [("--blocks", "1,17", "unknown decoder block 17"),
                                               ("--steps", "50,1000", "step 1000 is outside [0, 1000)"),
                                               ("--blocks", "one", "expected comma-separated integers")])
def test_bad_block_or_step_option(dataset, tiny_model_dir, tmp_path, flag, value, needle):
    args = _train_args(dataset, tmp_path / "ens", tiny_model_dir)
    args[args.index(flag) + 1] = value
    result = run(*args)
    _one_line_error(result, flag, needle)
    assert not (tmp_path / "ens").exists()


def test_png_masks_palette_and_grayscale_are_accepted(dataset, tiny_model_dir, tmp_path):
    train = dataset / "real" / "train"
    for i, p in enumerate(sorted(train.glob("*.npy"))):
        mask = np.load(p).astype(np.uint8)
        im = Image.fromarray(mask, mode="L")
        if i % 2:
            im = im.convert("P")
        im.save(train / f"{p.stem}_mask.png")
        p.unlink()
    assert run(*_train_args(dataset, tmp_path / "ens", tiny_model_dir)).exit_code == 0


def test_missing_model_directory(dataset, tmp_path):
    result = run(*_train_args(dataset, tmp_path / "ens", tmp_path / "nope"))
    _one_line_error(result, "nope", "model directory not found")


def test_checkpoint_that_does_not_match_its_config(tiny_model_dir, dataset, tmp_path):
    bad = tmp_path / "bad_model"
    shutil.copytree(tiny_model_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["unet"]["block_out_channels"] = [8, 16, 32]
    (bad / "config.json").write_text(json.dumps(cfg))
    result = run(*_train_args(dataset, tmp_path / "ens", bad))
    _one_line_error(result, "model.safetensors", "does not match the model config", "shape mismatch")


def test_env_reports_versions_devices_and_the_wait_policy(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    r = runner.invoke(app, ["env"])
    assert r.exit_code == 0, r.output
    fields = dict(line.split(": ", 1) for line in r.output.strip().splitlines())
    import torch
    assert fields["torch"].startswith(torch.__version__.split("+")[0]) and fields["omp_wait_policy"] == "PASSIVE"
    assert int(fields["torch_threads"]) == torch.get_num_threads() and fields["default_device"] in ("cpu", "cuda:0")
    assert fields["cpu"].endswith(", " + torch.backends.cpu.get_cpu_capability())  # rounding depends on it
