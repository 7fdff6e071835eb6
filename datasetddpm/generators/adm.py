"""guided-diffusion (ADM) checkpoints: flags, conversion to a diffusers `UNet2DModel`, loading.

ADM `.pt` files are bare state dicts; the architecture lives in the command-line flags the model was
trained with. `ADMFlags` holds those flags, `adm_unet_config` maps them onto a `UNet2DModel` config
and `convert_adm_state_dict` renames the weights. The mapping is exact (DESIGN.md §3); flag
combinations diffusers cannot express are refused with an `OptionError` instead of loading a
model that silently computes something else.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

from ..errors import InputError, OptionError
from ..io import load_state_dict_file, read_json, write_json
from .diffusion import DiffusionGenerator, build_unet

ADM_FLAGS_FILE = "adm_flags.json"  # provenance, written beside a converted model


@dataclass(frozen=True)
class ADMFlags:
    """The ADM flags that fix a model's architecture and noise schedule (defaults: ADM's script_util)."""

    image_size: int = 64
    num_channels: int = 128
    num_res_blocks: int = 2
    channel_mult: tuple[float, ...] | str = ""  # "" = ADM's default for the image size
    attention_resolutions: str = "16,8"  # image resolutions (px) with attention, as ADM's comma string
    num_heads: int = 4
    num_head_channels: int = -1  # -1: use num_heads; else a fixed width per head
    num_heads_upsample: int = -1  # -1: same as num_heads
    learn_sigma: bool = False
    resblock_updown: bool = False
    use_scale_shift_norm: bool = True
    use_new_attention_order: bool = False
    dropout: float = 0.0  # training only; kept for the record
    class_cond: bool = False
    diffusion_steps: int = 1000
    noise_schedule: str = "linear"
    predict_xstart: bool = False
    rescale_timesteps: bool = False
    use_fp16: bool = False  # ignored: weights are loaded as float32

    def mults(self) -> tuple[float, ...]:
        if isinstance(self.channel_mult, str) and self.channel_mult.strip():
            return tuple(float(m) for m in self.channel_mult.split(","))
        if not isinstance(self.channel_mult, str):
            return tuple(float(m) for m in self.channel_mult)
        defaults = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
        if self.image_size not in defaults:
            raise OptionError("channel_mult", f"ADM has no default for image_size {self.image_size}; give channel_mult")
        return tuple(float(m) for m in defaults[self.image_size])

    def widths(self) -> list[int]:
        return [int(m * self.num_channels) for m in self.mults()]

    def attention_levels(self) -> list[bool]:
        """Per level: does it have attention? ADM stores downsample rates ds = image_size // resolution."""
        ds = {self.image_size // int(r) for r in self.attention_resolutions.split(",") if r.strip()}
        return [2 ** level in ds for level in range(len(self.mults()))]

    def to_dict(self) -> dict:
        d = asdict(self)
        if not isinstance(self.channel_mult, str):
            d["channel_mult"] = ",".join(f"{m:g}" for m in self.channel_mult)
        return d


# The paper's 256-px models. Flags from openai/guided-diffusion README ("LSUN models"), the same string
# as MODEL_FLAGS in yandex-research/ddpm-segmentation scripts/ddpm/train_interpreter.sh, whose README
# says FFHQ-256 "is trained by ourselves using the same model parameters as for the LSUN models".
_PAPER_256 = ADMFlags(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8",
                      num_head_channels=64, learn_sigma=True, resblock_updown=True, use_scale_shift_norm=True,
                      dropout=0.1, diffusion_steps=1000, noise_schedule="linear", use_fp16=True)
ADM_FLAG_SETS: dict[str, ADMFlags] = {"lsun_256": _PAPER_256, "ffhq_256": _PAPER_256}

# ADM flags that only affect training or sampling scripts: accepted in a flags file and ignored.
_IGNORED = {"use_checkpoint", "timestep_respacing", "use_kl", "rescale_learned_sigmas", "batch_size", "num_samples",
            "use_ddim", "clip_denoised", "model_path", "lr", "weight_decay", "microbatch", "ema_rate"}


def _coerce(name: str, kind: type, value, source):
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"  # ADM's str2bool spelling, as copied from a shell script
        if isinstance(value, bool):
            return value
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif kind is str and isinstance(value, str):
        return value
    raise InputError(source, f"flag {name}: expected {kind.__name__}, got {value!r}")


def flags_from_dict(data: dict, source="<flags>") -> ADMFlags:
    """ADMFlags from a dict of ADM flag names (a flags JSON file); unknown names are an error."""
    if not isinstance(data, dict):
        raise InputError(source, "ADM flags must be a JSON object of flag names")
    types = {f.name: f.type for f in fields(ADMFlags)}
    unknown = sorted(set(data) - set(types) - _IGNORED)
    if unknown:
        raise InputError(source, f"unknown ADM flag(s): {', '.join(unknown)}")
    kinds = {"int": int, "float": float, "bool": bool, "str": str}
    values = {}
    for name, value in data.items():
        if name in _IGNORED:
            continue
        if name == "channel_mult":
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            values[name] = _coerce(name, str, value, source)
        elif name == "attention_resolutions" and isinstance(value, list):
            values[name] = ",".join(str(v) for v in value)
        else:
            values[name] = _coerce(name, kinds[types[name]], value, source)
    flags = replace(ADMFlags(), **values)
    try:
        flags.mults(), flags.attention_levels()
    except ValueError:
        raise InputError(source, f"channel_mult {flags.channel_mult!r} / attention_resolutions "
                                 f"{flags.attention_resolutions!r}: expected comma-separated numbers") from None
    return flags


def resolve_flags(spec: str | ADMFlags) -> tuple[ADMFlags, str]:
    """A flag-set name or a flags JSON path -> (flags, canonical spec to record)."""
    if isinstance(spec, ADMFlags):
        return spec, "<flags>"
    if spec in ADM_FLAG_SETS:
        return ADM_FLAG_SETS[spec], spec
    path = Path(spec)
    if path.suffix != ".json" and not path.exists():
        raise OptionError("--flags", f"unknown flag set {spec!r}; use one of {', '.join(ADM_FLAG_SETS)} "
                                     "or a JSON file of ADM flags")
    return flags_from_dict(read_json(path), path), str(path.resolve())


# ---- architecture ----------------------------------------------------------------------------------
def _head_dim(flags: ADMFlags, widths: list[int], attn: list[bool]) -> int | None:
    """diffusers has one `attention_head_dim` for every attention layer; refuse what it cannot express."""
    enc = [w for w, a in zip(widths, attn) if a] + [widths[-1]]  # encoder levels + the middle block
    dec = [w for w, a in zip(widths, attn) if a]
    if flags.num_head_channels != -1:
        bad = sorted({w for w in enc if w % flags.num_head_channels})
        if flags.num_head_channels <= 0 or bad:
            raise OptionError("num_head_channels",
                              f"{flags.num_head_channels} does not divide attention width(s) {bad}")
        return flags.num_head_channels
    up = flags.num_heads if flags.num_heads_upsample == -1 else flags.num_heads_upsample
    layers = [(w, flags.num_heads) for w in enc] + [(w, up) for w in dec]
    if any(h <= 0 or w % h for w, h in layers):
        raise OptionError("num_heads", f"num_heads={flags.num_heads}/num_heads_upsample={up} do not divide the "
                                       f"attention widths {sorted({w for w, _ in layers})}")
    dims = sorted({w // h for w, h in layers})
    if len(dims) == 1:
        return dims[0]
    if all(h == 1 for _, h in layers):
        return None  # diffusers' None = one head as wide as each block
    option = "num_heads_upsample" if up != flags.num_heads else "num_heads"
    raise OptionError(option, f"num_heads={flags.num_heads}, num_heads_upsample={up} with num_head_channels=-1 give "
                              f"attention heads of different widths {dims}; diffusers UNet2DModel has one "
                              "attention_head_dim for all layers (models with num_head_channels, like the paper's, "
                              "convert)")


def adm_unet_config(flags: ADMFlags) -> dict:
    """The diffusers `UNet2DModel` config of an ADM model (DESIGN.md §3)."""
    if flags.class_cond:
        raise OptionError("class_cond", "class-conditional ADM models are not supported: the toolkit samples and "
                                        "extracts features unconditionally")
    mults, widths, attn = flags.mults(), flags.widths(), flags.attention_levels()
    if mults[0] != 1:
        # ADM's timestep embedding is num_channels wide; diffusers makes it as wide as the first level.
        raise OptionError("channel_mult", f"first multiplier must be 1 to convert to diffusers (got {mults[0]:g})")
    bad = [w for w in widths if w % 32]
    if bad:
        raise OptionError("num_channels", f"ADM's GroupNorm has 32 groups: every level width must be a multiple of "
                                          f"32 (got {bad})")
    if flags.rescale_timesteps and flags.diffusion_steps != 1000:
        raise OptionError("rescale_timesteps", "only supported with diffusion_steps=1000 (where it changes nothing)")
    if flags.image_size % 2 ** (len(mults) - 1):
        raise OptionError("image_size", f"{flags.image_size} is not divisible by 2^{len(mults) - 1}")
    updown = flags.resblock_updown
    plain_down = "ResnetDownsampleBlock2D" if updown else "DownBlock2D"
    plain_up = "ResnetUpsampleBlock2D" if updown else "UpBlock2D"
    return dict(
        sample_size=flags.image_size, in_channels=3, out_channels=6 if flags.learn_sigma else 3,
        block_out_channels=widths, layers_per_block=flags.num_res_blocks,
        down_block_types=["AttnDownBlock2D" if a else plain_down for a in attn],
        up_block_types=["AttnUpBlock2D" if a else plain_up for a in reversed(attn)],
        downsample_type="resnet" if updown else "conv", upsample_type="resnet" if updown else "conv",
        downsample_padding=1, attention_head_dim=_head_dim(flags, widths, attn),
        norm_num_groups=32, attn_norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
        resnet_time_scale_shift="scale_shift" if flags.use_scale_shift_norm else "default",
        flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1, dropout=flags.dropout, add_attention=True,
    )


def adm_scheduler_config(flags: ADMFlags) -> dict:
    """DDPMScheduler config with ADM's training schedule and variance type."""
    cfg = dict(num_train_timesteps=flags.diffusion_steps, clip_sample=True, clip_sample_range=1.0,
               prediction_type="sample" if flags.predict_xstart else "epsilon",
               # ADM: learned sigma interpolates between beta and beta-tilde; else FIXED_LARGE (sigma_small=False)
               variance_type="learned_range" if flags.learn_sigma else "fixed_large")
    if flags.noise_schedule == "linear":
        scale = 1000 / flags.diffusion_steps  # ADM keeps the schedule's shape for any number of steps
        cfg.update(beta_schedule="linear", beta_start=scale * 1e-4, beta_end=scale * 0.02)
    elif flags.noise_schedule == "cosine":
        cfg.update(beta_schedule="squaredcos_cap_v2")  # same alpha-bar formula (s=0.008, max beta 0.999)
    else:
        raise OptionError("noise_schedule", f"unknown schedule {flags.noise_schedule!r}; ADM has linear and cosine")
    return cfg


# ---- weights ---------------------------------------------------------------------------------------
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_ATTENTION = {"group_norm": "norm", "to_out.0": "proj_out", "to_q": "qkv", "to_k": "qkv", "to_v": "qkv"}
_TOP = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _adm_module(path: str, nrb: int, attn: list[bool], updown: bool) -> tuple[str, dict[str, str]]:
    """The ADM module holding diffusers module `path`, and the child-name map inside it."""
    if path in _TOP:
        return _TOP[path], {"": ""}
    p = path.split(".")
    if p[0] == "mid_block":  # ADM's middle_block: ResBlock, AttentionBlock, ResBlock
        return ("middle_block.1", _ATTENTION) if p[1] == "attentions" else (f"middle_block.{2 * int(p[2])}", _RESNET)
    block, kind, j = int(p[1]), p[2], int(p[3])
    if p[0] == "down_blocks":
        n = 1 + block * (nrb + 1)  # input_blocks[0] is conv_in; each level: nrb blocks + its downsample
        if kind == "downsamplers":
            return f"input_blocks.{n + nrb}.0", _RESNET if updown else {"conv": "op"}
        return f"input_blocks.{n + j}.{0 if kind == 'resnets' else 1}", _RESNET if kind == "resnets" else _ATTENTION
    n = block * (nrb + 1)
    level_attn = list(reversed(attn))[block]
    if kind == "upsamplers":
        return f"output_blocks.{n + nrb}.{2 if level_attn else 1}", _RESNET if updown else {"conv": "conv"}
    return f"output_blocks.{n + j}.{0 if kind == 'resnets' else 1}", _RESNET if kind == "resnets" else _ATTENTION


_DEPTH = {"conv_in": 1, "conv_norm_out": 1, "conv_out": 1, "time_embedding": 2, "mid_block": 3,
          "down_blocks": 4, "up_blocks": 4}  # name parts that address a module, e.g. down_blocks.1.resnets.0


def _adm_key(key: str, nrb: int, attn: list[bool], updown: bool) -> str:
    parts = key.split(".")
    depth = _DEPTH[parts[0]]
    module, children = _adm_module(".".join(parts[:depth]), nrb, attn, updown)
    return ".".join(x for x in (module, children[".".join(parts[depth:-1])], parts[-1]) if x)


def _split_qkv(t: torch.Tensor, slot: int, heads: int, legacy: bool) -> torch.Tensor:
    """q, k or v (slot 0/1/2) from ADM's fused 1x1-conv qkv weight (3C, C, 1) or bias (3C,)."""
    c, tail = t.shape[0] // 3, t.shape[1:]
    if legacy:  # QKVAttentionLegacy splits heads first: rows are (head, q|k|v, channel)
        part = t.reshape(heads, 3, c // heads, *tail)[:, slot]
    else:  # QKVAttention splits q|k|v first
        part = t.reshape(3, c, *tail)[slot]
    return part.reshape(c, *tail)


def _empty_unet(config: dict) -> UNet2DModel:
    """A UNet2DModel without allocated weights (skips the random init of up to 550M parameters)."""
    with torch.device("meta"):
        return UNet2DModel.from_config(config)


def convert_adm_state_dict(sd: dict[str, torch.Tensor], flags: ADMFlags, source="<state dict>") -> dict:
    """ADM state dict -> diffusers `UNet2DModel` state dict (float32), named after `adm_unet_config(flags)`."""
    config = adm_unet_config(flags)
    target = _empty_unet(config)
    nrb, attn, updown = flags.num_res_blocks, flags.attention_levels(), flags.resblock_updown
    out, used, missing, wrong = {}, set(), [], []
    for key, ref in target.state_dict().items():
        adm = _adm_key(key, nrb, attn, updown)
        if adm not in sd:
            missing.append(adm)
            continue
        used.add(adm)
        t = sd[adm].detach().to(torch.float32)
        try:
            leaf = key.split(".")[-2]
            if leaf in ("to_q", "to_k", "to_v"):
                heads = target.get_submodule(key.rsplit(".", 2)[0]).heads
                t = _split_qkv(t, "qkv".index(leaf[-1]), heads, legacy=not flags.use_new_attention_order)
            if t.dim() == 3 and ref.dim() == 2:  # ADM attention uses 1x1 conv1d, diffusers Linear
                t = t.squeeze(-1)
        except RuntimeError:  # a reshape that does not fit: reported below as a shape mismatch
            pass
        if t.shape != ref.shape:
            wrong.append(f"{adm} {tuple(sd[adm].shape)}")
            continue
        out[key] = t.contiguous()
    unexpected = sorted(set(sd) - used)
    if missing or unexpected or wrong:
        parts = []
        for name, keys in (("missing keys", sorted(set(missing))), ("unexpected keys", unexpected),
                           ("shape mismatch (shape in the file)", list(dict.fromkeys(wrong)))):
            if keys:
                shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{name}: {shown}")
        raise InputError(source, "ADM checkpoint does not match the flags; " + "; ".join(parts))
    return out


def adm_unet(pt_path: str | Path, flags: ADMFlags, meta: bool = False) -> UNet2DModel:
    """The diffusers UNet of an ADM `.pt` (or .safetensors) state dict, weights checked strictly (`meta`:
    shapes only, on the meta device, for validation without reading the weights)."""
    sd = convert_adm_state_dict(load_state_dict_file(pt_path, meta), flags, pt_path)
    return build_unet(adm_unet_config(flags), sd, pt_path).eval()


def load_adm(path: str | Path, flags: ADMFlags | str, *, device: str | torch.device = "cpu"):
    """An ADM checkpoint as a `DiffusionGenerator` (converted in memory). Its `source` is the
    `adm:<flags>:<path>` string that reloads it (what an ensemble records as its model)."""
    flags, spec = resolve_flags(flags)
    unet = adm_unet(path, flags, meta=torch.device(device).type == "meta")
    return DiffusionGenerator(unet.to(device), adm_scheduler_config(flags), source=f"adm:{spec}:{Path(path).resolve()}")


def load_adm_string(model: str, device: str | torch.device = "cpu"):
    """`adm:<flag-set name | flags.json>:<checkpoint.pt>` -> DiffusionGenerator."""
    parts = model.split(":", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise OptionError("--model", f"expected adm:<flag set or flags.json>:<checkpoint.pt>, got {model!r}")
    return load_adm(parts[2], parts[1], device=device)


def convert_adm(pt_path: str | Path, flags: ADMFlags | str, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write a diffusers folder (`UNet2DModel.save_pretrained` + scheduler_config.json) atomically."""
    flags, spec = resolve_flags(flags)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OptionError("--out", f"{out_dir} already exists; pass --overwrite to replace it")
    unet = adm_unet(pt_path, flags)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        unet.save_pretrained(tmp, safe_serialization=True)
        DDPMScheduler.from_config(adm_scheduler_config(flags)).save_config(tmp)
        write_json(tmp / ADM_FLAGS_FILE, {"flags": flags.to_dict(), "flag_set": spec,
                                          "checkpoint": str(Path(pt_path).resolve())})
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; outputs are ordinary folders
        if out_dir.exists():  # --overwrite: move the old folder aside first so a crash never leaves neither
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.replace(out_dir, old / "x")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir

