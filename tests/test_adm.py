"""ADM (guided-diffusion) checkpoints: exact conversion to diffusers, refusals, safe loading, CLI end to end.

Tiny random ADM models are built with the original guided-diffusion code (test dependency
`guided-diffusion-sdk`) and every tensor is re-randomised: ADM zero-initialises output convs, so a fresh
model predicts exactly zero and would hide conversion bugs.
"""

import json
import math
import shutil
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from datasetddpm.cli.main import get_app
from datasetddpm.errors import InputError, OptionError
from datasetddpm.generators.adm import (ADM_FLAG_SETS, ADMFlags, adm_scheduler_config, adm_unet_config, convert_adm,
                                        convert_adm_state_dict, flags_from_dict, load_adm)
from datasetddpm.generators.base import FeatureSpec
from datasetddpm.generators.diffusion import DiffusionGenerator, build_unet, decoder_blocks
from datasetddpm.generators.loading import load_generator
from datasetddpm.io import load_state_dict_file

with warnings.catch_warnings():  # guided_diffusion.nn uses a deprecated torch.cuda.amp decorator
    warnings.simplefilter("ignore", FutureWarning)
    from guided_diffusion.gaussian_diffusion import get_named_beta_schedule
    from guided_diffusion.script_util import create_model

runner = CliRunner()
app = get_app()

TINY = ADMFlags(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2,2", attention_resolutions="16,8",
                num_head_channels=16, learn_sigma=True, resblock_updown=True, use_scale_shift_norm=True)
VARIANTS = {
    "attention_headchannels_sigma_updown": TINY,
    "no_level_attention_plain_resample": replace(TINY, channel_mult="1,2", attention_resolutions="", learn_sigma=False,
                                                 resblock_updown=False, use_scale_shift_norm=False),
    "num_heads_new_order_conv_resample": replace(TINY, num_heads=2, num_head_channels=-1, resblock_updown=False,
                                                 use_new_attention_order=True),
    "one_head_mixed_widths_two_resblocks": replace(TINY, num_heads=1, num_head_channels=-1,
                                                   attention_resolutions="32,16", num_res_blocks=2,
                                                   use_scale_shift_norm=False),
    "four_levels_cosine": replace(TINY, channel_mult="1,1,2,2", attention_resolutions="8", num_head_channels=32,
                                  noise_schedule="cosine"),
}


def build_adm(flags: ADMFlags, seed: int = 0) -> torch.nn.Module:
    """An ADM UNetModel via guided-diffusion's own create_model, every tensor random and O(1)-scaled."""
    torch.manual_seed(seed)
    model = create_model(flags.image_size, flags.num_channels, flags.num_res_blocks, channel_mult=flags.channel_mult,
                         learn_sigma=flags.learn_sigma, num_heads=flags.num_heads,
                         # ADM's parser cannot read "": a resolution above the image size means "nowhere"
                         attention_resolutions=flags.attention_resolutions or str(2 * flags.image_size),
                         num_head_channels=flags.num_head_channels, num_heads_upsample=flags.num_heads_upsample,
                         use_scale_shift_norm=flags.use_scale_shift_norm, resblock_updown=flags.resblock_updown,
                         use_new_attention_order=flags.use_new_attention_order)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0, 1 / math.sqrt(p[0].numel()))  # fan-in scaling keeps activations O(1)
            elif name.endswith("weight"):  # GroupNorm scales
                p.normal_(1, 0.1)
            else:
                p.normal_(0, 0.1)
    return model.eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def converted(adm: torch.nn.Module, flags: ADMFlags) -> DiffusionGenerator:
    unet = build_unet(adm_unet_config(flags), convert_adm_state_dict(adm.state_dict(), flags), "<test>")
    return DiffusionGenerator(unet, adm_scheduler_config(flags))


