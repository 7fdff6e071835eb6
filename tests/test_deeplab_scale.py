"""train-deeplab at scale: loader workers, --amp-dtype, --sync-bn, --encoder-weights, --dist-timeout, and
the resume keys of runs made before these options existed."""

import hashlib
import json
from urllib.error import URLError

import pytest
import torch

from conftest import finished_run as make_finished_run
from conftest import one_line_error, run
from datasetddpm.io import load_tensors
from datasetddpm.segmenters.model import SegmenterConfig, create_segmenter
from datasetddpm.segmenters.train_deeplab import (DeepLabTrainConfig, auto_loader_workers, build,
                                                  initial_segmenter)

# DeepLabTrainConfig's fields and defaults before this issue, and the resume-key formula of that version,
# copied as a fixed reference: keys of runs made then must not change.
OLD_FIELDS = dict(arch="deeplabv3", encoder="resnet18", input_scale=1, epochs=20, batch_size=8, lr=1e-3, augment=True,
                  seed=0, loader_workers=0, real="", real_fraction=0.1, lr_schedule="constant")


def old_hash(fields: dict, data_key: str, world: int = 1, amp: bool = False) -> str:
    d = {**fields, "data": data_key, "world": world, "amp": amp}
    if d["lr_schedule"] == "constant":
        d.pop("lr_schedule")
        d.pop("epochs")
    d.pop("loader_workers")
    if not d["real"]:
        d.pop("real"), d.pop("real_fraction")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tiny_ensemble, tmp_path_factory):
    return make_finished_run(tmp_path_factory.mktemp("run"), tiny_model_dir, tiny_ensemble, n=16, batch=8)


def _train(run_dir, data, out, *extra):
    return run("train-deeplab", "--run", run_dir, "--val", data, "--out", out, "--epochs", 1, "--batch-size", 4,
               "--threads", 1, "--quiet", *extra)


def _data_key(run_dir) -> str:
    card = json.loads((run_dir / "dataset_card.json").read_text())
    return f"{card['config_hash']}/{card['labels_hash']}"


@pytest.mark.parametrize("changes", [{}, {"lr_schedule": "cosine", "epochs": 3}, {"real": "/r", "real_fraction": 0.2},
                                     {"encoder": "resnet34", "seed": 4, "augment": False}])
def test_resume_keys_of_runs_made_before_are_unchanged(changes):
    fields = {**OLD_FIELDS, **changes}
    cfg = DeepLabTrainConfig(**fields)
    for device_type in ("cpu", "cuda"):
        for amp in (False, True):
            for world in (1, 4):
                assert cfg.hash("k", world, amp, device_type) == old_hash(fields, "k", world, amp)
    # --amp-dtype naming --amp's old type on the device is the same run; another type is another run
    assert cfg.hash("k", 1, "bf16", "cpu") == old_hash(fields, "k", 1, True)
    assert cfg.hash("k", 1, "fp16", "cuda") == old_hash(fields, "k", 1, True)
    assert cfg.hash("k", 1, "bf16", "cuda") not in (old_hash(fields, "k", 1, True), old_hash(fields, "k", 1, False))
    # loader workers: not in the key; sync-bn and encoder weights: in it only when used
    assert DeepLabTrainConfig(**{**fields, "loader_workers": None}).hash("k") == old_hash(fields, "k")
    assert DeepLabTrainConfig(**{**fields, "loader_workers": 3}).hash("k") == old_hash(fields, "k")
    assert DeepLabTrainConfig(**fields, sync_bn=True).hash("k", 2) != old_hash(fields, "k", 2)
    a = DeepLabTrainConfig(**fields, encoder_weights="/a.safetensors", encoder_weights_sha256="ab" * 32)
    moved = DeepLabTrainConfig(**fields, encoder_weights="/b/a.safetensors", encoder_weights_sha256="ab" * 32)
    other = DeepLabTrainConfig(**fields, encoder_weights="/a.safetensors", encoder_weights_sha256="cd" * 32)
    assert a.hash("k") == moved.hash("k") != other.hash("k") and a.hash("k") != old_hash(fields, "k")


def test_auto_loader_workers_per_process():
    assert auto_loader_workers(1, "cuda", True, cpus=16) == 4
    assert auto_loader_workers(4, "cuda", True, cpus=16) == 3  # 4 cores per process, one feeds the GPU
    assert auto_loader_workers(8, "cuda", True, cpus=16) == 0  # 2 cores per process
    assert auto_loader_workers(1, "cpu", True, cpus=2) == 0
    assert auto_loader_workers(1, "cpu", True, cpus=16) == 4 and auto_loader_workers(1, "cpu", True, cpus=6) == 3
    assert auto_loader_workers(1, "cuda", False, cpus=64) == 0  # in memory, no augmentation: nothing to overlap


