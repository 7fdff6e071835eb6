import copy

import numpy as np
import pytest
import torch

from datasetddpm.ensemble.fused import FusedHead
from datasetddpm.ensemble.model import EnsembleConfig, PixelEnsemble
from datasetddpm.ensemble.predict import js_uncertainty, predict_pixels, vote
from datasetddpm.features import FeatureBank, upsample_concat

SIZE = (24, 20)
# Several resolutions, non-integer scales (7x9), a full-resolution map, and repeated resolutions out
# of order, so grouping by resolution must keep fc1's row blocks straight.
SHAPES = [(5, 6, 5), (3, 24, 20), (8, 12, 10), (4, 6, 5), (6, 7, 9), (2, 12, 10)]


def _maps(seed, n=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, h, w, generator=g) * 2 for c, h, w in SHAPES]


def _trained_ish(in_dim, num_classes=5, seed=0):
    """Random weights at a trained scale, non-zero biases and non-trivial BatchNorm statistics."""
    ens = PixelEnsemble(EnsembleConfig(in_dim=in_dim, num_classes=num_classes), seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for fc in (ens.fc1, ens.fc2, ens.fc3):
            fc.weight.normal_(0, 0.3, generator=g)
            fc.bias.normal_(0, 0.5, generator=g)
        for bn in (ens.bn1, ens.bn2):
            bn.weight.uniform_(0.5, 2.0, generator=g)
            bn.bias.normal_(0, 0.5, generator=g)
            bn.running_mean.uniform_(0.0, 2.0, generator=g)
            bn.running_var.uniform_(0.3, 3.0, generator=g)
    return ens.eval()


def _reference64(ens, maps):
    """The slow path in float64: materialised (d, H, W) features, the ensemble module, the vote."""
    feats = upsample_concat([m.double() for m in maps], SIZE)[0].flatten(1).T
    with torch.no_grad():
        return copy.deepcopy(ens).double()(feats)  # (M, P, K)


def _near_tie(logits64):
    """(P,) True where some member's top-2 logit margin is below 1e-4."""
    top2 = logits64.topk(2, dim=-1).values
    return ((top2[..., 0] - top2[..., 1]) < 1e-4).any(0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fused_masks_equal_float64_reference_except_near_ties(seed):
    maps = _maps(seed)
    ens = _trained_ish(sum(c for c, _, _ in SHAPES), seed=seed)
    head = FusedHead(ens, [c for c, _, _ in SHAPES])
    ref = _reference64(ens, maps)
    logits = head.logits(maps, SIZE)
    torch.testing.assert_close(logits.double(), ref, rtol=1e-5, atol=1e-4)
    labels, unc = head(maps, SIZE)
    ref_labels = vote(ref)
    differ = (labels.flatten() != ref_labels)
    assert bool(_near_tie(ref)[differ].all())
    assert differ.float().mean() < 0.01  # near-ties are rare: the comparison is not vacuous
    assert len(ref_labels.unique()) > 1
    torch.testing.assert_close(unc.flatten().double(), js_uncertainty(ref).double(), rtol=0, atol=1e-5)


def test_fused_equals_float32_slow_path_and_is_reusable_across_images():
    ens = _trained_ish(sum(c for c, _, _ in SHAPES), seed=5)
    head = FusedHead(ens, [c for c, _, _ in SHAPES])
    for seed in (10, 11):  # the second call reuses the first call's buffers
        maps = _maps(seed)
        labels, unc = head(maps, SIZE)
        slow_labels, slow_unc = predict_pixels(ens, upsample_concat(maps, SIZE)[0].flatten(1).T)
        differ = labels.flatten() != slow_labels
        assert bool(_near_tie(_reference64(ens, maps))[differ].all())
        torch.testing.assert_close(unc.flatten(), slow_unc, rtol=0, atol=1e-5)


def test_channel_count_mismatch_is_an_error():
    ens = _trained_ish(10)
    with pytest.raises(ValueError, match="channels"):
        FusedHead(ens, [4, 5])


def test_segment_matches_materialised_path(tiny_generator):
    from datasetddpm.data.procedural import render_batch
    from datasetddpm.direct import FeatureSource, segment
    from datasetddpm.generators.base import FeatureSpec

    source = FeatureSource(tiny_generator, FeatureSpec((1, 3, 4), (50, 200)))
    images, _ = render_batch(range(3))
    maps = source.maps(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    ens = _trained_ish(sum(m.shape[1] for m in maps), num_classes=7, seed=3)
    seg = segment(source, ens, images, batch_size=2, progress=False)
    assert seg.labels.shape == (3, 32, 32) and seg.labels.dtype == np.int64
    for j in range(3):
        per_image = [m[j:j + 1] for m in maps]
        feats = upsample_concat([m.double() for m in per_image], (32, 32))[0].flatten(1).T
        with torch.no_grad():
            ref = copy.deepcopy(ens).double()(feats)
        differ = torch.from_numpy(seg.labels[j]).flatten() != vote(ref)
        assert bool(_near_tie(ref)[differ].all())
        np.testing.assert_allclose(seg.pixel_uncertainty[j].flatten(), js_uncertainty(ref).numpy(), atol=1e-5)


@pytest.mark.parametrize("capacity", [None, 3])
def test_float16_bank_gathers_materialised_features_within_rounding(capacity):
    maps = _maps(7, n=3)
    full = upsample_concat(maps, SIZE)  # (3, D, H, W) float32
    bank = FeatureBank(*SIZE, dtype=torch.float16, capacity=capacity)
    bank.add([m[:2] for m in maps], torch.zeros(2, *SIZE))  # two batches of images
    bank.add([m[2:] for m in maps], torch.zeros(1, *SIZE))
    bank.finalize()
    assert bank.nbytes() == sum(m.numel() for m in maps) * 2 and len(bank) == 3
    g = torch.Generator().manual_seed(0)
    n, y, x = (torch.randint(0, k, (400,), generator=g) for k in (3, *SIZE))
    got = bank.gather(n, y, x)
    want = full[n, :, y, x]
    # float16 keeps 11 significant bits; bilinear weights are convex, so the error stays within
    # half an ulp of the largest value involved.
    bound = 2 ** -11 * max(float(m.abs().max()) for m in maps)
    assert float((got - want).abs().max()) <= bound
    assert float((got - want).abs().max()) > 0  # the storage really is half precision


def test_bank_capacity_is_enforced():
    bank = FeatureBank(*SIZE, capacity=2)
    bank.add([m[:2] for m in _maps(0, n=2)])
    with pytest.raises(ValueError, match="capacity"):
        bank.add([m[:1] for m in _maps(1)])


def test_a_batch_of_images_equals_one_at_a_time():
    maps = _maps(4, n=3)
    ens = _trained_ish(sum(c for c, _, _ in SHAPES), seed=4)
    head = FusedHead(ens, [c for c, _, _ in SHAPES])
    together = head.logits(maps, SIZE).view(ens.cfg.members, 3, -1, ens.cfg.num_classes)
    for j in range(3):
        alone = FusedHead(ens, [c for c, _, _ in SHAPES]).logits([m[j:j + 1] for m in maps], SIZE)
        torch.testing.assert_close(together[:, j], alone, rtol=1e-5, atol=1e-5)
    labels, unc = head(maps, SIZE)
    assert labels.shape == unc.shape == (3, *SIZE)
