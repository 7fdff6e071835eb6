"""StyleGAN2 backend (DatasetGAN mode): network arithmetic, NVIDIA weights, safe pickles, features from
latents, the pipeline on generated samples, and the resumable trainer. Tiny generators (16-32 px)."""

import json
import os
import pickle
import shutil
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import one_line_error, run, tree_state
from safetensors.torch import save_file

from datasetddpm.data.images import read_image, write_image
from datasetddpm.errors import DatasetDDPMError, InputError
from datasetddpm.generators.base import FeatureSpec
from datasetddpm.generators.loading import load_generator
from datasetddpm.generators.stylegan2 import (
    StyleGAN2Generator,
    load_stylegan2,
    save_stylegan2,
)
from datasetddpm.generators.stylegan2_net import (
    StyleGAN2,
    StyleGAN2Config,
    modulated_conv2d,
)
from datasetddpm.generators.stylegan2_pickle import load_snapshot

TINY = StyleGAN2Config(resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=16)


def tiny_net(seed: int = 0, cfg: StyleGAN2Config = TINY) -> StyleGAN2:
    """A tiny StyleGAN2 with every parameter re-randomised (noise strengths and biases non-zero, so every
    term of the forward pass matters)."""
    torch.manual_seed(seed)
    net = StyleGAN2(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.normal_(0, 0.3 if name.endswith(("bias", "noise_strength")) else 1)
        net.mapping.w_avg.normal_()
    return net.eval()


# ---- modulated convolution vs plain convolutions ---------------------------------------------------------
def plain_modconv(x, weight, styles, demodulate: bool, up: bool):
    """Each sample alone: scale the weight by its styles, normalise, F.conv2d. Upsampling as the paper's
    definition: zero insertion, convolution (the transposed conv), then the [1,3,3,1] low-pass x 4."""
    out = []
    k = weight.shape[-1]
    for b in range(x.shape[0]):
        w = weight * styles[b][None, :, None, None]
        if demodulate:
            w = w / torch.sqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        xb = x[b:b + 1]
        if up:
            H, W = xb.shape[-2:]
            z = torch.zeros(1, xb.shape[1], 2 * H - 1, 2 * W - 1, dtype=x.dtype)
            z[..., ::2, ::2] = xb
            y = F.conv2d(F.pad(z, [k - 1] * 4), w.flip([2, 3]))
            taps = torch.tensor([1.0, 3, 3, 1], dtype=x.dtype)
            f = (torch.outer(taps, taps) / 64 * 4).expand(w.shape[0], 1, 4, 4)
            y = F.conv2d(F.pad(y, [1, 1, 1, 1]), f, groups=w.shape[0])
        else:
            y = F.conv2d(xb, w, padding=k // 2)
        out.append(y)
    return torch.cat(out)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate,up,k", [(True, False, 3), (True, True, 3), (False, False, 1)])
def test_modulated_conv_equals_plain_per_sample_convolutions(demodulate, up, k, fused):
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(3, 5, 6, 6, generator=g), torch.randn(4, 5, k, k, generator=g)
    styles = torch.randn(3, 5, generator=g)
    f = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
    ours = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, resample_filter=f, fused=fused)
    expected = plain_modconv(x, weight, styles, demodulate, up)
    assert ours.shape == expected.shape == (3, 4, 12 if up else 6, 12 if up else 6)
    assert (ours - expected).abs().max().item() < 1e-5


# ---- NVIDIA parameter names and weights -------------------------------------------------------------------
def nvidia_keys(resolutions=(4, 8, 16), mapping_layers=2) -> set[str]:
    """G_ema.state_dict() names of a stylegan2-ada-pytorch Generator, written out from its networks.py."""
    layer = ["affine.weight", "affine.bias", "weight", "bias", "noise_strength", "noise_const", "resample_filter"]
    rgb = ["affine.weight", "affine.bias", "weight", "bias"]
    keys = {f"mapping.fc{i}.{p}" for i in range(mapping_layers) for p in ("weight", "bias")} | {"mapping.w_avg"}
    for r in resolutions:
        b = f"synthesis.b{r}"
        keys |= {f"{b}.resample_filter"} | {f"{b}.torgb.{p}" for p in rgb} | {f"{b}.conv1.{p}" for p in layer}
        keys |= {f"{b}.const"} if r == 4 else {f"{b}.conv0.{p}" for p in layer}
    return keys


def test_state_dict_has_nvidia_names_and_a_nvidia_state_dict_converts_strictly(tmp_path):
    net = tiny_net()
    state = net.state_dict()
    assert set(state) == nvidia_keys()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "g_ema.safetensors"))
    result = run("convert-stylegan2", "--checkpoint", tmp_path / "g_ema.safetensors", "--out", tmp_path / "sg2")
    assert result.exit_code == 0, result.output
    loaded = load_generator(tmp_path / "sg2")
    assert isinstance(loaded, StyleGAN2Generator) and loaded.net.cfg == TINY  # config inferred from the shapes
    for k, v in loaded.net.state_dict().items():
        assert torch.equal(v, state[k]), k
    # Strict: one missing key (or one extra) is one line naming it, and nothing is written.
    del state["synthesis.b8.conv0.noise_const"]
    state["synthesis.b8.conv0.extra"] = torch.zeros(1)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "bad.safetensors"))
    one_line_error(run("convert-stylegan2", "--checkpoint", tmp_path / "bad.safetensors", "--out", tmp_path / "bad"),
                   "missing keys: synthesis.b8.conv0.noise_const", "unexpected keys: synthesis.b8.conv0.extra")
    assert not (tmp_path / "bad").exists()


