"""Standard segmenters (segmentation-models-pytorch) behind one factory, with an input scale.

Small images need care: at 32 px DeepLabV3's output stride 8 leaves 4x4 maps. `input_scale`
upsamples the input inside the model and brings the logits back to the input size, so training,
inference and checkpoints all see images at their own resolution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import OptionError
from ..io import load_state_strict, load_tensors, read_checkpoint_meta, write_checkpoint

FORMAT = "datasetddpm.segmenter"
ARCHITECTURES = ("deeplabv3", "deeplabv3plus", "unet")
ARCH_NAMES = {"deeplabv3": "DeepLabV3", "deeplabv3plus": "DeepLabV3+", "unet": "U-Net"}  # for tables and logs


@dataclass(frozen=True)
class SegmenterConfig:
    num_classes: int
    arch: str = "deeplabv3"  # one of ARCHITECTURES
    encoder: str = "resnet18"  # any smp encoder; resnet101 as in the reference code
    input_scale: int = 1  # upsample factor applied to the input inside the model
    class_names: tuple[str, ...] = ()
    ignore_label: int = 255
    encoder_depth: int = 5  # unet: encoder stages used (a ResNet's unused last stages are not built)
    decoder_channels: tuple[int, ...] = ()  # unet: one width per stage, () = smp's default


# smp arguments per architecture beyond the shared ones: DeepLabV3 at output stride 8 as in the paper's
# era, V3+ at its usual 16.
_ARCH_KWARGS = {"deeplabv3": {"encoder_output_stride": 8}, "deeplabv3plus": {"encoder_output_stride": 16}, "unet": {}}


def _smp_model(cfg: SegmenterConfig) -> torch.nn.Module:
    import segmentation_models_pytorch as smp
    if cfg.arch not in ARCHITECTURES:
        raise OptionError("--arch", f"unknown architecture {cfg.arch!r}; choose from {', '.join(ARCHITECTURES)}")
    kwargs = dict(_ARCH_KWARGS[cfg.arch])
    if cfg.arch == "unet":
        kwargs["encoder_depth"] = cfg.encoder_depth
        if cfg.decoder_channels:
            kwargs["decoder_channels"] = tuple(cfg.decoder_channels)
    try:  # offline: never pretrained weights
        net = smp.create_model(cfg.arch, encoder_name=cfg.encoder, encoder_weights=None, classes=cfg.num_classes,
                               **kwargs)
    except (KeyError, ValueError, AssertionError) as e:
        raise OptionError("--encoder", f"cannot build {cfg.arch} with encoder {cfg.encoder!r}: {e}") from None
    # smp keeps a ResNet's stages past encoder_depth although its forward never runs them: drop them,
    # so they are neither stored nor counted.
    for stage in range(max(cfg.encoder_depth, 1), 5):
        if cfg.arch == "unet" and hasattr(net.encoder, f"layer{stage}"):
            delattr(net.encoder, f"layer{stage}")
    return net


class Segmenter(torch.nn.Module):
    """(B, 3, H, W) uint8 or [-1, 1] float images -> (B, K, H, W) logits."""

    def __init__(self, cfg: SegmenterConfig):
        super().__init__()
        self.cfg = cfg
        self.net = _smp_model(cfg)
        self.divisor = 16 if cfg.arch == "deeplabv3" else 2 ** cfg.encoder_depth if cfg.arch == "unet" else 32

    def check_size(self, height: int, width: int) -> str | None:
        h, w = height * self.cfg.input_scale, width * self.cfg.input_scale
        if h % self.divisor or w % self.divisor:
            return (f"image size {width}x{height} (x{self.cfg.input_scale} = {w}x{h}) must be a multiple of "
                    f"{self.divisor} for {self.cfg.arch}; pad or resize the images or change --input-scale")
        return None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images
        size = x.shape[-2:]
        if self.cfg.input_scale != 1:
            x = F.interpolate(x, scale_factor=self.cfg.input_scale, mode="bilinear", align_corners=False)
        logits = self.net(x)
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits


def create_segmenter(cfg: SegmenterConfig) -> Segmenter:
    return Segmenter(cfg)


def save_segmenter(directory: str | Path, model: Segmenter, extra: dict | None = None) -> None:
    write_checkpoint(directory, model.state_dict(), meta_file="config.json", weights_file="model.safetensors",
                     fmt=FORMAT, body={"segmenter": asdict(model.cfg), **(extra or {})})


def load_segmenter(directory: str | Path) -> Segmenter:
    raw = dict(read_checkpoint_meta(directory, "config.json", FORMAT, "segmenter")["segmenter"])
    raw["class_names"] = tuple(raw.get("class_names", ()))
    raw["decoder_channels"] = tuple(raw.get("decoder_channels", ()))
    model = create_segmenter(SegmenterConfig(**raw))
    weights = Path(directory) / "model.safetensors"
    load_state_strict(model, load_tensors(weights), weights)
    return model.eval()


@torch.no_grad()
def predict(model: Segmenter, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, H, W) int64 class ids on the CPU; batches go to the model's device."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(images[i:i + batch_size].to(device)).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])
