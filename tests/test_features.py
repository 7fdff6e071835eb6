import numpy as np
import pytest
import torch

from datasetddpm.errors import OptionError
from datasetddpm.features import FeatureBank, drop_tiny_regions, upsample_concat
from datasetddpm.generators.base import FeatureSpec
from datasetddpm.generators.diffusion import DiffusionGenerator, decoder_blocks
from datasetddpm.presets import EMBEDDED_SCHEDULER, EMBEDDED_UNET
from tests.conftest import SCHEDULER, tiny_unet


def _images(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_embedded_block_channels_and_resolutions():
    from diffusers import UNet2DModel
    gen = DiffusionGenerator(UNet2DModel(**EMBEDDED_UNET), EMBEDDED_SCHEDULER)
    spec = FeatureSpec(blocks=tuple(range(6)), steps=(50,))
    maps = gen.feature_maps(_images(), spec)
    got = [(m.shape[1], m.shape[2]) for m in maps]
    # ADM numbering: level 8 px (2 blocks, the 2nd upsamples), 16 px (idem), 32 px (2 blocks).
    assert got == [(64, 8), (64, 16), (64, 16), (64, 32), (32, 32), (32, 32)]
    assert gen.feature_channels(spec) == [c for c, _ in got]
    assert [32 // d for d in gen.feature_downscales(spec)] == [s for _, s in got]


def test_block_mapping_follows_adm_numbering_with_attention():
    unet = tiny_unet(layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                     up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8)
    blocks = decoder_blocks(unet)
    assert len(blocks) == 9  # 3 levels x (layers_per_block + 1)
    up = unet.up_blocks
    assert blocks[0].module is up[0].attentions[0]
    assert blocks[2].module is up[0].upsamplers[0]  # last resnet of a non-final level: the upsampler
    assert blocks[4].module is up[1].attentions[1]
    assert blocks[5].module is up[1].upsamplers[0]
    assert blocks[6].module is up[2].resnets[0] and blocks[8].module is up[2].resnets[2]


def test_last_block_feeds_the_output_head():
    unet = tiny_unet(seed=3)
    gen = DiffusionGenerator(unet, SCHEDULER)
    images = _images(1)
    last = gen.feature_maps(images, FeatureSpec((5,), (100,)))[0]
    head = unet.conv_out(unet.conv_act(unet.conv_norm_out(last)))
    x0 = images.float() / 127.5 - 1
    a = gen.train_scheduler.alphas_cumprod[100]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * gen.fixed_noise(FeatureSpec((5,), (100,)), 32, 32)
    direct = unet(xt, torch.tensor([100])).sample
    torch.testing.assert_close(head, direct, rtol=1e-4, atol=1e-5)


def test_features_deterministic_and_noise_shared_across_images(tiny_generator):
    spec = FeatureSpec((1, 4), (50, 250), noise_seed=3)
    images = _images(3)
    a = tiny_generator.feature_maps(images, spec)
    b = tiny_generator.feature_maps(images, spec)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    single = tiny_generator.feature_maps(images[1:2], spec)  # same image alone: same noise, same features
    for x, y in zip(a, single):
        torch.testing.assert_close(x[1:2], y, rtol=1e-4, atol=1e-5)
    other = tiny_generator.feature_maps(images, FeatureSpec((1, 4), (50, 250), noise_seed=4))
    assert not torch.allclose(a[0], other[0])


@pytest.mark.parametrize("spec,option", [(FeatureSpec((6,), (50,)), "--blocks"), (FeatureSpec((-1,), (50,)), "--blocks"),
                                         (FeatureSpec((1,), (1000,)), "--steps"), (FeatureSpec((1,), (-5,)), "--steps")])
def test_bad_block_or_step_is_a_clear_error(tiny_generator, spec, option):
    with pytest.raises(OptionError) as err:
        tiny_generator.feature_maps(_images(1), spec)
    assert str(err.value).startswith(option) and "\n" not in str(err.value)


def test_unsupported_image_size(tiny_generator):
    with pytest.raises(ValueError, match="multiples of 4"):
        tiny_generator.feature_maps(_images(1, size=30), FeatureSpec((1,), (50,)))


def test_gathered_features_equal_materialised(tiny_generator):
    spec = FeatureSpec((0, 1, 3, 5), (50, 400))
    images = _images(3)
    maps = tiny_generator.feature_maps(images, spec)
    full = upsample_concat(maps, (32, 32))  # (3, D, 32, 32)
    bank = FeatureBank(32, 32)
    bank.add(maps, torch.zeros(3, 32, 32))
    bank.finalize()
    g = torch.Generator().manual_seed(0)
    n, y, x = (torch.randint(0, k, (500,), generator=g) for k in (3, 32, 32))
    gathered = bank.gather(n, y, x)
    assert gathered.shape == (500, full.shape[1])
    torch.testing.assert_close(gathered, full[n, :, y, x], rtol=1e-5, atol=1e-6)


def test_tiny_regions_become_ignore_with_threshold_scaled_by_area():
    mask = np.zeros((256, 256), dtype=np.int64)
    mask[:19, 0] = 1  # 19 px: below 20 px of a 256^2 image
    mask[:20, 5] = 2  # 20 px: kept
    out = drop_tiny_regions(mask, 255)
    assert (out[:19, 0] == 255).all() and (out[:20, 5] == 2).all()
    small = np.zeros((64, 64), dtype=np.int64)  # threshold 20 * 64^2 / 256^2 = 1.25 px
    small[0, 0] = 3
    small[5, 5:7] = 4
    out = drop_tiny_regions(small, 0)
    assert out[0, 0] == 0 and (out[5, 5:7] == 4).all()


def test_samplers_are_diffusers_schedulers_and_samples_depend_only_on_their_seed(tiny_generator):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
    assert isinstance(tiny_generator.make_sampler("ddim", 10), DDIMScheduler)
    dpm = tiny_generator.make_sampler("dpm++", 10)
    assert isinstance(dpm, DPMSolverMultistepScheduler) and dpm.config.thresholding  # x0 kept in range
    with pytest.raises(OptionError, match="unknown sampler"):
        tiny_generator.make_sampler("euler", 10)
    for sampler in ("ddpm", "ddim", "dpm++"):
        pair = tiny_generator.sample([5, 9], sampler=sampler, num_steps=3)
        alone = tiny_generator.sample([9], sampler=sampler, num_steps=3)
        assert pair.shape == (2, 3, 32, 32) and pair.dtype == torch.uint8
        assert (pair[1].int() - alone[0].int()).abs().max() <= 1  # CPU kernels differ across batch sizes by rounding
