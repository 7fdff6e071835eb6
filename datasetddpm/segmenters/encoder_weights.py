"""`train-deeplab --encoder-weights`: a pretrained encoder for the segmenter instead of a random one.

The paper's reference code trains DeepLab from an ImageNet backbone. A user gives either a local encoder
state dict (`.safetensors`, or a weights-only PyTorch file: nothing is unpickled beyond tensors), loaded
strictly into the segmenter's encoder, or `imagenet`: smp's own pretrained file, downloaded from the
Hugging Face hub (or found in its cache) by the command before anything is written, so that the worker
processes only ever read a local file. The file's sha256 is part of the run's resume key: the weights,
not the path, decide what a run trains from.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..errors import InputError, OptionError
from ..io import load_state_dict_file, load_state_strict

IMAGENET = "imagenet"


def resolve_encoder_weights(spec: str, encoder: str) -> tuple[str, str]:
    """(local file, its sha256) for an --encoder-weights value: a path, or `imagenet` (downloaded)."""
    path = _download_imagenet(encoder) if spec == IMAGENET else Path(spec).expanduser()
    if not path.is_file():
        raise InputError(path, "--encoder-weights: file not found (a .safetensors or weights-only .pt encoder "
                               "state dict, or 'imagenet')")
    return str(path.resolve()), file_sha256(path)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_imagenet(encoder: str) -> Path:
    import huggingface_hub
    import segmentation_models_pytorch as smp
    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {})
    if IMAGENET not in settings:
        raise OptionError("--encoder-weights", f"smp has no ImageNet weights for encoder {encoder!r} (it has: "
                                               f"{', '.join(settings) or 'none'}); pass a local state dict PATH")
    repo, revision = settings[IMAGENET]["repo_id"], settings[IMAGENET]["revision"]
    try:
        return Path(huggingface_hub.hf_hub_download(repo, filename="model.safetensors", revision=revision))
    except Exception as e:  # offline, DNS, proxy, HTTP errors: all mean "no weights", told in one line
        reason = (str(e).splitlines() or [""])[0] or type(e).__name__
        raise OptionError("--encoder-weights", f"imagenet: cannot download {repo} (offline? {reason}); download its "
                                               "model.safetensors on a connected machine and pass that PATH") from None


def load_encoder_weights(encoder: torch.nn.Module, path: str | Path, *, meta: bool = False) -> None:
    """Load the state dict in `path` strictly into `encoder` (missing / unexpected keys or shapes: one line).
    `meta`: only check keys and shapes against an encoder built on the meta device (nothing is read)."""
    state = load_state_dict_file(path, meta=meta)
    load_state_strict(encoder, state, path, assign=meta)
