import numpy as np
import pytest
import torch
from torch import nn

from datasetddpm.ensemble.model import EnsembleConfig, PixelEnsemble, hidden_sizes, load_ensemble, save_ensemble
from datasetddpm.ensemble.predict import image_uncertainty, js_uncertainty, vote
from datasetddpm.ensemble.train import EnsembleTrainConfig, train_ensemble
from datasetddpm.features import FeatureBank


def test_hidden_sizes_follow_the_paper():
    assert hidden_sizes(7) == (128, 32) and hidden_sizes(29) == (128, 32) and hidden_sizes(34) == (256, 128)


def test_stacked_members_equal_independent_mlps():
    ens = PixelEnsemble(EnsembleConfig(in_dim=12, num_classes=5, members=3), seed=1)
    x = torch.randn(40, 12)
    for mode in ("train", "eval"):
        getattr(ens, mode)()
        out = ens(x)
        for m in range(3):
            mlp = nn.Sequential(nn.Linear(12, 128), nn.ReLU(), nn.BatchNorm1d(128), nn.Linear(128, 32), nn.ReLU(),
                                nn.BatchNorm1d(32), nn.Linear(32, 5))
            with torch.no_grad():
                for lin, st in ((mlp[0], ens.fc1), (mlp[3], ens.fc2), (mlp[6], ens.fc3)):
                    lin.weight.copy_(st.weight[m].T)
                    lin.bias.copy_(st.bias[m, 0])
                for bn, st in ((mlp[2], ens.bn1), (mlp[5], ens.bn2)):
                    bn.weight.copy_(st.weight[m, 0]); bn.bias.copy_(st.bias[m, 0])
                    bn.running_mean.copy_(st.running_mean[m, 0]); bn.running_var.copy_(st.running_var[m, 0])
            getattr(mlp, mode)()
            torch.testing.assert_close(out[m], mlp(x), rtol=1e-4, atol=1e-5)


def test_init_is_normal_002():
    ens = PixelEnsemble(EnsembleConfig(in_dim=500, num_classes=7), seed=0)
    assert abs(ens.fc1.weight.std().item() - 0.02) < 0.001 and ens.fc1.bias.abs().max() == 0


def test_vote_majority_and_ties():
    # 3 members, 2 pixels, 3 classes
    logits = torch.tensor([[[5., 0, 0], [0, 5, 0]],
                           [[5., 0, 0], [0, 0, 5]],
                           [[0., 5, 0], [5, 0, 0]]])
    assert vote(logits).tolist() == [0, 0]  # pixel 1: a three-way tie goes to the lowest id


def test_js_uncertainty_zero_when_members_agree_positive_when_not():
    agree = torch.tensor([[[2., 0.]], [[2., 0.]]])
    disagree = torch.tensor([[[9., 0.]], [[0., 9.]]])
    assert js_uncertainty(agree).item() == pytest.approx(0.0, abs=1e-6)
    assert js_uncertainty(disagree).item() == pytest.approx(np.log(2), rel=1e-2)
    assert image_uncertainty(torch.tensor([0.0] * 90 + [1.0] * 10)) == pytest.approx(1.0)


def _toy_bank(n_images=4, size=16, seed=0):
    """Features that determine the label: class = argmax of the first 3 channels (plus noise)."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(n_images, 6, size, size, generator=g)
    masks = maps[:, :3].argmax(1)
    masks[:, 0, 0] = 255  # some ignored pixels
    bank = FeatureBank(size, size)
    bank.add([maps[:, :3], maps[:, 3:]], masks)
    return bank.finalize(), maps, masks


def test_ensemble_fits_a_tiny_dataset_and_respects_ignore():
    bank, maps, masks = _toy_bank()
    cfg = EnsembleConfig(in_dim=6, num_classes=3, members=4)
    ens, log = train_ensemble(bank, cfg, EnsembleTrainConfig(members=4, max_epochs=8, min_epochs=2), progress=False)
    x = maps.permute(0, 2, 3, 1).reshape(-1, 6)
    pred = vote(ens(x))
    y = masks.reshape(-1)
    acc = (pred[y != 255] == y[y != 255]).float().mean().item()
    assert acc > 0.95
    assert log["pixels"] == (masks != 255).sum().item()


def test_training_is_deterministic_and_checkpoint_round_trips(tmp_path):
    bank, maps, _ = _toy_bank()
    cfg = EnsembleConfig(in_dim=6, num_classes=3, members=2, class_names=("a", "b", "c"))
    train = EnsembleTrainConfig(members=2, max_epochs=3, min_epochs=1, seed=5)
    a, _ = train_ensemble(bank, cfg, train, progress=False)
    b, _ = train_ensemble(bank, cfg, train, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    save_ensemble(tmp_path, a)
    c = load_ensemble(tmp_path)
    x = maps.permute(0, 2, 3, 1).reshape(-1, 6)
    assert torch.equal(a.eval()(x), c(x)) and c.cfg.class_names == ("a", "b", "c")


def test_early_stopping_stops_every_member_before_max_epochs():
    bank, _, _ = _toy_bank()
    cfg = EnsembleConfig(in_dim=6, num_classes=3, members=3)
    ens, log = train_ensemble(bank, cfg, EnsembleTrainConfig(members=3, max_epochs=50, min_epochs=1, patience=3),
                              progress=False)
    assert all(s is not None for s in log["stopped_at"]) and log["epochs"] < 50
