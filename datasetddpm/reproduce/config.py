"""What a `reproduce` run is: the preset, its inputs, the scale knobs, and the paper's numbers to set beside it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError, OptionError
from ..presets import get_preset

# Paper Table 2 (mIoU, mean ± std over 5 runs), the rows `reproduce` makes: DDPM is direct mode. Missing
# cells are absent in the paper (no DatasetGAN/DatasetDDPM on CelebA-19 and ADE-Bedroom-30).
PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "bedroom_28": {"DatasetGAN": (31.3, 2.3), "DatasetDDPM": (47.9, 2.9), "DDPM": (49.4, 1.9)},
    "ffhq_34": {"DatasetGAN": (57.0, 1.1), "DatasetDDPM": (56.0, 0.9), "DDPM": (59.1, 1.4)},
    "cat_15": {"DatasetGAN": (36.5, 2.3), "DatasetDDPM": (47.6, 1.5), "DDPM": (53.7, 3.3)},
    "horse_21": {"DatasetGAN": (45.4, 1.4), "DatasetDDPM": (60.8, 1.0), "DDPM": (65.0, 0.8)},
    "celeba_19": {"DDPM": (59.9, 1.0)},
    "ade_bedroom_30": {"DDPM": (34.6, 1.7)},
}
DATASET_TITLES = {"bedroom_28": "Bedroom-28", "ffhq_34": "FFHQ-34", "cat_15": "Cat-15", "horse_21": "Horse-21",
                  "celeba_19": "CelebA-19", "ade_bedroom_30": "ADE-Bedroom-30", "embedded": "Embedded-7"}
SAMPLERS = ("ddpm", "ddim", "dpm++")


@dataclass(frozen=True)
class ReproduceConfig:
    """Everything that shapes the numbers (stored in `<out>/reproduce.json`; a rerun must match it) and the
    settings that only change where and how fast it runs (`RUN_SETTINGS`)."""

    preset: str
    out: str
    data: str = ""  # dataset root in the reference layout; "" for embedded: a procedural one in <out>/data
    model: str = ""  # diffusion model: a folder, 'embedded' or adm:<flags>:<file.pt>
    seeds: tuple[int, ...] = (0, 1, 2)  # direct mode: one ensemble per seed (the paper: 5 runs)
    n: int = 55_556  # samples generated (the 10 % most uncertain are dropped)
    sampler: str = "ddpm"
    sampling_steps: int = 1000
    batch_size: int = 50  # samples per UNet batch (part of the generation run's config)
    # Samples per generation shard, the unit batch tasks split (0: the batch size times 500 // batch size; left
    # out of the key at that value, so runs made before it was an option keep resuming).
    shard_size: int = 0
    members: int = 10  # MLPs per ensemble
    ensemble_steps: int | None = None  # cap on ensemble optimisation steps (smoke runs); None: early stopping
    deeplab_epochs: int | None = None  # None: the preset's
    annotated: int = 0  # embedded only: generated samples the oracle annotates for the labeller (0: as many as real/train)
    stylegan2: str = ""  # a StyleGAN2 for the DatasetGAN row ("" = no row)
    stylegan2_data: str = ""  # its annotated samples (with latents); "" = <data>/gan, or oracle-annotated for embedded
    gpus: int = 0
    device: str = "auto"
    threads: int | None = None
    paper_preset: bool = field(init=False, default=False)

    RUN_SETTINGS = ("out", "gpus", "device", "threads")

    def __post_init__(self):
        object.__setattr__(self, "paper_preset", self.preset in PAPER_TABLE2)
        if self.shard_size == self.default_shard_size:  # given explicitly at the default: the same run
            object.__setattr__(self, "shard_size", 0)

    def key(self) -> dict:
        """The fields a resumed run must share with the run it continues."""
        d = asdict(self)
        if not d["shard_size"]:
            d.pop("shard_size")
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k not in self.RUN_SETTINGS}

    @property
    def default_shard_size(self) -> int:
        return self.batch_size * max(1, 500 // self.batch_size) if self.batch_size > 0 else 0

    @property
    def sample_shard_size(self) -> int:
        """Samples per shard of the generation runs."""
        return self.shard_size or self.default_shard_size

    @property
    def num_shards(self) -> int:
        return -(-self.n // self.sample_shard_size)

    @property
    def root(self) -> Path:
        return Path(self.out)

    @property
    def data_dir(self) -> Path:
        return Path(self.data) if self.data else self.root / "data"

    @property
    def datasetddpm(self) -> bool:
        """The paper has a DatasetDDPM row for this preset (the embedded preset runs one too)."""
        return not self.paper_preset or "DatasetDDPM" in PAPER_TABLE2[self.preset]


def kept_pairs(n: int) -> int:
    """The pairs `finalize` keeps of n samples with its defaults: the 10 % most uncertain dropped, at most 50000."""
    return min(n - int(round(0.1 * n)), 50_000)


def check_config(cfg: ReproduceConfig) -> None:
    """Every option checked before anything is written."""
    get_preset(cfg.preset)
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds) or min(cfg.seeds) < 0:
        raise OptionError("--seeds", f"expected distinct seeds >= 0, got {','.join(map(str, cfg.seeds))}")
    for option, value, low in (("--n", cfg.n, 1), ("--sampling-steps", cfg.sampling_steps, 1),
                               ("--batch-size", cfg.batch_size, 1), ("--members", cfg.members, 1),
                               ("--gpus", cfg.gpus, 0), ("--annotated", cfg.annotated, 0)):
        if value < low:
            raise OptionError(option, f"must be >= {low}, got {value}")
    for option, value in (("--ensemble-steps", cfg.ensemble_steps), ("--deeplab-epochs", cfg.deeplab_epochs)):
        if value is not None and value < 1:
            raise OptionError(option, f"must be >= 1, got {value}")
    if cfg.shard_size < 0 or cfg.shard_size % cfg.batch_size:
        raise OptionError("--shard-size", f"must be a positive multiple of --batch-size ({cfg.batch_size}), "
                                          f"got {cfg.shard_size}")
    if cfg.sampler not in SAMPLERS:
        raise OptionError("--sampler", f"must be one of {', '.join(SAMPLERS)}, got {cfg.sampler!r}")
    batch = get_preset(cfg.preset).deeplab.batch_size * max(cfg.gpus, 1)
    if (cfg.datasetddpm or cfg.stylegan2) and kept_pairs(cfg.n) < batch:
        raise OptionError("--n", f"{cfg.n} samples keep {kept_pairs(cfg.n)} pairs, fewer than one DeepLab batch "
                                 f"({batch}); generate at least {next(m for m in range(batch, 3 * batch) if kept_pairs(m) >= batch)}")
    if cfg.paper_preset:
        _check_paper_data(cfg)
    elif cfg.data:
        _check_split_folders(Path(cfg.data))
    gan_data = Path(cfg.stylegan2_data) if cfg.stylegan2_data else cfg.data_dir / "gan" if cfg.paper_preset else None
    if cfg.stylegan2 and gan_data is not None and not gan_data.is_dir():
        raise InputError(gan_data, "not found: the DatasetGAN labeller trains on annotated StyleGAN2 samples with "
                                   "their latents (`datasetddpm annotate --model <stylegan2>`); give --stylegan2-data")


def _check_split_folders(root: Path) -> None:
    for split in ("train", "test"):
        if not (root / "real" / split).is_dir():
            raise InputError(root, f"has no real/{split}: give a dataset root in the reference layout "
                                   "(real/train, real/test; see docs/presets.md)")


def _check_paper_data(cfg: ReproduceConfig) -> None:
    root = Path(cfg.data)
    if not root.is_dir():
        raise InputError(root, f"dataset not found: `datasetddpm download datasets` unpacks {cfg.preset} there")
    _check_split_folders(root)
    if cfg.datasetddpm and not (root / "ddpm").is_dir():
        raise InputError(root / "ddpm", "not found: the paper's DatasetDDPM labeller trains on these annotated "
                                        "generated samples (part of the reference datasets archive)")
