import json
import shutil

import pytest
import torch

from datasetddpm.errors import DatasetDDPMError
from datasetddpm.generators.loading import load_generator
from datasetddpm.generators.train_ddpm import DDPMTrainConfig, train_ddpm
from datasetddpm.io import load_tensors

TINY = dict(block_out_channels=[8, 16, 16], norm_num_groups=4)


def _cfg(steps):
    return DDPMTrainConfig(pool_size=12, steps=steps, batch_size=4, checkpoint_every=2, unet=TINY, warmup=2)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    train_ddpm(tmp_path / "full", _cfg(6), progress=False, log=lambda *_: None)
    train_ddpm(tmp_path / "split", _cfg(4), progress=False, log=lambda *_: None)  # "killed" after step 4
    train_ddpm(tmp_path / "split", _cfg(6), progress=False, log=lambda *_: None)  # rerun: resumes
    a = load_tensors(tmp_path / "full" / "ema" / "model.safetensors")
    b = load_tensors(tmp_path / "split" / "ema" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    gen = load_generator(tmp_path / "full" / "ema")
    assert gen.resolution == 32 and list(gen.unet.config.block_out_channels) == [8, 16, 16]


def test_changed_config_refuses_to_resume(tmp_path):
    train_ddpm(tmp_path / "run", _cfg(2), progress=False)
    changed = _cfg(4)
    changed.lr = 1e-3
    with pytest.raises(DatasetDDPMError, match="different config"):
        train_ddpm(tmp_path / "run", changed, progress=False)
    train_ddpm(tmp_path / "run", changed, progress=False, overwrite=True)


def test_image_folder_of_wrong_size_is_refused(tmp_path):
    from datasetddpm.data.images import write_image
    import numpy as np
    write_image(tmp_path / "imgs" / "a.png", np.zeros((32, 32, 3), np.uint8))
    write_image(tmp_path / "imgs" / "b.png", np.zeros((40, 32, 3), np.uint8))
    cfg = _cfg(2)
    cfg.data = str(tmp_path / "imgs")
    with pytest.raises(DatasetDDPMError, match="b.png: image is 32x40, expected 32x32"):
        train_ddpm(tmp_path / "run", cfg, progress=False)


def _init_cfg(init, steps=2, **kw):
    return DDPMTrainConfig(pool_size=12, steps=steps, batch_size=4, checkpoint_every=2, warmup=2, init_from=str(init),
                           **kw)


def test_init_from_starts_model_and_ema_at_the_given_weights(tmp_path):
    base = _cfg(2)
    base.seed = 3
    train_ddpm(tmp_path / "base", base, progress=False, log=lambda *_: None)
    start = load_tensors(tmp_path / "base" / "ema" / "model.safetensors")
    # A learning rate too small to move any weight: the fine-tuned EMA equals its start, so both the model
    # and the EMA began there (a fresh init would be far from it).
    train_ddpm(tmp_path / "tuned", _init_cfg(tmp_path / "base" / "ema", lr=1e-30), progress=False, log=lambda *_: None)
    tuned = load_tensors(tmp_path / "tuned" / "ema" / "model.safetensors")
    assert tuned.keys() == start.keys()
    assert max((tuned[k] - start[k]).abs().max().item() for k in start) < 1e-6
    gen = load_generator(tmp_path / "tuned" / "ema")
    assert list(gen.unet.config.block_out_channels) == [8, 16, 16]  # the shape came from the start, not defaults
    control = _cfg(2)  # the same run without --init-from keeps its own random init, far from the start
    control.lr = 1e-30
    train_ddpm(tmp_path / "control", control, progress=False, log=lambda *_: None)
    fresh = load_tensors(tmp_path / "control" / "ema" / "model.safetensors")
    assert max((fresh[k] - start[k]).abs().max().item() for k in start) > 0.01


def test_saved_model_samples_with_trailing_spacing_unless_its_start_names_one(tmp_path):
    """A new model is written with trailing spacing (DDIM starts at t = 999); a fine-tuned one keeps its
    start's spacing, whichever it is."""
    train_ddpm(tmp_path / "new", _cfg(2), progress=False, log=lambda *_: None)
    new = load_generator(tmp_path / "new" / "ema")
    assert new.scheduler_config["timestep_spacing"] == "trailing"
    assert new.visited_steps("ddim", 4) == [249, 499, 749, 999]
    leading = tmp_path / "leading"
    shutil.copytree(tmp_path / "new" / "ema", leading)
    config = json.loads((leading / "config.json").read_text())
    config["scheduler"]["timestep_spacing"] = "leading"
    (leading / "config.json").write_text(json.dumps(config))
    train_ddpm(tmp_path / "tuned", _init_cfg(leading), progress=False, log=lambda *_: None)
    tuned = load_generator(tmp_path / "tuned" / "ema")
    assert tuned.scheduler_config["timestep_spacing"] == "leading" and tuned.visited_steps("ddim", 4) == [0, 250, 500, 750]


def test_init_from_resumes_and_refuses_changed_start(tmp_path):
    for name, seed in (("a", 0), ("b", 1)):
        cfg = _cfg(2)
        cfg.seed = seed
        train_ddpm(tmp_path / name, cfg, progress=False, log=lambda *_: None)
    train_ddpm(tmp_path / "full", _init_cfg(tmp_path / "a" / "ema", 4), progress=False, log=lambda *_: None)
    train_ddpm(tmp_path / "split", _init_cfg(tmp_path / "a" / "ema", 2), progress=False, log=lambda *_: None)
    train_ddpm(tmp_path / "split", _init_cfg(tmp_path / "a" / "ema", 4), progress=False, log=lambda *_: None)
    a = load_tensors(tmp_path / "full" / "ema" / "model.safetensors")
    b = load_tensors(tmp_path / "split" / "ema" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(DatasetDDPMError, match="different config"):  # other starting weights: not a resume
        train_ddpm(tmp_path / "split", _init_cfg(tmp_path / "b" / "ema", 6), progress=False)


def test_init_from_refuses_shape_options_and_other_resolution(tmp_path):
    train_ddpm(tmp_path / "base", _cfg(2), progress=False, log=lambda *_: None)
    init = tmp_path / "base" / "ema"
    with pytest.raises(DatasetDDPMError, match="--channels: the UNet's shape comes from --init-from"):
        train_ddpm(tmp_path / "t", _init_cfg(init, unet={"block_out_channels": [8, 16, 16]}), progress=False)
    with pytest.raises(DatasetDDPMError, match="--resolution: --init-from .* is a 32 px model, got --resolution 64"):
        train_ddpm(tmp_path / "t", _init_cfg(init, resolution=64), progress=False)
    config = json.loads((init / "config.json").read_text())
    config["scheduler"]["prediction_type"] = "v_prediction"
    vpred = tmp_path / "vpred"
    shutil.copytree(init, vpred)
    (vpred / "config.json").write_text(json.dumps(config))
    with pytest.raises(DatasetDDPMError, match="--init-from: .* predicts 'v_prediction'; train-ddpm fine-tunes"):
        train_ddpm(tmp_path / "t", _init_cfg(vpred), progress=False)
    with pytest.raises(DatasetDDPMError, match="model directory not found"):
        train_ddpm(tmp_path / "t", _init_cfg(tmp_path / "missing"), progress=False)
    assert not (tmp_path / "t").exists()  # refused before anything is written
