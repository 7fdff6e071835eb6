"""The pixel classifier ensemble of the paper (Appendix C), with all members in one module.

Each member is Linear(d, h1) -> ReLU -> BatchNorm1d(h1) -> Linear(h1, h2) -> ReLU -> BatchNorm1d(h2)
-> Linear(h2, K), (h1, h2) = (128, 32) for K < 30 classes else (256, 128), weights ~ N(0, 0.02).
Members are stacked along a leading axis so one batched matmul runs all of them; each member
still has its own parameters, batch statistics and optimiser state, exactly as if trained alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..generators.base import FeatureSpec
from ..io import load_state_strict, load_tensors, read_checkpoint_meta, write_checkpoint
from ..paths import record_path, resolve_recorded

FORMAT = "datasetddpm.ensemble"


def hidden_sizes(num_classes: int) -> tuple[int, int]:
    return (128, 32) if num_classes < 30 else (256, 128)


class StackedBatchNorm(nn.Module):
    """BatchNorm1d for M members at once: input (M, P, C), statistics per member and channel."""

    def __init__(self, members: int, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(members, 1, channels))
        self.bias = nn.Parameter(torch.zeros(members, 1, channels))
        self.register_buffer("running_mean", torch.zeros(members, 1, channels))
        self.register_buffer("running_var", torch.ones(members, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = x.mean(1, keepdim=True)
            var = x.var(1, unbiased=False, keepdim=True)
            with torch.no_grad():
                n = x.shape[1]
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class StackedLinear(nn.Module):
    def __init__(self, members: int, fan_in: int, fan_out: int, generator: torch.Generator | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(members, fan_in, fan_out, generator=generator) * 0.02)
        self.bias = nn.Parameter(torch.zeros(members, 1, fan_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)  # (M, P, out)


@dataclass
class EnsembleConfig:
    """The checkpoint's record of the ensemble's shape and meaning. `members` is set from the training
    config (`EnsembleTrainConfig.members`, the one option) by `direct.fit_ensemble`; it is here because a
    loaded checkpoint must be rebuilt with it."""

    in_dim: int
    num_classes: int
    members: int = 10
    hidden: tuple[int, int] | None = None  # None: by class count (paper)
    ignore_label: int = 255
    class_names: tuple[str, ...] = ()
    features: dict = field(default_factory=dict)  # FeatureSpec.to_dict() or {"kind": "colour"}
    model: str = ""  # the generator the features come from
    resolution: int = 0  # image side the ensemble was trained at

    def resolved_hidden(self) -> tuple[int, int]:
        return tuple(self.hidden) if self.hidden else hidden_sizes(self.num_classes)

    def feature_spec(self) -> FeatureSpec | None:
        return FeatureSpec.from_dict(self.features) if "blocks" in self.features else None


class PixelEnsemble(nn.Module):
    """(P, D) or (M, P, D) pixel features -> (M, P, K) logits of every member."""

    def __init__(self, cfg: EnsembleConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        h1, h2 = cfg.resolved_hidden()
        M = cfg.members
        g = torch.Generator().manual_seed(seed)
        self.fc1 = StackedLinear(M, cfg.in_dim, h1, g)
        self.bn1 = StackedBatchNorm(M, h1)
        self.fc2 = StackedLinear(M, h1, h2, g)
        self.bn2 = StackedBatchNorm(M, h2)
        self.fc3 = StackedLinear(M, h2, cfg.num_classes, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.cfg.members, -1, -1)
        x = self.bn1(torch.relu(self.fc1(x)))
        x = self.bn2(torch.relu(self.fc2(x)))
        return self.fc3(x)


def save_ensemble(directory: str | Path, ensemble: PixelEnsemble, extra: dict | None = None) -> None:
    """The model is recorded relative to `directory` where both lie in one tree (moving the tree keeps them
    together), with its absolute path beside it for an ensemble moved alone; `cfg.model` in memory is absolute."""
    cfg = asdict(ensemble.cfg)
    cfg["model"] = record_path(ensemble.cfg.model, directory)
    moved = {"model_absolute": ensemble.cfg.model} if cfg["model"] != ensemble.cfg.model else {}
    write_checkpoint(directory, ensemble.state_dict(), meta_file="ensemble.json", weights_file="ensemble.safetensors",
                     fmt=FORMAT, body={"ensemble": cfg, **moved, **(extra or {})})


def recorded_model(meta: dict, directory: str | Path) -> str:
    """The model folder an ensemble.json (`meta`, read from `directory`) names, found again after a move."""
    return resolve_recorded(meta["ensemble"].get("model", ""), directory, meta.get("model_absolute", ""))


def holds_ensemble(directory: str | Path, ensemble: PixelEnsemble) -> bool:
    """`directory` already holds `ensemble`: the same config and bit-identical weights."""
    directory = Path(directory)
    if not (directory / "ensemble.json").is_file() or not (directory / "ensemble.safetensors").is_file():
        return False
    try:
        stored = load_ensemble(directory)
    except Exception:  # noqa: BLE001 - whatever is there and unreadable is not this ensemble; it gets replaced
        return False
    new, old = ensemble.state_dict(), stored.state_dict()
    return (stored.cfg == ensemble.cfg and new.keys() == old.keys()
            and all(new[k].dtype == old[k].dtype and torch.equal(new[k].cpu(), old[k]) for k in new))


def ensemble_config(directory: str | Path) -> EnsembleConfig:
    """The ensemble's config from its ensemble.json alone (classes, ignore label, features): for readers that
    need no weights, e.g. `finalize`."""
    meta = read_checkpoint_meta(directory, "ensemble.json", FORMAT, "ensemble")
    raw = dict(meta["ensemble"])
    raw["model"] = recorded_model(meta, directory)
    raw["class_names"] = tuple(raw.get("class_names", ()))
    if raw.get("hidden"):
        raw["hidden"] = tuple(raw["hidden"])
    return EnsembleConfig(**raw)


def load_ensemble(directory: str | Path) -> PixelEnsemble:
    ensemble = PixelEnsemble(ensemble_config(directory))
    weights = Path(directory) / "ensemble.safetensors"
    load_state_strict(ensemble, load_tensors(weights), weights)
    return ensemble.eval()
