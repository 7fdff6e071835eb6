"""The paper's LSUN/FFHQ-256 ADM configuration (random weights): 8448 features per pixel.

Builds the 552.8M-parameter UNet from `adm_unet_config(ADM_FLAG_SETS["lsun_256"])` and extracts the
paper's blocks {5, 6, 7, 8, 12} at t in {50, 150, 250} from one 256-px image (batch 1, no grad; the
early-stop hook skips the decoder after block 12).
"""

import time

import pytest
import torch
from diffusers import UNet2DModel

from datasetddpm.features import FeatureBank
from datasetddpm.generators.adm import ADM_FLAG_SETS, adm_scheduler_config, adm_unet_config
from datasetddpm.generators.base import FeatureSpec
from datasetddpm.generators.diffusion import DiffusionGenerator


@pytest.mark.slow
def test_lsun_256_paper_blocks_give_8448_features_per_pixel():
    # 1-2 min with both cores for the 2.2 TFLOP forwards (slow marker: `make test-slow`).
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _check_lsun_256_features()
    finally:
        torch.set_num_threads(threads)


def _check_lsun_256_features():
    t0 = time.time()
    torch.manual_seed(0)
    flags = ADM_FLAG_SETS["lsun_256"]
    generator = DiffusionGenerator(UNet2DModel(**adm_unet_config(flags)), adm_scheduler_config(flags))
    assert 552e6 < sum(p.numel() for p in generator.unet.parameters()) < 553e6
    spec = FeatureSpec(blocks=(5, 6, 7, 8, 12), steps=(50, 150, 250))
    assert sum(generator.feature_channels(spec)) == 8448

    image = torch.randint(0, 256, (1, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    maps = generator.feature_maps(image, spec)
    expected = [(1024, 32), (512, 32), (512, 32), (512, 64), (256, 128)] * 3
    assert [(m.shape[1], m.shape[-1]) for m in maps] == expected
    assert all(m.shape[0] == 1 and m.shape[-2] == m.shape[-1] and torch.isfinite(m).all() for m in maps)

    bank = FeatureBank(256, 256)
    bank.add(maps)
    bank.finalize()
    pixels = torch.tensor([0, 0, 0]), torch.tensor([0, 100, 255]), torch.tensor([7, 200, 255])
    assert bank.gather(*pixels).shape == (3, 8448)
    print(f"LSUN-256 features: {time.time() - t0:.1f} s")


@pytest.mark.slow
def test_lsun_256_conversion_matches_adm_on_every_decoder_block():
    """The paper's LSUN-256 configuration built with guided-diffusion's own code (every tensor random),
    converted: the predicted noise and all 18 decoder blocks agree within 1e-5 relative error at one t."""
    from test_adm import build_adm, converted, rel_err
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        flags = ADM_FLAG_SETS["lsun_256"]
        adm = build_adm(flags)
        gen = converted(adm, flags)
        assert len(gen.blocks) == len(adm.output_blocks) == 18
        spec = FeatureSpec(tuple(range(18)), (250,), noise_seed=3)
        image = torch.randint(0, 256, (1, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
        ours = gen.feature_maps(image, spec)
        alpha = gen.train_scheduler.alphas_cumprod[250]
        xt = alpha.sqrt() * (image.float() / 127.5 - 1) + (1 - alpha).sqrt() * gen.fixed_noise(spec, 256, 256)
        captured = {}
        hooks = [b.register_forward_hook(lambda _m, _i, out, k=k: captured.__setitem__(k, out))
                 for k, b in enumerate(adm.output_blocks)]
        t = torch.full((1,), 250, dtype=torch.long)
        with torch.no_grad():
            expected, out = adm(xt, t), gen.unet(xt, t).sample
        for h in hooks:
            h.remove()
        errors = [rel_err(ours[k], captured[k]) for k in range(18)]
        print(f"LSUN-256 conversion: max relative error {max(errors):.1e} over 18 decoder blocks, "
              f"{rel_err(out, expected):.1e} on the predicted noise")
        assert expected.abs().mean() > 0.1 and rel_err(out, expected) < 1e-5 and max(errors) < 1e-5
    finally:
        torch.set_num_threads(threads)
