"""Named presets. The embedded default runs everywhere; the paper's six datasets need the user's ADM checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

from .data.images import palette_for
from .data.procedural import CLASS_NAMES as EMBEDDED_CLASSES
from .ensemble.model import hidden_sizes
from .generators.base import FeatureSpec
from .generators.embedded import EMBEDDED_SCHEDULER, EMBEDDED_UNET  # noqa: F401  (re-exported)

from .paths import ASSETS, EMBEDDED_MODEL_DIR, EMBEDDED_ORACLE_DIR  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class DeepLabSettings:
    """The segmenter DatasetDDPM trains on generated pairs: `train-deeplab` options of the same names.
    Paper section 4 (Adam 1e-3, batch 8, 20 epochs); DeepLabV3-ResNet101 as the reference code builds it.

    The part of `DeepLabTrainConfig` a preset fixes (model and optimiser), applied by `train-deeplab
    --preset` through `workflows.deeplab_config`; a run's own settings (seed, augmentation, loader
    workers, `--real`) are not a dataset's. Kept apart so that `presets` imports no trainer; every field
    must be a DeepLabTrainConfig field (tests/test_structure.py checks it)."""

    arch: str = "deeplabv3"
    encoder: str = "resnet101"
    input_scale: int = 1
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3


@dataclass(frozen=True)
class Preset:
    name: str
    class_names: tuple[str, ...]  # one name per model output, the ignore label's slot included if < K
    resolution: int
    features: FeatureSpec
    ignore_label: int = 255
    model: str | None = None  # default model ("embedded" for the shipped one); None: the user must give --model
    notes: str = ""
    palette: tuple[tuple[int, int, int], ...] = field(default=())
    hidden: tuple[int, int] | None = None  # MLP hidden sizes; None: by class count, as the ensemble does
    adm_flags: str | None = None  # ADM flag set for `--model adm:<flags>:<file.pt>` / `convert-adm --flags`
    checkpoint: str | None = None  # file name of the public ADM checkpoint the paper used
    split: tuple[int, int] | None = None  # labelled real images (train, test) of the paper's dataset
    deeplab: DeepLabSettings = field(default_factory=DeepLabSettings)
    paper_miou: tuple[float, float | None] | None = None  # paper Table 2: (DDPM direct, DatasetDDPM)

    @property
    def num_classes(self) -> int:
        """Model outputs (K); class ids are 0..K-1."""
        return len(self.class_names)

    @property
    def evaluated_classes(self) -> tuple[str, ...]:
        """The classes mIoU averages over: an ignore label inside 0..K-1 is not one of them."""
        return tuple(n for k, n in enumerate(self.class_names) if k != self.ignore_label)

    @property
    def mlp_hidden(self) -> tuple[int, int]:
        return self.hidden or hidden_sizes(self.num_classes)


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
    palette=tuple(palette_for(len(EMBEDDED_CLASSES))),
    # The demo's segmenter: 32-px images need an upsampled input (study segmenter: x2 over x1), and a
    # ResNet-18 from scratch fits a CPU budget; 12 epochs, as the demo (6 left it underfit).
    # U-Net: +6.9 mIoU over DeepLabV3 on the demo's pairs at 12 epochs (README, segmenter studies)
    deeplab=DeepLabSettings(arch="unet", encoder="resnet18", input_scale=2, epochs=12),
)

# The paper's setting for its 256-px ADMs, not tuned per dataset: decoder output_blocks {5,6,7,8,12} at
# t in {50,150,250} (paper section 3.2, d = 8448). The reference configs agree:
# yandex-research/ddpm-segmentation experiments/<name>/ddpm.json at commit c4916721 ("blocks": [5,6,7,8,12],
# "steps": [50,150,250], "dim": [256,256,8448]); older revisions of those files had [6,7,8,9] / [50..350].
PAPER_FEATURES = FeatureSpec(blocks=(5, 6, 7, 8, 12), steps=(50, 150, 250), noise_seed=0)


def _paper(name: str, classes: str, *, adm_flags: str, checkpoint: str, split: tuple[int, int],
           paper_miou: tuple[float, float | None], ignore_label: int = 255, notes: str = "") -> Preset:
    names = tuple(c.strip() for c in classes.split(","))
    if ignore_label < 255:  # the ignore label is an output slot (bedroom_28: id 0), real classes follow it
        names = names[:ignore_label] + ("unlabelled",) + names[ignore_label:]
    return Preset(name=name, class_names=names, resolution=256, features=PAPER_FEATURES, ignore_label=ignore_label,
                  model=None, notes=notes, palette=tuple(palette_for(len(names))),
                  hidden=hidden_sizes(len(names)),  # paper appendix C: (128, 32) below 30 classes, else (256, 128)
                  adm_flags=adm_flags, checkpoint=checkpoint, split=split, paper_miou=paper_miou)


# Class names: paper appendix E.1, in id order. Ignore labels and output counts: the reference configs'
# "ignore_label" / "number_class" (bedroom_28: 29 outputs, 0 = unlabelled; the others 255). Splits: paper
# Table 1 (= the configs' training_number / testing_number). mIoU: paper Table 2.
PAPER_PRESETS = (
    _paper("bedroom_28", "bed, footboard, headboard, side rail, carpet, ceiling, chandelier, curtain, cushion, floor, "
           "table, table top, picture, pillow, lamp column, lamp shade, wall, window, curtain rod, window frame, "
           "chair, picture frame, plinth, door, pouf, wardrobe, plant, table staff",
           adm_flags="lsun_256", checkpoint="lsun_bedroom.pt", split=(40, 20), paper_miou=(49.4, 47.9),
           ignore_label=0, notes="LSUN bedrooms; id 0 = unlabelled (ignored), classes 1-28"),
    _paper("ffhq_34", "background, head, cheek, chin, ear, helix, lobule, bottom lid, eyelashes, iris, pupil, sclera, "
           "tear duct, top lid, eyebrow, forehead, frown, hair, sideburns, jaw, moustache, inferior lip, "
           "oral commissure, superior lip, teeth, neck, nose, ala of nose, bridge, nose tip, nostril, philtrum, "
           "temple, wrinkles",
           adm_flags="ffhq_256", checkpoint="ffhq.pt", split=(20, 20), paper_miou=(59.1, 56.0),
           notes="FFHQ-256 faces"),
    _paper("cat_15", "background, back, belly, chest, leg, paw, head, ear, eye, mouth, tongue, tail, nose, whiskers, neck",
           adm_flags="lsun_256", checkpoint="lsun_cat.pt", split=(30, 20), paper_miou=(53.7, 47.6),
           notes="LSUN cats"),
    _paper("horse_21", "background, person, back, barrel, bridle, chest, ear, eye, forelock, head, hoof, leg, mane, "
           "muzzle, neck, nostril, tail, thigh, saddle, shoulder, leg protection",
           adm_flags="lsun_256", checkpoint="lsun_horse.pt", split=(30, 30), paper_miou=(65.0, 60.8),
           notes="LSUN horses"),
    _paper("celeba_19", "background, cloth, ear_r, eye_g, hair, hat, l_brow, l_ear, l_eye, l_lip, mouth, neck, neck_l, "
           "nose, r_brow, r_ear, r_eye, skin, u_lip",
           adm_flags="ffhq_256", checkpoint="ffhq.pt", split=(20, 500), paper_miou=(59.9, None),
           notes="CelebAMask-HQ resized to 256; features from the FFHQ-256 model"),
    _paper("ade_bedroom_30", "wall, bed, floor, table, lamp, ceiling, painting, windowpane, pillow, curtain, cushion, "
           "door, chair, cabinet, chest, mirror, rug, armchair, book, sconce, plant, wardrobe, clock, light, flower, "
           "vase, fan, box, shelf, television",
           adm_flags="lsun_256", checkpoint="lsun_bedroom.pt", split=(50, 650), paper_miou=(34.6, None),
           notes="ADE20K bedrooms, 256 crops; features from the LSUN-bedroom model"),
)

PRESETS: dict[str, Preset] = {p.name: p for p in (EMBEDDED, *PAPER_PRESETS)}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        from .errors import OptionError
        raise OptionError("--preset", f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


# `datasetddpm presets`: plain aligned text rather than a rich table: rich truncates cells to the terminal
# width, and preset names and numbers must stay whole (users copy them into commands).
LISTING_COLUMNS = ("name", "classes", "ignore", "px", "blocks", "steps", "MLP", "ADM flags", "train/test")


def describe(p: Preset) -> dict[str, str]:
    """A preset as printable fields (one line each)."""
    def join(xs) -> str:
        return ",".join(str(x) for x in xs)
    dl = p.deeplab
    ddpm, dataset_ddpm = p.paper_miou or (None, None)
    return {
        "name": p.name,
        "notes": p.notes,
        "outputs": f"{p.num_classes} (mIoU over {len(p.evaluated_classes)} classes)",
        "ignore_label": str(p.ignore_label),
        "resolution": str(p.resolution),
        "blocks": join(p.features.blocks),
        "steps": join(p.features.steps),
        "mlp_hidden": join(p.mlp_hidden),
        "model": p.model or f"yours: --model adm:{p.adm_flags}:<{p.checkpoint}>",
        "adm_flags": p.adm_flags or "-",
        "split": f"{p.split[0]}/{p.split[1]}" if p.split else "-",
        "deeplab": f"--arch {dl.arch} --encoder {dl.encoder} --input-scale {dl.input_scale} --epochs {dl.epochs} "
                   f"--batch-size {dl.batch_size} --lr {dl.lr:g}",
        "paper_miou": f"DDPM {ddpm}, DatasetDDPM {dataset_ddpm or '-'}" if ddpm else "-",
    }


def preset_details(p: Preset) -> list[str]:
    """`datasetddpm presets NAME`: every field, then the class ids, names and colours."""
    lines = [f"{key}: {value}" for key, value in describe(p).items()]
    lines.append("classes (id, name, colour):")
    for k, (cls, rgb) in enumerate(zip(p.class_names, p.palette)):
        lines.append(f"  {k:3d}  {cls + (' (ignored)' if k == p.ignore_label else ''):<28} #{bytes(rgb).hex()}")
    return lines


def preset_listing() -> list[str]:
    """`datasetddpm presets`: one aligned row per preset."""
    rows = [LISTING_COLUMNS]
    for p in PRESETS.values():
        d = describe(p)
        rows.append((p.name, str(len(p.evaluated_classes)), str(p.ignore_label), str(p.resolution), d["blocks"],
                     d["steps"], d["mlp_hidden"], d["adm_flags"], d["split"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(LISTING_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return lines + ["`datasetddpm presets NAME` shows a preset's class names, model and DeepLab settings."]