def _nvidia_pickle(net: StyleGAN2, monkeypatch, extra: dict | None = None) -> bytes:
    """A snapshot laid out as stylegan2-ada-pytorch writes it: every network a call of
    torch_utils.persistence._reconstruct_persistent_obj(meta) with the module source and its __dict__
    (Parameters, buffers, numpy-scalar gains, EasyDict init kwargs)."""
    persistence, util = types.ModuleType("torch_utils.persistence"), types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("never called while pickling")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    EasyDict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    util.EasyDict = EasyDict
    for name, module in (("torch_utils", types.ModuleType("torch_utils")), ("torch_utils.persistence", persistence),
                         ("dnnlib", types.ModuleType("dnnlib")), ("dnnlib.util", util)):
        monkeypatch.setitem(sys.modules, name, module)
    source = "import os\nos.system('echo the source must never run')\nclass Generator: pass\n"

    class Persistent:
        def __init__(self, class_name, state):
            self.meta = {"type": "class", "version": 6, "module_src": source, "class_name": class_name, "state": state}

        def __reduce__(self):
            return _reconstruct_persistent_obj, (self.meta,)

    def wrap(module, init_kwargs=None):
        state = {"training": False, "_non_persistent_buffers_set": set(), "_init_args": (),
                 "_parameters": OrderedDict((k, torch.nn.Parameter(v.detach().clone()))
                                            for k, v in module._parameters.items()),
                 "_buffers": OrderedDict(module._buffers), "_init_kwargs": EasyDict(init_kwargs or {}),
                 "_modules": OrderedDict((k, wrap(m)) for k, m in module._modules.items())}
        if hasattr(module, "weight_gain"):
            state["weight_gain"] = np.float64(module.weight_gain)
        return Persistent(type(module).__name__, state)

    c = net.cfg
    kwargs = {"z_dim": c.z_dim, "c_dim": 0, "w_dim": c.w_dim, "img_resolution": c.resolution, "img_channels": 3,
              "mapping_kwargs": EasyDict(num_layers=c.mapping_layers),
              "synthesis_kwargs": EasyDict(channel_base=c.channel_base, channel_max=c.channel_max, num_fp16_res=0,
                                           conv_clamp=256)}
    snapshot = {"G": wrap(net, kwargs), "D": Persistent("Discriminator", {"_parameters": OrderedDict()}),
                "G_ema": wrap(net, kwargs), "augment_pipe": None,
                "training_set_kwargs": EasyDict(path="data.zip", resolution=c.resolution), **(extra or {})}
    return pickle.dumps(snapshot)


