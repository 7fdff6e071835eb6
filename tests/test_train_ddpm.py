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
