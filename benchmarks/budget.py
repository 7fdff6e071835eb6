"""What a run costs on this machine, to budget one: a DDPM training step, DeepLab training steps and
inference at each input scale, direct mode per image, per image side.

`python benchmarks/budget.py [--quick] [--threads N] [--out DIR]` -> results/budget.json. Every figure is
the median of interleaved repeats (the machine may be shared: its load average is recorded), and the
DeepLab-vs-direct speed ratio is taken between figures measured side by side.
"""

from __future__ import annotations

import statistics
import time

import bench_utils


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: allocator and kernel selection
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _ddpm_step(side: int, batch: int):
    import torch
    from diffusers import DDPMScheduler, UNet2DModel
    from datasetddpm.presets import EMBEDDED_SCHEDULER, EMBEDDED_UNET
    torch.manual_seed(0)
    unet = UNet2DModel(**{**EMBEDDED_UNET, "sample_size": side})
    opt = torch.optim.AdamW(unet.parameters(), lr=5e-4)
    sched = DDPMScheduler(**EMBEDDED_SCHEDULER)
    x = torch.randn(batch, 3, side, side)

    def step():
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(x)
        loss = torch.nn.functional.mse_loss(unet(sched.add_noise(x, noise, t), t).sample, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def _deeplab(side: int, scale: int, batch: int):
    import torch
    from datasetddpm.segmenters.model import SegmenterConfig, create_segmenter, predict
    torch.manual_seed(0)
    model = create_segmenter(SegmenterConfig(num_classes=7, encoder="resnet18", input_scale=scale))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8)
    y = torch.randint(0, 7, (batch, side, side))

    def train_step():
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer():
        model.eval()
        predict(model, x, batch_size=batch)
    return train_step, infer


def _direct(side: int, batch: int):
    """Direct mode on `batch` images: the embedded UNet's architecture at this side (random weights cost
    the same), the embedded preset's features (6 blocks x 3 steps, d = 960) and a 10-member ensemble."""
    import numpy as np
    import torch
    from diffusers import UNet2DModel
    from datasetddpm.direct import FeatureSource, segment
    from datasetddpm.ensemble.model import EnsembleConfig, PixelEnsemble
    from datasetddpm.generators.diffusion import DiffusionGenerator
    from datasetddpm.presets import EMBEDDED, EMBEDDED_SCHEDULER, EMBEDDED_UNET
    torch.manual_seed(0)
    gen = DiffusionGenerator(UNet2DModel(**{**EMBEDDED_UNET, "sample_size": side}).eval(), EMBEDDED_SCHEDULER)
    spec = EMBEDDED.features
    cfg = EnsembleConfig(in_dim=sum(gen.feature_channels(spec)), num_classes=7, members=10,
                         features=spec.to_dict())
    ensemble = PixelEnsemble(cfg, seed=0).eval()
    images = np.random.default_rng(0).integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
    source = FeatureSource(gen, spec)
    return lambda: segment(source, ensemble, images, progress=False)


def run(quick: bool, threads: int) -> dict:
    import torch
    torch.set_num_threads(threads)
    repeats, batch = (1, 2) if quick else (5, 8)
    sides = (32,) if quick else (32, 64)
    result = {**bench_utils.header(threads), "repeats": repeats, "batch": batch, "ddpm": {}, "deeplab": {},
              "direct": {}}
    for side in sides:
        result["ddpm"][f"{side}px"] = {"train_step_seconds": round(_median_seconds(_ddpm_step(side, 32 if not quick
                                                                                                    else 2), repeats), 4),
                                       "batch": 32 if not quick else 2}
        direct = _median_seconds(_direct(side, batch), repeats) / batch
        result["direct"][f"{side}px"] = {"seconds_per_image": round(direct, 5)}
        for scale in (1, 2) if quick else (1, 2, 4):
            train_step, infer = _deeplab(side, scale, batch)
            step = _median_seconds(train_step, repeats)
            per_image = _median_seconds(infer, repeats) / batch
            result["deeplab"][f"{side}px x{scale}"] = {
                "train_step_seconds": round(step, 4), "train_seconds_per_1000_pairs_epoch": round(step * 1000 / batch, 1),
                "seconds_per_image": round(per_image, 5), "faster_than_direct": round(direct / per_image, 2)}
    result["peak_rss_mb"] = round(bench_utils.peak_rss_mb(), 1)
    return result


if __name__ == "__main__":
    bench_utils.standalone("budget", run, "tiny sizes, one repeat (a correctness run, not a measurement)")