def test_nvidia_pickle_loads_its_tensors_without_running_its_code(tmp_path, monkeypatch):
    net = tiny_net(1)
    (tmp_path / "network-snapshot.pkl").write_bytes(_nvidia_pickle(net, monkeypatch))
    monkeypatch.setattr(os, "system", lambda *_: pytest.fail("code from the pickle ran"))
    config, state = load_snapshot(tmp_path / "network-snapshot.pkl")
    assert config["conv_clamp"] == 256.0 and config["resolution"] == 16 and config["mapping_layers"] == 2
    assert set(state) == nvidia_keys()
    for k, v in net.state_dict().items():
        assert torch.equal(state[k], v), k
    result = run("convert-stylegan2", "--checkpoint", tmp_path / "network-snapshot.pkl", "--out", tmp_path / "sg2")
    assert result.exit_code == 0, result.output
    z = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(load_stylegan2(tmp_path / "sg2").net(z), net(z))  # conv_clamp 256 does not bind here


def test_nvidia_pickle_with_a_foreign_reference_is_refused_unexecuted(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (tmp_path / "evil.pkl").write_bytes(_nvidia_pickle(tiny_net(), monkeypatch, {"augment_pipe": Payload()}))
    with pytest.raises(InputError, match=r"refusing global (posix|os|nt)\.system"):
        load_snapshot(tmp_path / "evil.pkl")
    before = tree_state(tmp_path)
    one_line_error(run("convert-stylegan2", "--checkpoint", tmp_path / "evil.pkl", "--out", tmp_path / "out"),
                   "system", "no code from the file is run")
    assert not marker.exists() and tree_state(tmp_path) == before


# ---- features and determinism -------------------------------------------------------------------------------
def test_features_have_the_synthesis_layers_channels_and_resolutions():
    gen = StyleGAN2Generator(tiny_net())
    spec = gen.default_spec()
    # layers: b4.conv1, b8.conv0, b8.conv1, b16.conv0, b16.conv1; channels min(64 // r, 16)
    assert spec.blocks == (0, 1, 2, 3, 4) and spec.steps == (0,)
    assert gen.feature_channels(spec) == [16, 8, 8, 4, 4]
    maps = gen.feature_maps_from_seeds([3, 4], spec)
    assert [tuple(m.shape) for m in maps] == [(2, 16, 4, 4), (2, 8, 8, 8), (2, 8, 8, 8), (2, 4, 16, 16), (2, 4, 16, 16)]
    pixels = gen.pixel_features([3, 4], FeatureSpec((0, 3), (0,)))
    assert pixels.shape == (2, 20, 16, 16)
    assert torch.allclose(pixels[:, 16:], maps[3])  # a full-resolution layer is taken as it is
    with pytest.raises(DatasetDDPMError, match="layers 0..4"):
        gen.check_spec(FeatureSpec((5,), (0,)))
    with pytest.raises(DatasetDDPMError, match="no diffusion steps"):
        gen.check_spec(FeatureSpec((0,), (50,)))


def test_same_seed_gives_the_same_image_and_features_in_any_batch():
    gen = StyleGAN2Generator(tiny_net(), truncation_psi=0.7)
    spec = FeatureSpec((1, 4), (0,))
    a, b = gen.sample([11, 12, 13]), StyleGAN2Generator(tiny_net()).sample([12])
    assert a.dtype == torch.uint8 and a.shape == (3, 3, 16, 16) and a.float().std() > 5
    fresh = StyleGAN2Generator(tiny_net(), truncation_psi=0.7)
    assert torch.equal(fresh.sample([12]), a[1:2]) and not torch.equal(b, a[1:2])  # truncation changes it
    first = gen.feature_maps_from_seeds([11, 12, 13], spec)
    assert all(torch.equal(x, y) for x, y in zip(first, fresh.feature_maps_from_seeds([11, 12, 13], spec)))
    # In another batch only float rounding differs (the grouped convolution's kernels; a run fixes its batch size).
    assert all((x[1:2] - y).abs().max() < 1e-5 for x, y in zip(first, fresh.feature_maps_from_seeds([12], spec)))
    # Features of the generated images themselves: from their remembered seeds.
    assert all(torch.equal(x, y) for x, y in zip(gen.feature_maps(a, spec), first))
    real = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8)
    with pytest.raises(DatasetDDPMError, match="inversion"):
        gen.feature_maps(real, spec)