@pytest.mark.parametrize("variant", VARIANTS)
def test_converted_model_matches_adm_output_and_every_decoder_block(variant):
    flags = VARIANTS[variant]
    adm = build_adm(flags)
    gen = converted(adm, flags)
    assert len(gen.blocks) == len(adm.output_blocks)
    spec = FeatureSpec(tuple(range(len(gen.blocks))), (50, 600), noise_seed=3)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ours = gen.feature_maps(images, spec)

    x0 = images.float() / 127.5 - 1
    eps = gen.fixed_noise(spec, 32, 32)
    alphas = gen.train_scheduler.alphas_cumprod
    captured = {}
    hooks = [b.register_forward_hook(lambda _m, _i, out, k=k: captured.__setitem__(k, out))
             for k, b in enumerate(adm.output_blocks)]
    try:
        for s, t in enumerate(spec.steps):
            xt = alphas[t].sqrt() * x0 + (1 - alphas[t]).sqrt() * eps
            timesteps = torch.full((2,), t, dtype=torch.long)
            with torch.no_grad():
                expected_out = adm(xt, timesteps)
                out = gen.unet(xt, timesteps).sample
            assert expected_out.abs().mean() > 0.1  # re-randomised: the output is far from ADM's zero init
            assert out.shape == expected_out.shape and rel_err(out, expected_out) < 1e-4
            for k in range(len(adm.output_blocks)):
                mine = ours[s * len(spec.blocks) + k]
                assert mine.shape == captured[k].shape, k
                assert rel_err(mine, captured[k]) < 1e-4, (variant, t, k)
                assert mine.shape[1] == gen.blocks[k].channels and 32 // mine.shape[-1] == gen.blocks[k].downscale
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("schedule,steps", [("linear", 1000), ("linear", 250), ("cosine", 1000)])
def test_scheduler_matches_adm_noise_schedule(schedule, steps):
    from diffusers import DDPMScheduler
    flags = replace(TINY, noise_schedule=schedule, diffusion_steps=steps)
    ours = DDPMScheduler.from_config(adm_scheduler_config(flags)).alphas_cumprod.double()
    theirs = torch.from_numpy(np.cumprod(1 - get_named_beta_schedule(schedule, steps)))
    assert ours.shape == theirs.shape and (ours - theirs).abs().max() < 1e-5
    assert adm_scheduler_config(flags)["variance_type"] == "learned_range"
    assert adm_scheduler_config(replace(flags, learn_sigma=False))["variance_type"] == "fixed_large"


def test_paper_flag_set_block_layout():
    """The paper's blocks {5,6,7,8,12}: 1024/512/512/512/256 channels at 1/8,1/8,1/8,1/4,1/2 of 256 px."""
    assert ADM_FLAG_SETS["lsun_256"] == ADM_FLAG_SETS["ffhq_256"]
    cfg = adm_unet_config(ADM_FLAG_SETS["lsun_256"])
    assert cfg["block_out_channels"] == [256, 256, 512, 512, 1024, 1024] and cfg["attention_head_dim"] == 64
    assert cfg["down_block_types"][3:] == ["AttnDownBlock2D"] * 3 and cfg["out_channels"] == 6
    from diffusers import UNet2DModel
    with torch.device("meta"):
        blocks = decoder_blocks(UNet2DModel.from_config(cfg))
    assert len(blocks) == 18
    assert [(blocks[b].channels, blocks[b].downscale) for b in (5, 6, 7, 8, 12)] == \
        [(1024, 8), (512, 8), (512, 8), (512, 4), (256, 2)]


@pytest.mark.parametrize("overrides,option,needle", [
    (dict(num_heads=4, num_head_channels=-1, attention_resolutions="32,16"), "num_heads", "different widths"),
    (dict(num_heads=2, num_heads_upsample=4, num_head_channels=-1), "num_heads_upsample", "one attention_head_dim"),
    (dict(num_head_channels=24), "num_head_channels", "does not divide"),
    (dict(class_cond=True), "class_cond", "not supported"),
    (dict(channel_mult="0.5,1,1"), "channel_mult", "first multiplier must be 1"),
    (dict(num_channels=48), "num_channels", "multiple of 32"),
    (dict(image_size=30), "image_size", "not divisible"),
])
def test_inexpressible_flags_are_refused(overrides, option, needle):
    with pytest.raises(OptionError) as e:
        adm_unet_config(replace(TINY, **overrides))
    assert e.value.option == option and needle in str(e.value)


def test_unknown_noise_schedule_is_refused():
    with pytest.raises(OptionError, match="noise_schedule: unknown schedule 'sigmoid'"):
        adm_scheduler_config(replace(TINY, noise_schedule="sigmoid"))


def test_flags_json_reads_adm_names_and_refuses_unknown_ones(tmp_path):
    flags = flags_from_dict({"image_size": 32, "num_channels": 32, "channel_mult": [1, 2, 2], "learn_sigma": "True",
                             "attention_resolutions": "16,8", "use_fp16": True, "timestep_respacing": "250"})
    assert flags.mults() == (1, 2, 2) and flags.learn_sigma is True and flags.attention_levels() == [False, True, True]
    with pytest.raises(InputError, match="unknown ADM flag.*num_chanels"):
        flags_from_dict({"num_chanels": 32}, "f.json")
    with pytest.raises(InputError, match="flag num_res_blocks: expected int"):
        flags_from_dict({"num_res_blocks": "two"}, "f.json")
    with pytest.raises(InputError, match="expected comma-separated numbers"):
        flags_from_dict({"attention_resolutions": "32,sixteen"}, "f.json")


