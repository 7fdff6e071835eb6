import json

import numpy as np
import pytest
import torch

from datasetddpm.data.procedural import render_batch
from datasetddpm.errors import InputError
from datasetddpm.segmenters.model import SegmenterConfig, create_segmenter, load_segmenter, predict, save_segmenter
from datasetddpm.segmenters.train import SegTrainConfig, train_segmenter


@pytest.mark.parametrize("arch,scale", [("deeplabv3", 2), ("deeplabv3plus", 1), ("unet", 1)])
def test_logits_come_back_at_input_size(arch, scale):
    model = create_segmenter(SegmenterConfig(num_classes=7, arch=arch, input_scale=scale)).eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert model(x).shape == (2, 7, 32, 32)


def test_size_check_names_the_rule():
    model = create_segmenter(SegmenterConfig(num_classes=3, arch="deeplabv3plus"))
    assert model.check_size(32, 32) is None
    assert "multiple of 32" in model.check_size(40, 40)


def test_unknown_architecture():
    with pytest.raises(Exception, match="unknown architecture 'fcn'"):
        create_segmenter(SegmenterConfig(num_classes=3, arch="fcn"))


def test_training_reduces_loss_and_checkpoint_round_trips(tmp_path):
    images, masks = render_batch(range(16))
    torch.manual_seed(0)
    model = create_segmenter(SegmenterConfig(num_classes=7, arch="unet", encoder="resnet18"))
    log = train_segmenter(model, images, masks, SegTrainConfig(steps=30, batch_size=4, lr=3e-3), out_dir=tmp_path,
                          progress=False)
    assert np.mean(log["loss"][-5:]) < np.mean(log["loss"][:5])
    loaded = load_segmenter(tmp_path)
    x = torch.from_numpy(images[:2]).permute(0, 3, 1, 2)
    assert torch.equal(predict(model, x), predict(loaded, x))
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["segmenter"]["arch"] == "unet" and meta["training"]["steps"] == 30


def test_oracle_sample_report_on_tiny_models(tiny_generator, tmp_path):
    from datasetddpm.data.oracle import check_samples
    oracle = create_segmenter(SegmenterConfig(num_classes=7, arch="unet")).eval()
    r = check_samples(tiny_generator, oracle, tmp_path, n=4, num_steps=2, batch_size=2, progress=False)
    assert 0 <= r["samples"]["flip_consistency_miou"] <= 1 and 0 <= r["real"]["mean_confidence"] <= 1
    assert r["num_samples"] == 4 and set(r["samples"]["class_frequency"]) == set(r["true_class_frequency"])
    assert (tmp_path / "samples_grid.png").is_file() and (tmp_path / "sample_report.json").is_file()


class KnownMaskOracle(torch.nn.Module):
    """An oracle that sees the same mask in every image: logits 10 for that mask's class, 0 for the others."""

    def __init__(self, mask: torch.Tensor, num_classes: int = 7):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a device to run on, as a real segmenter has
        self.logits = 10.0 * torch.nn.functional.one_hot(mask, num_classes).permute(2, 0, 1).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1, -1, -1)


def test_oracle_statistics_count_a_known_mask():
    """On a 32x32 mask of rows -- 16 of class 0, 8 of class 1, 4 of class 2, 4 of class 5 -- the predicted
    class frequencies are 1/2, 1/4, 1/8, 0, 0, 1/8, 0; the mask is its own mirror image, so the flip-consistency
    mIoU is 1 for the 4 classes present and 0 for the 3 absent ones (the protocol's convention): 4/7; each pixel's
    confidence is e^10 / (e^10 + 6)."""
    from datasetddpm.data.oracle import CLASS_NAMES, oracle_statistics
    mask = torch.tensor([0] * 16 + [1] * 8 + [2] * 4 + [5] * 4)[:, None].expand(32, 32).contiguous()
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    stats = oracle_statistics(KnownMaskOracle(mask), images)
    expected = dict(zip(CLASS_NAMES, [1 / 2, 1 / 4, 1 / 8, 0, 0, 1 / 8, 0]))
    assert stats["class_frequency"] == {name: pytest.approx(f, abs=1e-12) for name, f in expected.items()}
    assert stats["flip_consistency_miou"] == pytest.approx(4 / 7)
    assert stats["mean_confidence"] == pytest.approx(np.exp(10) / (np.exp(10) + 6), rel=1e-6)
    assert stats["predictions"].shape == (3, 32, 32) and (stats["predictions"] == mask.numpy()).all()