# ---- the pipeline on generated samples -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sg2_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sg2")
    save_stylegan2(directory, tiny_net())
    return directory


def _annotate(folder):
    """The annotator: bright pixels are class 1, the rest class 0."""
    from PIL import Image
    for png in sorted(folder.glob("sample_*.png")):
        np.save(png.with_suffix(".npy"), (np.asarray(Image.open(png)).mean(-1) > 127).astype(np.uint8))


def test_datasetgan_mode_end_to_end(sg2_dir, tmp_path):
    ann, ens, fused, later = (tmp_path / n for n in ("ann", "ens", "fused", "later"))
    result = run("sample", "--for-annotation", 4, "--out", ann, "--model", sg2_dir, "--generator", "stylegan2")
    assert result.exit_code == 0, result.output
    meta = json.loads((ann / "samples.json").read_text())
    assert meta["files"] == [f"sample_{i:05d}.png" for i in range(4)] and (ann / "latents.safetensors").is_file()
    _annotate(ann)
    edited = shutil.copytree(ann, tmp_path / "edited")  # an annotator who "fixed" an image: refused
    write_image(edited / "sample_00001.png", 255 - read_image(edited / "sample_00001.png"))
    one_line_error(run("train-ensemble", "--data", edited, "--out", ens, "--model", sg2_dir, "--num-classes", 2),
                   "sample_00001.png", "not the image its latent generates")
    result = run("train-ensemble", "--data", ann, "--out", ens, "--model", sg2_dir, "--num-classes", 2,
                 "--members", 2, "--limit", 2, "--threads", 1, "--quiet")  # 2 images: a faster fit
    assert result.exit_code == 0, result.output
    features = json.loads((ens / "ensemble.json").read_text())["ensemble"]["features"]
    assert features == {"blocks": [0, 1, 2, 3, 4], "steps": [0], "noise_seed": 0}  # DatasetGAN: every layer
    common = ("--n", 4, "--batch-size", 2, "--shard-size", 2, "--threads", 1, "--quiet")
    assert run("sample", "--out", fused, "--ensemble", ens, "--model", sg2_dir, *common).exit_code == 0
    assert run("sample", "--out", later, "--model", sg2_dir, *common).exit_code == 0
    assert run("label", "--out", later, "--ensemble", ens, "--quiet").exit_code == 0  # seeds from the sidecars
    for k in range(2):
        shard = f"shards/{k:05d}"
        assert tree_state(fused / shard) == tree_state(later / shard) and (fused / shard / "masks").is_dir()
    # --generator checks the model the ensemble or the run records, before anything is written.
    before = tree_state(later)
    one_line_error(run("label", "--out", later, "--ensemble", ens, "--generator", "diffusion"), "stylegan2 model")
    one_line_error(run("sample", "--out", tmp_path / "x", "--ensemble", ens, "--generator", "diffusion"),
                   "stylegan2 model")
    assert tree_state(later) == before and not (tmp_path / "x").exists()
    assert run("finalize", "--out", fused).exit_code == 0
    assert (fused / "index.jsonl").is_file()
    # Annotated generated samples segment; real images cannot (no latents): one line saying why.
    assert run("segment", "--images", ann, "--ensemble", ens, "--out", tmp_path / "seg", "--quiet").exit_code == 0
    assert len(list((tmp_path / "seg").glob("sample_*.png"))) == 4
    real = tmp_path / "real"
    for i in range(2):  # labelled real photos of the right size: still no latents
        write_image(real / f"photo_{i}.png", np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8))
        np.save(real / f"photo_{i}.npy", np.zeros((16, 16), dtype=np.uint8))
    one_line_error(run("segment", "--images", real, "--ensemble", ens, "--out", tmp_path / "seg2", "--quiet"),
                   "photo_0.png", "inversion", "not supported")
    one_line_error(run("evaluate", "--ensemble", ens, "--data", real, "--quiet"), "photo_0.png", "inversion")
    one_line_error(run("probe", "--data", real, "--test", real, "--model", sg2_dir, "--num-classes", 2, "--out",
                       tmp_path / "probe", "--quiet"), "photo_0.png", "inversion")
    assert not (tmp_path / "seg2").exists() and not (tmp_path / "probe").exists()


