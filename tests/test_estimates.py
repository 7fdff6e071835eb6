"""`--dry-run` estimates: the arithmetic that scales timed steps to the run (steps per epoch with the real
share, batches per worker, the sampling scale-up from a few steps), the printed total the benchmark reads
back, and dry runs that write nothing. No timings: the timer is replaced where the scaling is checked.
benchmarks/estimates.py compares estimates with real runs."""

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from datasetddpm import plans
from datasetddpm.pipeline.config import SampleConfig
from datasetddpm.segmenters.train_deeplab import DeepLabTrainConfig
from conftest import finished_run, run, tree_state

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_steps_per_epoch_count_the_real_share():
    """Issue 38: 1001 kept pairs at batch 8 are 125 steps (the old plan said ceil = 126); with 20 real images
    at 10 % they are repeated round(0.1 / 0.9 x 1001 / 20) = 6 times: 1001 + 120 = 1121 samples, 140 steps."""
    cfg = DeepLabTrainConfig(batch_size=8)
    assert plans.deeplab_steps_per_epoch(1001, 0, cfg) == 125
    mixed = replace(cfg, real="/data", real_fraction=0.1)
    assert plans.deeplab_steps_per_epoch(1001, 20, mixed) == 140
    assert plans.deeplab_steps_per_epoch(1001, 20, mixed, world=2) == 70  # 560 each, partial batches dropped
    assert plans.deeplab_steps_per_epoch(1001, 20, cfg) == 125  # real images read but --real not set: none mixed


def test_busiest_worker_makes_its_shards_in_full_batches():
    """1112 samples in shards of 500 at batch 50: shards of 500, 500, 112 are 10, 10 and 3 batches (the last
    one filled up); two workers take shards {0, 2} and {1}."""
    cfg = SampleConfig(model="embedded", n=1112, batch_size=50, shard_size=500)
    assert plans.busiest_worker(cfg, [0, 1, 2], 1) == (23, 1112)
    assert plans.busiest_worker(cfg, [0, 1, 2], 2) == (13, 612)
    assert plans.busiest_worker(cfg, [2], 2) == (3, 112)  # shards 0 and 1 committed


class _FakeGenerator:
    """A diffusion model whose every call costs `cost` seconds per sample and step, on a fake clock."""

    def __init__(self, cost: float):
        self.cost, self.last, self.calls = cost, 0.0, []

    def make_sampler(self, sampler, steps):
        return type("Sampler", (), {"timesteps": list(range(steps))})()

    def sample(self, seeds, *, sampler, num_steps):
        self.calls.append((len(seeds), num_steps))
        self.last = self.cost * len(seeds) * num_steps
        return torch.zeros(len(seeds), 3, 4, 4, dtype=torch.uint8)


@pytest.mark.parametrize("cost, batch, more", [(0.001, 50, 5), (0.5, 8, 2)])
def test_sampling_is_timed_at_the_runs_batch_and_scaled_to_its_steps(monkeypatch, cost, batch, more):
    """Cheap steps: one step at batch 1, 2, ..., 32, 50 (warm-ups), then 1 and 5 steps at batch 50. Expensive
    ones (0.5 s per sample-step): the ramp stops at batch 8 (0.5 + 1 + 2 + 4 s, and 8 more would pass the 15 s
    share of the budget), then 1 and 2 steps there, scaled to the run's batch. Either way a batch of 50 x 50
    steps is 2500 x cost, and a cold first call of 0.25 s more is paid once."""
    generator = _FakeGenerator(cost)
    cold = {"left": 7 if batch == 50 else 4}  # the ramp's last call is the first at its batch: 0.25 s slower

    def timed(fn, *a, **k):
        out = fn(*a, **k)
        cold["left"] -= 1
        return generator.last + (0.25 if cold["left"] == 0 else 0.0), out
    monkeypatch.setattr(plans, "_timed", timed)
    cfg = SampleConfig(model="embedded", n=200, sampler="ddim", sampling_steps=50, batch_size=50, shard_size=500)
    batch_secs, first, images, what = plans.time_sampling(generator, cfg, list(range(50)))
    assert batch_secs == pytest.approx(cost * 50 * 50) and first == pytest.approx(0.25)
    ramp = [1, 2, 4, 8, 16, 32, 50] if batch == 50 else [1, 2, 4, 8]
    assert generator.calls == [(b, 1) for b in ramp] + [(batch, 1), (batch, more)]
    assert images.shape == (batch, 4, 4, 3)
    assert f"samplings of 1 and {more} steps timed at batch {batch}" in what and "run's 50 network eval" in what
    assert ("of the run's 50, scaled" in what) == (batch < 50)


def test_the_printed_estimate_is_the_sum_of_its_parts_and_reads_back():
    from estimates import estimate
    plan = plans.Plan("sample", timed="3 of 50 network evaluations timed at batch 50 (the run's); on cpu")
    plan.part("loading", 1.25)
    plan.part("sampling", 290.0)
    plan.part("start-up", 8.75)
    assert plan.seconds == 300.0 and plan.to_dict()["parts"] == {"loading": 1.2, "sampling": 290.0, "start-up": 8.8}
    text = plan.text()
    assert "loading 1 s, sampling 5 min, start-up 9 s" in text.splitlines()[-2]
    assert estimate(text) == (300.0, plan.timed)
    short = plans.Plan("label", timed="on cpu")
    short.part("labelling", 42.0)
    assert estimate(short.text()) == (42.0, "on cpu")


def test_dry_runs_of_the_three_commands_write_nothing(tiny_model_dir, tiny_ensemble, tiny_dataset, tmp_path):
    """sample, label and train-deeplab (with --real: the mixed steps counted) plan from real timed work and
    leave every file as it was."""
    from datasetddpm.data.generated import GeneratedPairs, real_repeat
    root = finished_run(tmp_path / "run", tiny_model_dir, tiny_ensemble, 4, 2)
    before = tree_state(tmp_path) | tree_state(tiny_dataset)
    r = run("sample", "--out", tmp_path / "new", "--n", 6, "--model", tiny_model_dir, "--sampling-steps", 4,
            "--batch-size", 2, "--shard-size", 4, "--threads", 1, "--dry-run")
    assert r.exit_code == 0 and "samplings of 1 and 5 steps timed at batch 2 (the run's)" in r.output, r.output
    assert "3 of 2 samples each on the busiest of 1 worker(s)" in r.output
    r = run("label", "--out", root, "--ensemble", tiny_ensemble, "--threads", 1, "--dry-run")
    assert r.exit_code == 0 and "labelling timed in batches of 8" in r.output, r.output
    r = run("train-deeplab", "--run", root, "--val", tiny_dataset, "--out", tmp_path / "dl", "--epochs", 2,
            "--batch-size", 2, "--real", tiny_dataset, "--real-fraction", 0.5, "--no-augment", "--threads", 1,
            "--dry-run")
    assert r.exit_code == 0, r.output
    pairs = len(GeneratedPairs(root))
    steps = (pairs + real_repeat(pairs, 4, 0.5) * 4) // 2
    assert f"{pairs} kept pairs + 4 real images at 50%, {steps} steps per epoch x 2 epochs" in r.output
    assert "validation on 4 image(s)" in r.output and "time by part" in r.output
    assert tree_state(tmp_path) | tree_state(tiny_dataset) == before