def test_default_run_keeps_its_key_and_loader_workers_do_not_change_the_weights(finished, tiny_dataset, tmp_path,
                                                                                 monkeypatch):
    import datasetddpm.distributed as distributed
    from datasetddpm.data.folders import LabelledSet
    seen = []
    real_launch = distributed.launch

    def spy(fn, args, **kwargs):
        seen.append((args, kwargs["timeout_s"]))
        return real_launch(fn, args, **kwargs)
    monkeypatch.setattr(distributed, "launch", spy)
    for workers, extra in ((0, []), (2, ["--dist-timeout", 60])):
        r = _train(finished, tiny_dataset, tmp_path / f"w{workers}", "--loader-workers", workers, *extra)
        assert r.exit_code == 0, r.output
    assert [t for _, t in seen] == [None, 60.0]  # --dist-timeout reaches the launcher (None: its default)
    assert isinstance(seen[0][0][1], LabelledSet)  # the real images travel to the workers, read once
    configs = [json.loads((tmp_path / f"w{w}" / "train_config.json").read_text()) for w in (0, 2)]
    fields = {**OLD_FIELDS, "epochs": 1, "batch_size": 4}
    assert configs[0]["hash"] == configs[1]["hash"] == old_hash(fields, _data_key(finished))
    assert [c["config"]["loader_workers"] for c in configs] == [0, 2]
    a, b = (load_tensors(tmp_path / f"w{w}" / "train_state.safetensors") for w in (0, 2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # a bf16 epoch on a CPU without bf16 instructions: about a minute
def test_amp_dtype_bf16_resumes_an_amp_run(finished, tiny_dataset, tmp_path):
    assert _train(finished, tiny_dataset, tmp_path / "o", "--amp").exit_code == 0
    config = json.loads((tmp_path / "o" / "train_config.json").read_text())
    assert config["amp"] is True and config["amp_dtype"] == "bf16"
    r = _train(finished, tiny_dataset, tmp_path / "o", "--amp-dtype", "bf16")  # a resume (of a finished run)
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "o" / "train_log.jsonl").read_text().splitlines()) == 1
    assert json.loads((tmp_path / "o" / "train_config.json").read_text())["hash"] == config["hash"]
    one_line_error(_train(finished, tiny_dataset, tmp_path / "o"), "different config", "amp True", "amp_dtype bf16")


@pytest.mark.parametrize("extra,needles", [
    (["--amp-dtype", "fp16"], ["--amp-dtype", "fp16 is for GPUs"]),
    (["--amp-dtype", "fp8"], ["--amp-dtype", "unknown type 'fp8'"]),
    (["--sync-bn"], ["--sync-bn", "several processes"]),
    (["--sync-bn", "--workers", 2, "--batch-size", 2], ["--sync-bn", "GPUs only"]),
    (["--dist-timeout", 0], ["--dist-timeout", "must be > 0"]),
    (["--encoder-weights", "nowhere.safetensors"], ["nowhere.safetensors", "file not found"]),
])
def test_refused_options_are_one_line_and_write_nothing(finished, tiny_dataset, tmp_path, extra, needles):
    one_line_error(_train(finished, tiny_dataset, tmp_path / "o", *extra), *needles)
    assert not (tmp_path / "o").exists()


def test_imagenet_weights_offline_are_one_line(finished, tiny_dataset, tmp_path, monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    one_line_error(_train(finished, tiny_dataset, tmp_path / "o", "--encoder-weights", "imagenet"),
                   "--encoder-weights", "imagenet", "smp-hub/resnet18.imagenet", "name resolution")
    assert not (tmp_path / "o").exists()


def _encoder_file(tmp_path, suffix: str, encoder: str = "resnet18"):
    from safetensors.torch import save_file
    torch.manual_seed(123)
    state = create_segmenter(SegmenterConfig(num_classes=3, encoder=encoder)).net.encoder.state_dict()
    path = tmp_path / f"encoder{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    return path, state


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_encoder_weights_are_loaded_bit_exactly_and_the_decoder_is_unchanged(tmp_path, suffix):
    path, state = _encoder_file(tmp_path, suffix)
    seg_cfg = SegmenterConfig(num_classes=5)
    model = initial_segmenter(DeepLabTrainConfig(encoder_weights=str(path)), seg_cfg)
    loaded = model.net.encoder.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    random = initial_segmenter(DeepLabTrainConfig(), seg_cfg)
    assert not torch.equal(random.net.encoder.conv1.weight, loaded["conv1.weight"])
    for k, v in random.net.decoder.state_dict().items():  # the same seeded decoder either way
        assert torch.equal(v, model.net.decoder.state_dict()[k])


def test_train_deeplab_from_encoder_weights_records_their_digest(finished, tiny_dataset, tmp_path):
    from datasetddpm.segmenters.encoder_weights import file_sha256
    path, _ = _encoder_file(tmp_path, ".safetensors")
    r = _train(finished, tiny_dataset, tmp_path / "o", "--encoder-weights", path)
    assert r.exit_code == 0, r.output
    config = json.loads((tmp_path / "o" / "train_config.json").read_text())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert config["config"]["encoder_weights_sha256"] == file_sha256(path) == digest
    assert config["hash"] != old_hash({**OLD_FIELDS, "epochs": 1, "batch_size": 4}, _data_key(finished))
    wrong, _ = _encoder_file(tmp_path / "o", ".pt", encoder="resnet34")  # other blocks: strict load refuses
    one_line_error(_train(finished, tiny_dataset, tmp_path / "x", "--encoder-weights", wrong), "encoder.pt",
                   "unexpected keys: layer1.2.")
    assert not (tmp_path / "x").exists()


def test_fp16_trains_with_a_scaler_bf16_and_sync_bn_build_as_asked():
    seg_cfg = SegmenterConfig(num_classes=3)
    cpu = torch.device("cpu")
    assert build(DeepLabTrainConfig(), seg_cfg, cpu, "fp16", False).scaler.is_enabled()
    assert not build(DeepLabTrainConfig(), seg_cfg, cpu, "bf16", False).scaler.is_enabled()
    model = build(DeepLabTrainConfig(sync_bn=True), seg_cfg, cpu, "", False).model
    kinds = {type(m) for m in model.modules()}
    assert torch.nn.SyncBatchNorm in kinds and torch.nn.BatchNorm2d not in kinds
    plain = build(DeepLabTrainConfig(), seg_cfg, cpu, "", False).model
    assert model.state_dict().keys() == plain.state_dict().keys()  # checkpoints load into a plain segmenter
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in model.state_dict().items())
