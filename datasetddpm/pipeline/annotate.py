"""The paper's labeller protocol: export a few generated samples for annotators (DatasetGAN style).

`export_for_annotation` writes K samples in the labelled-folder layout (`<stem>.png`, seeds in
`samples.json`); annotators add `<stem>.npy` or `<stem>_mask.png`. On the embedded domain the
oracle segmenter plays the annotator (`oracle=`), so the paper's protocol runs end to end here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.images import write_image
from ..io import atomic_path, write_json
from .config import sample_seed

ANNOTATION_SEED_OFFSET = 7_777  # annotation samples use their own run seed: never the same images as the run


def export_for_annotation(generator, k: int, out_dir: str | Path, *, seed: int = 0, sampler: str = "ddim",
                          num_steps: int = 50, batch_size: int = 50, oracle=None) -> list[Path]:
    out = Path(out_dir)
    seeds = [sample_seed(seed + ANNOTATION_SEED_OFFSET, i) for i in range(k)]
    images = torch.cat([generator.sample(seeds[i:i + batch_size], sampler=sampler, num_steps=num_steps)
                        for i in range(0, k, batch_size)])
    masks = None
    if oracle is not None:
        from ..segmenters.model import predict
        masks = predict(oracle, images).numpy().astype(np.uint8)
    paths = []
    for i, im in enumerate(images.permute(0, 2, 3, 1).numpy()):
        path = out / f"sample_{i:05d}.png"
        write_image(path, im)
        if masks is not None:
            with atomic_path(path.with_suffix(".npy")) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, masks[i])
        paths.append(path)
    write_json(out / "samples.json", {"model": generator.source, "sampler": sampler, "sampling_steps": num_steps,
                                      "seeds": seeds, "annotated_by": "oracle" if oracle is not None else None})
    return paths
