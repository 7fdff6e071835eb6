"""NVIDIA StyleGAN2(-ADA) `.pkl` snapshots read without running their code.

A snapshot is a plain pickle of {'G', 'D', 'G_ema', ...}; every network is a `persistence` object:
a call of `torch_utils.persistence._reconstruct_persistent_obj(meta)`, where `meta` holds the
module's *source code* (which NVIDIA's loader `exec`s), the class name and the module's `__dict__`
(`_parameters`, `_buffers`, `_modules`, `_init_kwargs`, ...). `SnapshotUnpickler` resolves only a
fixed table of globals, each to a function of ours that builds data: persistent objects become
`PersistentRecord`s (the source is kept as an inert string), tensors are rebuilt from their bytes with
`torch.load(weights_only=True)`, containers become dicts, numpy scalars numbers. Any other global is
refused before anything is called, with one line naming it. `G_ema`'s records are then walked into a
state dict with NVIDIA's parameter names and its `init_kwargs` into a `StyleGAN2Config`.
"""

from __future__ import annotations

import io
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError


@dataclass
class PersistentRecord:
    """A persistent object's pickled meta: its class name, state and (never executed) module source."""

    class_name: str
    state: dict = field(default_factory=dict)
    module_src: str = ""


def _persistent(meta: dict) -> PersistentRecord:
    return PersistentRecord(str(meta.get("class_name", "")), dict(meta.get("state") or {}),
                            str(meta.get("module_src", "")))


def _storage_from_bytes(data: bytes):
    # The nested bytes are a legacy torch.save of one storage: read with torch's weights-only unpickler.
    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message advises re-running with weights_only=False, i.e. running the file's code: not passed on
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        raise pickle.UnpicklingError("refusing a nested tensor record" + (f" that references {found.group(1)}"
                                                                          if found else " that is not plain tensor data")) from None


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    return data  # a Parameter is kept as its tensor: nothing is trained here


def _numpy_scalar(dtype, data: bytes | None = None):
    return np.frombuffer(data, dtype=dtype)[0].item() if data is not None else dtype.type().item()


def _numpy_dtype(name, align=False, copy=False):
    dtype = np.dtype(name)
    if dtype.kind not in "biufc":
        raise pickle.UnpicklingError(f"refusing numpy dtype {name!r}")
    return dtype


class _Dict(dict):
    """A plain dict subclass (EasyDict, OrderedDict) rebuilt as data; `__setstate__` ignores attributes."""

    def __setstate__(self, state):
        pass


ALLOWED_GLOBALS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("collections", "OrderedDict"): _Dict,
    ("dnnlib.util", "EasyDict"): _Dict,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
}


class SnapshotUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        target = ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        return target

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent id (not a plain NVIDIA snapshot)")


def read_snapshot(path: str | Path) -> dict:
    """The snapshot's top-level dict, rebuilt from data only. One line for anything else."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with open(path, "rb") as f:
            data = SnapshotUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise InputError(path, f"{e}: only tensors, containers and NVIDIA persistence records are rebuilt, "
                               "and no code from the file is run") from None
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError) as e:  # damaged file
        raise InputError(path, f"not a readable StyleGAN2 snapshot ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise InputError(path, "not a StyleGAN2 snapshot (expected a dict with 'G_ema')")
    return data


def record_state_dict(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of a record tree, named as `nn.Module.state_dict` names them."""
    state = record.state
    skip = set(state.get("_non_persistent_buffers_set") or ())
    out = {}
    for kind in ("_parameters", "_buffers"):
        for name, value in (state.get(kind) or {}).items():
            if value is not None and name not in skip:
                out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PersistentRecord):
            out.update(record_state_dict(child, f"{prefix}{name}."))
    return out


def snapshot_config(record: PersistentRecord, source) -> dict:
    """`StyleGAN2Config` fields from NVIDIA's `Generator(**init_kwargs)`; unsupported variants refused."""
    kw = dict(record.state.get("_init_kwargs") or {})
    args = list(record.state.get("_init_args") or ())
    names = ["z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"]
    kw.update(zip(names, args))
    missing = [n for n in names if n not in kw]
    if missing:
        raise InputError(source, f"G_ema records no {', '.join(missing)}: not a stylegan2-ada-pytorch Generator")
    if kw["c_dim"]:
        raise InputError(source, f"conditional generator (c_dim={kw['c_dim']}): only unconditional models are "
                                 "supported")
    mapping, synthesis = dict(kw.get("mapping_kwargs") or {}), dict(kw.get("synthesis_kwargs") or {})
    arch = synthesis.get("architecture", "skip")
    if arch != "skip" or mapping.get("layer_features") not in (None, kw["w_dim"]):
        raise InputError(source, f"unsupported generator variant (architecture={arch!r}, mapping layer_features="
                                 f"{mapping.get('layer_features')}); only the standard 'skip' StyleGAN2 loads")
    return {"resolution": int(kw["img_resolution"]), "z_dim": int(kw["z_dim"]), "w_dim": int(kw["w_dim"]),
                "img_channels": int(kw["img_channels"]), "mapping_layers": int(mapping.get("num_layers", 8)),
                "lr_multiplier": float(mapping.get("lr_multiplier", 0.01)),
                "w_avg_beta": float(mapping.get("w_avg_beta", 0.995)),
                "channel_base": int(synthesis.get("channel_base", 32768)),
                "channel_max": int(synthesis.get("channel_max", 512)),
                "conv_clamp": None if synthesis.get("conv_clamp") is None else float(synthesis["conv_clamp"])}


def load_snapshot(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(StyleGAN2Config fields, G_ema state dict with NVIDIA's names) of a `.pkl` snapshot."""
    data = read_snapshot(path)
    g = data.get("G_ema")
    if not isinstance(g, PersistentRecord):
        raise InputError(path, f"holds no G_ema network (keys: {', '.join(map(str, data)) or 'none'})")
    return snapshot_config(g, path), record_state_dict(g)