# ---- safe loading ---------------------------------------------------------------------------------
class Payload:
    """Unpickling this would import and build an arbitrary class: the safe loader must refuse it."""


def test_pickle_needing_arbitrary_classes_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "extra": Payload()}, path)
    with pytest.raises(InputError) as e:
        load_state_dict_file(path)
    message = str(e.value)
    assert "needs arbitrary unpickling" in message and "refusing" in message and "Payload" in message
    assert "\n" not in message and str(path) in message


def test_common_wrappers_are_unwrapped_only_when_unambiguous(tmp_path):
    sd = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "lightning.pt")
    assert set(load_state_dict_file(tmp_path / "lightning.pt")) == set(sd)
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pt")
    assert set(load_state_dict_file(tmp_path / "ddp.pt")) == set(sd)
    torch.save({"model": sd, "ema": sd}, tmp_path / "both.pt")
    with pytest.raises(InputError, match="several state dicts"):
        load_state_dict_file(tmp_path / "both.pt")
    save_file(sd, tmp_path / "w.safetensors")
    assert torch.equal(load_state_dict_file(tmp_path / "w.safetensors")["a.weight"], sd["a.weight"])


# ---- checkpoints on disk --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def adm_files(tmp_path_factory):
    """A tiny random ADM checkpoint (.pt), its flags JSON and its converted diffusers folder."""
    root = tmp_path_factory.mktemp("adm")
    torch.save(build_adm(TINY, seed=5).state_dict(), root / "model.pt")
    (root / "flags.json").write_text(json.dumps(TINY.to_dict()))
    convert_adm(root / "model.pt", str(root / "flags.json"), root / "converted")
    return root


def _maps(generator, blocks=(0, 2, 4, 5)):
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return generator.feature_maps(images, FeatureSpec(blocks, (50, 250)))


def test_converted_folder_layout_and_on_the_fly_string_agree(adm_files):
    folder = adm_files / "converted"
    assert json.loads((folder / "config.json").read_text())["_class_name"] == "UNet2DModel"
    assert {p.name for p in folder.iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors",
                                                  "scheduler_config.json", "adm_flags.json"}
    assert not [p for p in adm_files.iterdir() if p.name.startswith(".")]  # no temp folders left behind
    from_folder = load_generator(folder)
    on_the_fly = load_generator(f"adm:{adm_files / 'flags.json'}:{adm_files / 'model.pt'}")
    assert on_the_fly.source == f"adm:{(adm_files / 'flags.json').resolve()}:{(adm_files / 'model.pt').resolve()}"
    assert from_folder.scheduler_config["variance_type"] == "learned_range"
    for a, b in zip(_maps(from_folder), _maps(on_the_fly)):
        assert torch.equal(a, b)
    reference = _maps(load_adm(adm_files / "model.pt", TINY))
    assert all(torch.equal(a, b) for a, b in zip(_maps(from_folder), reference))


def test_diffusers_pipeline_folder_loads(adm_files, tmp_path):
    pipe = tmp_path / "pipe"
    shutil.copytree(adm_files / "converted", pipe / "unet")
    (pipe / "scheduler").mkdir()
    shutil.move(pipe / "unet" / "scheduler_config.json", pipe / "scheduler" / "scheduler_config.json")
    for a, b in zip(_maps(load_generator(pipe)), _maps(load_generator(adm_files / "converted"))):
        assert torch.equal(a, b)


def test_legacy_diffusers_folder_with_bin_weights_and_old_attention_names_loads(adm_files, tmp_path):
    """Folders saved by diffusers < 0.14 (the google/ddpm-* family) use query/key/value/proj_attn."""
    old = tmp_path / "old"
    shutil.copytree(adm_files / "converted", old)
    weights = old / "diffusion_pytorch_model.safetensors"
    names = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    state = {}
    for key, value in load_file(weights).items():
        for new, legacy in names.items():
            key = key.replace(new, legacy)
        state[key] = value
    assert any(".proj_attn." in k for k in state)
    torch.save(state, old / "diffusion_pytorch_model.bin")
    weights.unlink()
    for a, b in zip(_maps(load_generator(old)), _maps(load_generator(adm_files / "converted"))):
        assert torch.equal(a, b)