def test_oracle_flips_are_albumentations_mirrors_of_the_chosen_items():
    """`flipped` mirrors exactly the chosen images and masks left-right (what the hand-written torch flips did,
    so the oracle's training keeps its bytes) and leaves the others and its inputs as they were."""
    from datasetddpm.segmenters.train import flipped
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, 8, 6, 3), dtype=np.uint8)
    masks = rng.integers(0, 7, (5, 8, 6), dtype=np.uint8)
    before = images.copy(), masks.copy()
    chosen = np.array([True, False, True, True, False])
    out_images, out_masks = flipped(images, masks, chosen)
    hand_x = torch.from_numpy(images).permute(0, 3, 1, 2)
    hand_x = torch.where(torch.from_numpy(chosen)[:, None, None, None], hand_x.flip(-1), hand_x)
    hand_y = torch.where(torch.from_numpy(chosen)[:, None, None], torch.from_numpy(masks).flip(-1),
                         torch.from_numpy(masks))
    assert np.array_equal(out_images, hand_x.permute(0, 2, 3, 1).numpy()) and out_images.dtype == np.uint8
    assert np.array_equal(out_masks, hand_y.numpy()) and out_masks.dtype == np.uint8
    assert np.array_equal(out_images[1], images[1]) and not np.array_equal(out_images[0], images[0])
    assert np.array_equal(images, before[0]) and np.array_equal(masks, before[1])


def test_segmenter_checkpoint_from_another_config_is_refused(tmp_path):
    save_segmenter(tmp_path, create_segmenter(SegmenterConfig(num_classes=7, arch="unet")))
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["segmenter"]["num_classes"] = 5
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="does not match the model config"):
        load_segmenter(tmp_path)


def test_segmenter_training_resumes_to_the_same_weights(tmp_path):
    images, masks = render_batch(range(8))
    cfg = SegmenterConfig(num_classes=7, arch="unet", encoder_depth=3, decoder_channels=(32, 16, 8))

    def train(out, evaluate=None):
        torch.manual_seed(0)
        model = create_segmenter(cfg)
        train_segmenter(model, images, masks, SegTrainConfig(steps=6, batch_size=2, checkpoint_every=2),
                        out_dir=out, progress=False, evaluate=evaluate, eval_every=5)
        return model

    def killed(_model):
        raise KeyboardInterrupt

    full = train(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "split", killed)  # dies during step 5, after the state of step 4 was saved ...
    assert not (tmp_path / "split" / "config.json").exists()
    resumed = train(tmp_path / "split")  # ... and a rerun continues from there
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not any("layer3" in k or "layer4" in k for k in a)  # stages past encoder_depth are not built
    assert load_segmenter(tmp_path / "full").cfg.decoder_channels == (32, 16, 8)


def test_oracle_run_folder_refuses_another_config_before_training(tmp_path):
    """train-oracle on the shared run folder (rundir): its config file, and a changed config refused."""
    from datasetddpm.data.oracle import train_oracle
    from datasetddpm.errors import DatasetDDPMError
    tiny = dict(pool=4, batch_size=2, arch="unet", encoder_depth=3, decoder_channels=(16, 8, 8), checkpoint_every=1,
                progress=False)
    log = train_oracle(tmp_path, steps=1, **tiny)
    assert {"real_miou", "real_iou", "seconds"} <= set(log)
    saved = json.loads((tmp_path / "train_config.json").read_text())
    assert saved["config"]["steps"] == 1 and saved["segmenter"]["arch"] == "unet"
    assert (tmp_path / "oracle_log.json").is_file() and (tmp_path / "train_state.safetensors").is_file()
    state = (tmp_path / "train_state.safetensors").read_bytes()
    with pytest.raises(DatasetDDPMError, match="different config .*another --out"):
        train_oracle(tmp_path, steps=2, **{**tiny, "lr": 3e-3})
    assert (tmp_path / "train_state.safetensors").read_bytes() == state


def test_class_share_interval_known_answers():
    """Identical per-image masks: every resample gives the exact share; mixed images: the interval holds the
    point estimate and narrows with more images."""
    from datasetddpm.data.oracle import class_share_interval
    real = np.zeros((20, 4, 4), np.int64)
    real[:, 0, :] = 5  # class 5 on 4 of 16 pixels of every real image
    half = np.zeros_like(real)
    half[:, 0, :2] = 5  # on 2 of 16 in every sample: share exactly 0.5
    low, high = class_share_interval(half, real)
    assert low[5] == pytest.approx(0.5) and high[5] == pytest.approx(0.5)
    assert np.isnan(low[3]) and low[0] == pytest.approx(14 / 12)
    mixed = np.zeros((20, 4, 4), np.int64)
    mixed[:10, 0, :] = 5  # half of the samples have all 4 pixels, half none: share 0.5 on average
    low, high = class_share_interval(mixed, real)
    assert low[5] < 0.5 < high[5] and high[5] - low[5] > 0.2
    low40, high40 = class_share_interval(np.concatenate([mixed, mixed]), np.concatenate([real, real]))
    assert high40[5] - low40[5] < high[5] - low[5]