def test_generator_option_checks_the_model_kind(sg2_dir, tiny_model_dir, tmp_path):
    one_line_error(run("sample", "--out", tmp_path / "r", "--model", sg2_dir, "--generator", "diffusion"),
                   "--generator", "stylegan2 model")
    one_line_error(run("sample", "--out", tmp_path / "r", "--model", tiny_model_dir, "--generator", "stylegan2"),
                   "--generator", "diffusion model")
    one_line_error(run("sample", "--out", tmp_path / "r", "--generator", "gan"), "diffusion, stylegan2")
    one_line_error(run("train-ensemble", "--data", tmp_path, "--out", tmp_path / "e", "--model", sg2_dir,
                       "--steps", "50"), "--steps", "no diffusion steps")
    assert not (tmp_path / "r").exists()


# ---- train-stylegan2 ---------------------------------------------------------------------------------------------
TRAIN = ("--resolution", 32, "--pool-size", 8, "--batch-size", 4, "--z-dim", 8, "--w-dim", 8, "--mapping-layers", 1,
         "--channel-base", 128, "--channel-max", 16, "--r1-every", 2, "--checkpoint-every", 2, "--threads", 1,
         "--quiet")


def test_train_stylegan2_resumes_exactly_and_saves_a_usable_model(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert run("train-stylegan2", "--out", whole, "--steps", 4, *TRAIN).exit_code == 0
    assert run("train-stylegan2", "--out", split, "--steps", 2, *TRAIN).exit_code == 0
    result = run("train-stylegan2", "--out", split, "--steps", 4, *TRAIN)
    assert result.exit_code == 0 and "resuming" in result.output, result.output
    assert (whole / "ema" / "model.safetensors").read_bytes() == (split / "ema" / "model.safetensors").read_bytes()
    log = [json.loads(line) for line in (whole / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    assert all(np.isfinite(r["loss_G"]) and np.isfinite(r["loss_D"]) and r["r1"] > 0 for r in log)  # R1 every 2
    meta = json.loads((whole / "ema" / "config.json").read_text())
    assert meta["training"]["images_seen"] == 16 and meta["generator"] == "stylegan2"
    images = load_generator(whole / "ema").sample([0, 1])
    assert images.shape == (2, 3, 32, 32)
    one_line_error(run("train-stylegan2", "--out", whole, "--steps", 4, *TRAIN, "--lr", 0.01),
                   "different config")
    one_line_error(run("train-stylegan2", "--out", tmp_path / "x", "--resolution", 16), "--resolution", "32 px")


def test_the_shipped_stylegan2_loads_strictly_and_samples_deterministically():
    from datasetddpm.paths import EMBEDDED_STYLEGAN2_DIR
    weights = EMBEDDED_STYLEGAN2_DIR / "model.safetensors"
    assert weights.stat().st_size <= 10 * 2**20  # the size budget of a shipped StyleGAN2
    gen = load_generator("embedded-stylegan2")
    assert gen.source == "embedded-stylegan2" and gen.resolution == 32
    a, b = gen.sample([3, 4]), load_generator("embedded-stylegan2").sample([3, 4])
    assert a.shape == (2, 3, 32, 32) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a[0], a[1]) and a.float().std() > 10  # distinct, not flat images
    spec = gen.default_spec()
    maps = gen.feature_maps(a, spec)  # from the latents it remembers
    assert [m.shape[1] for m in maps] == gen.feature_channels(spec)
