import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest
import torch
from diffusers import UNet2DModel

from datasetddpm.generators.diffusion import DiffusionGenerator, save_checkpoint

# Tests use tiny tensors: one thread avoids oversubscription stalls on a busy 2-core machine.
torch.set_num_threads(1)

TINY_UNET = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(8, 16, 16), layers_per_block=1,
                 down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3, norm_num_groups=4)
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear")


def tiny_unet(seed: int = 0, **overrides) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**{**TINY_UNET, **overrides})


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random diffusion checkpoint in the toolkit's format."""
    directory = tmp_path_factory.mktemp("tiny_model")
    save_checkpoint(directory, tiny_unet(), SCHEDULER)
    return directory


@pytest.fixture()
def tiny_generator():
    return DiffusionGenerator(tiny_unet(), SCHEDULER)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """The embedded domain in the reference layout: 4 train + 4 test images at 32 px."""
    from datasetddpm.data.folders import write_procedural_dataset
    root = tmp_path_factory.mktemp("data")
    write_procedural_dataset(root, train=4, test=4)
    return root
