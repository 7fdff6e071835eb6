"""Every random stream the toolkit draws, from one scheme: numpy `SeedSequence` over (run seed, index[, stream]).

Sample i of a run is (run seed, i), whatever the number of workers, GPUs or nodes; other streams add a
non-zero stream id last, so they never repeat a run's samples or each other's (an offset added to the
seed would: seed 0 + 7777 is seed 7777). The id comes last and is never 0 because SeedSequence drops
trailing zero words: [s, 1, 0] would be sample 1's [s, 1].
"""

from __future__ import annotations

import numpy as np

STREAMS = {"annotation": 1, "check-samples": 2, "labelled-subset": 3, "suggest-start": 4, "suggest-random": 5, "val-split": 6}


def sample_seed(run_seed: int, index: int) -> int:
    """Seed of global sample `index` of a run: independent of worker count, batch position and restarts."""
    return int(np.random.SeedSequence([run_seed, index]).generate_state(1, np.uint64)[0] >> 1)


def stream_seed(run_seed: int, stream: str, index: int) -> int:
    """Seed of item `index` of a named stream (`STREAMS`)."""
    return int(np.random.SeedSequence([run_seed, index, STREAMS[stream]]).generate_state(1, np.uint64)[0] >> 1)


def filled(items: list, size: int) -> list:
    """`items` filled up to a multiple of `size` with copies of the last one (the callers drop what the copies
    give). Every batch the sampler or the labeller runs then has the run's batch shape, so a sample's image,
    labels and score depend on its seed only, not on how many samples share its batch: the UNet's kernels
    round differently for another batch shape, and the last batch of a shard, or of a run of another
    length, would otherwise give the same seed other bits."""
    return list(items) + list(items[-1:]) * (-len(items) % size)


def sample_in_full_batches(generator, seeds: list[int], batch_size: int, **sample_kw):
    """Yield `generator.sample`'s images of `seeds`, `batch_size` at a time, each call a full batch (the last
    one `filled`, the copies' images dropped): sample i has the same bits whatever len(seeds) is."""
    for i in range(0, len(seeds), batch_size):
        chunk = seeds[i:i + batch_size]
        yield generator.sample(filled(chunk, batch_size), **sample_kw)[:len(chunk)]
