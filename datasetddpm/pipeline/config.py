"""The run config of a generation run, its hash and the manifest that guards resumes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path


from ..errors import DatasetDDPMError, OptionError
from ..io import read_json, write_json
from ..seeds import sample_seed, stream_seed  # noqa: F401  (re-exported)


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

    def validate(self) -> None:
        if self.n < 1:
            raise OptionError("--n", f"must be >= 1, got {self.n}")
        if self.batch_size < 1 or self.shard_size < 1 or self.shard_size % self.batch_size:
            raise OptionError("--shard-size", f"must be a positive multiple of --batch-size ({self.batch_size}), "
                                              f"got {self.shard_size}")

    def hash(self) -> str:
        d = asdict(self)
        if not self.images:  # generation runs keep the key they had before label-images existed
            d.pop("images"), d.pop("images_digest")
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
            raise DatasetDDPMError(f"{path.parent}: holds a {kind} run with a different config (hash "
                                   f"{previous.get('hash')} != {config_hash}); rerun with the same options to "
                                   f"resume, or pass --overwrite")
        write_json(path, {"kind": kind, "hash": config_hash, "config": config})
        return True
    write_json(path, {"kind": kind, "hash": config_hash, "config": config})
    return False
