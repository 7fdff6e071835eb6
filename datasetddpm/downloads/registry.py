"""What `datasetddpm download NAME` can fetch: the paper's ADM checkpoints and the reference datasets.

Every URL below is copied from a public reference script or README, named in `source`; none is guessed.
The publishers state no byte size or sha256 for any of these files (the reference README gives the
dataset archive as "~47Mb", an estimate), so `size` and `sha256` are None: a download is checked by what
uses it instead (a checkpoint converted and loaded strictly as `convert-adm` does, a dataset read as
`train-ensemble` reads it) and its measured size and sha256 are recorded beside it. Fill them in here
only from a publisher's statement."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import OptionError

GUIDED_DIFFUSION = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021"
YANDEX = "https://storage.yandexcloud.net/yandex-research/ddpm-segmentation"
GUIDED_README = "openai/guided-diffusion README.md (\"LSUN bedroom/cat/horse\" links)"
REFERENCE_SCRIPT = "yandex-research/ddpm-segmentation checkpoints/ddpm/download_checkpoint.sh and README.md"
DATA_SCRIPT = "yandex-research/ddpm-segmentation datasets/download_datasets.sh and README.md"


@dataclass(frozen=True)
class Entry:
    """One downloadable file: URLs in the order tried (the first is the publisher's), licence and origin."""

    name: str
    kind: str  # "checkpoint" (an ADM .pt, converted after download) or "dataset" (a .tar.gz, extracted)
    filename: str
    urls: tuple[str, ...]
    licence: str
    source: str  # where the URLs were found
    presets: tuple[str, ...]
    adm_flags: str | None = None  # checkpoints: the flag set `convert-adm --flags` takes
    size: int | None = None  # bytes, only where the publisher states it
    sha256: str | None = None  # only where the publisher states it

    @property
    def model_dir(self) -> str:
        """A checkpoint's converted model folder, beside the .pt (`--model <dir>/<name>`)."""
        return self.name


def _lsun(name: str, presets: tuple[str, ...], scene: str) -> Entry:
    return Entry(name=name, kind="checkpoint", filename=f"{name}.pt",
                 urls=(f"{GUIDED_DIFFUSION}/{name}.pt", f"{YANDEX}/models/ddpm_checkpoints/{name}.pt"),
                 licence=f"openai/guided-diffusion repository: MIT (its release states no separate licence for "
                         f"the weights); trained on LSUN {scene} images, which keep LSUN's terms", source=f"{GUIDED_README}; mirror: {REFERENCE_SCRIPT}",
                 presets=presets, adm_flags="lsun_256")


REGISTRY: dict[str, Entry] = {e.name: e for e in (
    _lsun("lsun_bedroom", ("bedroom_28", "ade_bedroom_30"), "Bedroom"),
    _lsun("lsun_cat", ("cat_15",), "Cat"),
    _lsun("lsun_horse", ("horse_21",), "Horse"),
    Entry(name="ffhq", kind="checkpoint", filename="ffhq.pt", urls=(f"{YANDEX}/models/ddpm_checkpoints/ffhq.pt",),
          licence="yandex-research/ddpm-segmentation repository: MIT (trained by its authors; no separate licence "
                  "stated for the weights); trained on FFHQ-256 images, which keep FFHQ's terms", source=REFERENCE_SCRIPT, presets=("ffhq_34", "celeba_19"),
          adm_flags="ffhq_256"),
    Entry(name="datasets", kind="dataset", filename="datasets.tar.gz", urls=(f"{YANDEX}/datasets.tar.gz",),
          licence="yandex-research/ddpm-segmentation repository: MIT (the archive states no licence of its own); "
                  "the images keep the terms of LSUN, FFHQ, CelebAMask-HQ and ADE20K",
          source=DATA_SCRIPT, presets=("bedroom_28", "ffhq_34", "cat_15", "horse_21", "celeba_19", "ade_bedroom_30")),
)}


def get_entry(name: str) -> Entry:
    if name not in REGISTRY:
        raise OptionError("NAME", f"unknown download {name!r}; choose from {', '.join(REGISTRY)}")
    return REGISTRY[name]


def checkpoint_for(preset_checkpoint: str) -> Entry:
    """The registry entry of a preset's `checkpoint` file name (e.g. lsun_bedroom.pt)."""
    return next(e for e in REGISTRY.values() if e.filename == preset_checkpoint)
