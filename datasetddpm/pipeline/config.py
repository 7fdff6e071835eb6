"""The run config of a generation run, its hash and the manifest that guards resumes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path


from ..errors import DatasetDDPMError, OptionError
from ..io import read_json, write_json
from ..seeds import sample_seed, stream_seed  # noqa: F401  (re-exported)


SETTING_DEFAULTS = {"precision": "fp32", "compile": False, "threads": 0}
SELECTION_DEFAULTS = {"limit": 0, "files": ""}  # label-images' choice of images: all of the folder


@dataclass(frozen=True)
class SampleConfig:
    model: str = "embedded"  # diffusion checkpoint directory or "embedded"
    n: int = 1000  # samples to generate
    seed: int = 0  # run seed; sample i's seed is derived from (seed, i)
    sampler: str = "ddim"  # ddpm | ddim | dpm++
    sampling_steps: int = 50
    batch_size: int = 50  # part of the config: CPU kernels are not bit-identical across batch sizes
    shard_size: int = 500  # samples per shard (a multiple of batch_size)
    # `label-images` runs: the user's real images take the samples' place (sampler "real-images")
    images: str = ""  # their folder (absolute); "" for a generation run
    images_digest: str = ""  # sha256 over every file name and its bytes: a changed folder is another run
    limit: int = 0  # label-images --limit: only the first N images in name order (0 = all)
    files: str = ""  # label-images --files: the list file (absolute) naming the images to label ("" = all)
    # Settings that change the bits of the images and labels (each left out of the hash at its default, so
    # runs made before it existed keep their key):
    precision: str = "fp32"  # UNet arithmetic: fp32 | tf32 | bf16 | fp16 (autocast)
    compile: bool = False  # torch.compile'd sampling UNet: fused kernels round differently
    threads: int = 0  # torch CPU threads per process (CPU kernels round differently); 0 = not recorded / GPU

    def validate(self) -> None:
        from ..generators.diffusion import PRECISIONS
        if self.seed < 0:
            raise OptionError("--seed", f"must be >= 0, got {self.seed}")
        if self.precision not in PRECISIONS:
            raise OptionError("--precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.threads < 0:
            raise OptionError("--threads", f"must be >= 1, got {self.threads}")
        if self.n < 1:
            raise OptionError("--n", f"must be >= 1, got {self.n}")
        if self.batch_size < 1 or self.shard_size < 1 or self.shard_size % self.batch_size:
            raise OptionError("--shard-size", f"must be a positive multiple of --batch-size ({self.batch_size}), "
                                              f"got {self.shard_size}")

    def hash(self) -> str:
        d = asdict(self)
        if not self.images:  # generation runs keep the key they had before label-images existed
            d.pop("images"), d.pop("images_digest")
        for name, default in SELECTION_DEFAULTS.items():  # runs made before --limit / --files keep their key
            if d[name] == default:
                d.pop(name)
        for name, default in SETTING_DEFAULTS.items():
            if d[name] == default:
                d.pop(name)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def num_shards(self) -> int:
        return (self.n + self.shard_size - 1) // self.shard_size

    def shard_range(self, k: int) -> range:
        return range(k * self.shard_size, min((k + 1) * self.shard_size, self.n))


def claim_manifest(path: Path, kind: str, config: dict, config_hash: str, *, overwrite: bool) -> bool:
    """Write or check a manifest. Returns True when an existing run must be discarded (overwrite)."""
    if path.exists():
        previous = read_json(path)
        if previous.get("hash") == config_hash:
            return False
        if not overwrite:
            raise DatasetDDPMError(f"{path.parent}: holds a {kind} run with a different config ("
                                   f"{config_difference(previous.get('config'), config, previous.get('hash'), config_hash)}"
                                   f"); rerun with the same options to resume, or pass --overwrite")
        write_json(path, {"kind": kind, "hash": config_hash, "config": config})
        return True
    write_json(path, {"kind": kind, "hash": config_hash, "config": config})
    return False


def config_difference(old, new: dict, old_hash, new_hash) -> str:
    """What differs between a manifest's config and this command's, for the refusal ("threads 1 != 2")."""
    if isinstance(old, dict):
        keys = [k for k in new if k in SETTING_DEFAULTS or k in old]
        diff = [f"{k} {old.get(k, SETTING_DEFAULTS.get(k))!r} != {new[k]!r}" for k in keys
                if old.get(k, SETTING_DEFAULTS.get(k)) != new[k]]
        if diff:
            return "; ".join(diff)
    return f"hash {old_hash} != {new_hash}"


def recorded_settings(manifest: Path) -> dict:
    """precision / compile / threads of an existing run (defaults for a run made before they were recorded);
    {} when there is no readable manifest."""
    if not manifest.is_file():
        return {}
    try:
        config = read_json(manifest).get("config")
    except DatasetDDPMError:
        return {}
    if not isinstance(config, dict):
        return {}
    return {k: config.get(k, default) for k, default in SETTING_DEFAULTS.items()}
