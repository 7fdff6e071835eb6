"""`check-samples`: sample the model and score the samples with the oracle."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..generators.loading import load_generator
from ..io import check_output_dir, write_json
from ..segmenters.model import load_segmenter


def check_samples_run(out: str | Path, *, model: str = "embedded", oracle: str = "embedded", n: int = 200,
                      sampler: str = "ddim", sampling_steps: int = 50, seed: int = 0,
                      device: str | torch.device = "cpu", progress: bool = True) -> dict:
    """`datasetddpm check-samples`: the oracle's numbers on a model's samples vs on real images, with a
    grid, in `out/sample_report.json` (with its command, date and machine)."""
    from ..data.oracle import check_samples
    from ..environment import provenance
    from ..paths import EMBEDDED_ORACLE_DIR
    generator = load_generator(model, device)
    generator.make_sampler(sampler, sampling_steps)
    segmenter = load_segmenter(EMBEDDED_ORACLE_DIR if oracle == "embedded" else oracle).to(device)
    check_output_dir(out)
    report = check_samples(generator, segmenter, out, n=n, sampler=sampler, num_steps=sampling_steps, seed=seed,
                           progress=progress)
    report.update(provenance())
    write_json(Path(out) / "sample_report.json", report)
    return report