def test_diffusers_folder_with_a_missing_weight_names_the_key(adm_files, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(adm_files / "converted", broken)
    weights = broken / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    del state["up_blocks.1.attentions.0.to_k.weight"]
    save_file(state, weights)
    with pytest.raises(InputError) as e:
        load_generator(broken)
    assert str(weights) in str(e.value) and "missing keys: up_blocks.1.attentions.0.to_k.weight" in str(e.value)


def test_diffusers_folder_without_scheduler_config_is_refused(adm_files, tmp_path):
    broken = tmp_path / "noscheduler"
    shutil.copytree(adm_files / "converted", broken)
    (broken / "scheduler_config.json").unlink()
    with pytest.raises(InputError, match="scheduler_config.json: file not found"):
        load_generator(broken)


def test_adm_checkpoint_that_does_not_match_its_flags_names_the_keys(adm_files, tmp_path):
    sd = torch.load(adm_files / "model.pt", weights_only=True)
    del sd["output_blocks.2.1.qkv.weight"]
    torch.save(sd, tmp_path / "partial.pt")
    with pytest.raises(InputError, match="missing keys: output_blocks.2.1.qkv.weight"):
        load_adm(tmp_path / "partial.pt", TINY)
    with pytest.raises(InputError, match="unexpected keys: input_blocks.3.1.norm.bias"):  # no attention at 16 px
        load_adm(adm_files / "model.pt", replace(TINY, attention_resolutions="8"))
    with pytest.raises(InputError, match=r"shape mismatch \(shape in the file\): input_blocks.0.0.weight \(32, 3, 3, "):
        load_adm(adm_files / "model.pt", replace(TINY, num_channels=64))


def test_convert_refuses_to_replace_an_existing_folder_without_overwrite(adm_files, tmp_path):
    out = tmp_path / "out"
    convert_adm(adm_files / "model.pt", TINY, out)
    with pytest.raises(OptionError, match="--out: .* already exists; pass --overwrite"):
        convert_adm(adm_files / "model.pt", TINY, out)
    (out / "stale.txt").write_text("old")
    convert_adm(adm_files / "model.pt", TINY, out, overwrite=True)
    assert not (out / "stale.txt").exists() and [p.name for p in tmp_path.iterdir()] == ["out"]


# ---- command line ---------------------------------------------------------------------------------
def _ok(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_convert_adm_then_train_ensemble_then_sample_with_labels(adm_files, tiny_dataset, tmp_path):
    converted_dir, ens, run = tmp_path / "conv", tmp_path / "ens", tmp_path / "run"
    result = _ok("convert-adm", "--checkpoint", adm_files / "model.pt", "--flags", adm_files / "flags.json",
                 "--out", converted_dir)
    assert "6 decoder blocks" in result.output and "32 px" in result.output
    _ok("train-ensemble", "--data", tiny_dataset, "--out", ens, "--model", converted_dir, "--blocks", "2,4",
        "--steps", "50,150", "--members", "2", "--quiet")
    meta = json.loads((ens / "ensemble.json").read_text())
    assert meta["ensemble"]["in_dim"] == 2 * (64 + 32) and meta["ensemble"]["model"] == "../conv"  # beside it
    assert meta["model_absolute"] == str(converted_dir.resolve())
    # The full ancestral sampler uses the learned variance (ADM learn_sigma) that the model outputs.
    _ok("sample", "--out", run, "--n", "4", "--model", converted_dir, "--ensemble", ens, "--sampler", "ddpm",
        "--sampling-steps", "3", "--batch-size", "2", "--shard-size", "2", "--threads", "1", "--quiet")
    pngs = sorted(p.name for p in (run / "shards").rglob("*.png"))
    assert len(pngs) == 8  # 4 images + 4 masks
    # The same samples drawn without labels, then `label` over the run: the same masks, byte for byte.
    run2 = tmp_path / "run2"
    _ok("sample", "--out", run2, "--n", "4", "--model", converted_dir, "--sampler", "ddpm", "--sampling-steps", "3",
        "--batch-size", "2", "--shard-size", "2", "--threads", "1", "--quiet")
    _ok("label", "--out", run2, "--ensemble", ens, "--threads", "1", "--quiet")
    masks = {p.relative_to(run): p.read_bytes() for p in (run / "shards").rglob("masks/*.png")}
    assert masks and masks == {p.relative_to(run2): p.read_bytes() for p in (run2 / "shards").rglob("masks/*.png")}


def test_convert_adm_cli_errors_are_one_line(adm_files, tmp_path):
    torch.save({"weight": torch.zeros(2), "extra": Payload()}, tmp_path / "evil.pt")
    for args, needle in [(["--checkpoint", tmp_path / "evil.pt", "--flags", "lsun_256"], "needs arbitrary unpickling"),
                         (["--checkpoint", adm_files / "model.pt", "--flags", "lsun_512"], "unknown flag set"),
                         (["--checkpoint", adm_files / "model.pt", "--flags", "lsun_256"], "does not match the flags")]:
        result = runner.invoke(app, ["convert-adm", *map(str, args), "--out", str(tmp_path / "o")])
        lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and needle in lines[0], result.output
    assert not (tmp_path / "o").exists()
