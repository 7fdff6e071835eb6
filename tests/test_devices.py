"""Device discipline: one resolver picks cuda:LOCAL_RANK; the labelling path lives on the device it is given.

No GPU is needed: CUDA is simulated for the resolver, and the `meta` device stands in for a GPU in the
propagation tests (an element-wise op mixing a CPU tensor into meta tensors fails, as it would on CUDA)."""

import pytest
import torch

from datasetddpm.devices import resolve_device
from datasetddpm.distributed import resolve_world
from datasetddpm.ensemble.fused import FusedHead
from datasetddpm.ensemble.model import load_ensemble
from datasetddpm.errors import OptionError
from datasetddpm.generators.base import FeatureSpec
from datasetddpm.pipeline.generate import Labeller


@pytest.fixture()
def four_gpus(monkeypatch):
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: current.append(torch.device(d)))
    for name in ("LOCAL_RANK", "SLURM_LOCALID", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return current


def test_worker_device_is_cuda_local_rank_not_global_rank(four_gpus, monkeypatch):
    monkeypatch.setenv("RANK", "6")  # second node of 4-GPU nodes: global rank 6 is local GPU 2
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert resolve_device("cuda", rank=6) == torch.device("cuda", 2)
    assert four_gpus == [torch.device("cuda", 2)]  # and it became the current device
    assert resolve_device("auto") == torch.device("cuda", 2)


def test_spawned_worker_and_slurm_local_ids(four_gpus, monkeypatch):
    assert resolve_device("cuda", rank=3) == torch.device("cuda", 3)  # our own spawn: rank is the local rank
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert resolve_device("cuda", rank=5) == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # an explicit index wins
    assert resolve_device("cpu") == torch.device("cpu")


def test_bad_devices_are_one_line_option_errors(four_gpus, monkeypatch):
    with pytest.raises(OptionError, match=r"--device: cuda:7 asked for but this node has 4 GPU"):
        resolve_device("cuda:7")
    with pytest.raises(OptionError, match=r"--device: must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(OptionError, match="no usable GPU"):
        resolve_device("cuda")


def test_world_under_torchrun_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_world(1, 0, "cpu") == (4, "gloo", "cpu")


def test_labelling_path_lives_on_the_given_device(tiny_ensemble):
    labeller = Labeller(tiny_ensemble, device="meta")
    generator, ensemble = labeller.source.generator, labeller.ensemble
    tensors = [*generator.unet.parameters(), *generator.unet.buffers(), *ensemble.parameters(), *ensemble.buffers()]
    assert tensors and all(t.device.type == "meta" for t in tensors)
    spec = FeatureSpec((1, 4), (50, 400))
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    maps = generator.feature_maps(images, spec)
    assert [m.device.type for m in maps] == ["meta"] * 4
    cfg = load_ensemble(tiny_ensemble).cfg
    head = FusedHead(ensemble, [m.shape[1] for m in maps[:2]])
    assert all(t.device.type == "meta" for t in (*head.w1, head.b1, head.w2, head.b2, head.w3, head.b3))
    labels, uncertainty = head(maps[:2], (32, 32))
    assert labels.device.type == uncertainty.device.type == "meta"
    assert labels.shape == (2, 32, 32) and cfg.num_classes == 7
    # Sampling draws its noise on the CPU from per-sample generators (device-independent seeds), then moves it.
    x = generator.sample_on_device([1, 2], sampler="ddim", num_steps=2)
    assert x.device.type == "meta" and x.shape == (2, 3, 32, 32)
