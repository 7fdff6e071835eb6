"""Named presets. The embedded default runs everywhere; paper presets come with real checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .data.procedural import CLASS_NAMES as EMBEDDED_CLASSES
from .generators.base import FeatureSpec

ASSETS = Path(__file__).parent / "assets"
EMBEDDED_MODEL_DIR = ASSETS / "embedded" / "ddpm"
EMBEDDED_ORACLE_DIR = ASSETS / "embedded" / "oracle"

# The embedded UNet: 1.06M parameters, 32 px, three levels (32/64/64 channels), one resnet per
# level, no attention. Sized so that training fits a background CPU run and DDIM-50 sampling of
# several hundred images fits the demo on a slow 2-core day (DESIGN.md section 4).
EMBEDDED_UNET = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=16,
)
EMBEDDED_SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


@dataclass(frozen=True)
class Preset:
    name: str
    class_names: tuple[str, ...]
    resolution: int
    features: FeatureSpec
    ignore_label: int = 255
    model: str | None = None  # default model path ("embedded" for the shipped one)
    notes: str = ""
    palette: tuple[tuple[int, int, int], ...] = field(default=())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


EMBEDDED = Preset(
    name="embedded",
    class_names=EMBEDDED_CLASSES,
    resolution=32,
    # From `datasetddpm probe` on the shipped model (docs/probe/probe.png): alone, the middle blocks
    # 1-2 at t <= 200 are best and t = 400 is clearly worse; the preset stacks all six blocks at the
    # three best steps (d = 3 x 320 = 960 features per pixel).
    features=FeatureSpec(blocks=(0, 1, 2, 3, 4, 5), steps=(10, 50, 100), noise_seed=0),
    model="embedded",
    notes="procedural critters, 32 px, 7 classes",
)

PRESETS: dict[str, Preset] = {EMBEDDED.name: EMBEDDED}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        from .errors import OptionError
        raise OptionError("--preset", f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]
