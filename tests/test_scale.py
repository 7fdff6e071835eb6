"""Paper-scale paths on CPU: one UNet call for all feature steps, streamed DeepLab pairs, DDP resume
after SIGKILL, per-worker batch checks."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import finished_run
from datasetddpm.cli.main import get_app
from datasetddpm.data.generated import GeneratedPairs
from datasetddpm.generators.base import FeatureSpec
from datasetddpm.io import load_tensors
from datasetddpm.segmenters.train_deeplab import AugmentedPairs, DeepLabTrainConfig, make_loader

runner = CliRunner()
app = get_app()


def test_all_feature_steps_in_one_unet_call_equal_one_call_per_step(tiny_generator):
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    spec = FeatureSpec((0, 2, 4), (10, 250, 600))
    calls = []
    handle = tiny_generator.unet.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    batched = tiny_generator.feature_maps(images, spec)
    tiny_generator.max_forward_batch = 3  # one step (3 images) per call
    per_step = tiny_generator.feature_maps(images, spec)
    handle.remove()
    assert calls == [9, 3, 3, 3]
    assert len(batched) == len(per_step) == 9
    for a, b in zip(batched, per_step):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def forty_pair_run(tiny_model_dir, tiny_ensemble, tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("run40"), tiny_model_dir, tiny_ensemble, n=40, batch=20)


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_streaming_loader_yields_the_in_memory_batches(forty_pair_run):
    pairs = GeneratedPairs(forty_pair_run)
    images, masks = pairs.arrays()
    cfg = DeepLabTrainConfig(batch_size=4, seed=3, augment=False)
    streamed = AugmentedPairs(pairs, augment=False, seed=3, ignore_label=255)
    batches = _batches(make_loader(streamed, cfg, epoch=1))
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(3 + 1)).tolist()  # seed + epoch
    assert len(batches) == len(pairs) // 4
    for s, (x, y) in enumerate(batches):
        idx = order[s * 4:(s + 1) * 4]
        assert torch.equal(x, torch.from_numpy(images[idx]).permute(0, 3, 1, 2))
        assert torch.equal(y, torch.from_numpy(masks[idx].astype(np.int64)))
    # Augmented: the same batches from an in-memory copy and from 2 loader processes, and per rank.
    cfg = DeepLabTrainConfig(batch_size=4, seed=3, loader_workers=2)
    in_memory = AugmentedPairs(list(zip(images, masks)), augment=True, seed=3, ignore_label=255)
    a = _batches(make_loader(AugmentedPairs(pairs, augment=True, seed=3, ignore_label=255), cfg, epoch=2))
    b = _batches(make_loader(in_memory, DeepLabTrainConfig(batch_size=4, seed=3), epoch=2))
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b)) and len(a) == len(b)
    assert not torch.equal(a[0][0], batches[0][0])
    ranks = [_batches(make_loader(in_memory, DeepLabTrainConfig(batch_size=2, seed=3), 2, rank=r, world=2))
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(pairs) // 4


def _deeplab_cmd(run, data, out, *extra):
    args = ["train-deeplab", "--run", run, "--val", data, "--out", out, "--epochs", "2", "--workers", "2",
            "--batch-size", "2", "--threads", "1", "--quiet", *extra]
    return [sys.executable, "-c", "from datasetddpm.cli.main import main; main()", *[str(a) for a in args]]


def test_two_worker_deeplab_resumes_after_sigkill_mid_epoch_to_the_same_weights(forty_pair_run, tiny_dataset,
                                                                                  tmp_path):
    full = subprocess.run(_deeplab_cmd(forty_pair_run, tiny_dataset, tmp_path / "full"), capture_output=True)
    assert full.returncode == 0, full.stderr
    steps = len(GeneratedPairs(forty_pair_run)) // 4  # per epoch: 2 workers x batch 2
    env = {**os.environ, "DATASETDDPM_DEEPLAB_FAULT_AFTER_STEPS": str(steps + 2)}  # inside epoch 1
    killed = subprocess.run(_deeplab_cmd(forty_pair_run, tiny_dataset, tmp_path / "split"), env=env,
                            capture_output=True)
    assert killed.returncode != 0
    log = [json.loads(x) for x in (tmp_path / "split" / "train_log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [0]  # epoch 0 saved, epoch 1 cut short
    resumed = subprocess.run(_deeplab_cmd(forty_pair_run, tiny_dataset, tmp_path / "split"), capture_output=True)
    assert resumed.returncode == 0, resumed.stderr
    a = load_tensors(tmp_path / "full" / "train_state.safetensors")
    b = load_tensors(tmp_path / "split" / "train_state.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "full" / "train_log.jsonl").read_text().count("\n") == 2
    leftovers = [p.name for p in (tmp_path / "split").rglob("*.tmp")]
    assert leftovers == []


def test_batch_per_worker_below_two_is_one_line_before_any_worker_starts(forty_pair_run, tiny_dataset, tmp_path):
    r = runner.invoke(app, [str(a) for a in ["train-deeplab", "--run", forty_pair_run, "--val", tiny_dataset, "--out",
                                             tmp_path / "o", "--workers", "2", "--batch-size", "1", "--quiet"]])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == ["Error: --batch-size: is per GPU / worker (2 of them) and must be >= 2: "
                                             "BatchNorm cannot train on a batch of 1"]
    assert not (tmp_path / "o").exists()


def test_changed_world_size_is_refused_on_resume(forty_pair_run, tiny_dataset, tmp_path):
    base = ["train-deeplab", "--run", forty_pair_run, "--val", tiny_dataset, "--out", tmp_path / "o", "--epochs", "1",
            "--batch-size", "4", "--threads", "1", "--quiet"]
    assert runner.invoke(app, [str(a) for a in base]).exit_code == 0
    r = runner.invoke(app, [str(a) for a in base + ["--amp"]])
    assert r.exit_code == 2 and "different config (world 1, amp False" in r.output


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(command: list[str]) -> None:
    """Two torchrun "nodes" on the loopback address, 2 gloo processes each (4 ranks)."""
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(r),
                               "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", port,
                               "--module", "datasetddpm", *command], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for r in (0, 1)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1].decode()[-2000:] for o in outputs]


def _shard_tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "shards").rglob("*")) if p.is_file()}


def test_two_torchrun_nodes_give_the_pairs_of_one_worker(tiny_model_dir, tiny_ensemble, tmp_path):
    def sample(out, *extra):
        return [str(a) for a in ["sample", "--out", out, "--num-samples", "16", "--model", tiny_model_dir, "--sampling-steps",
                                 "2", "--batch-size", "2", "--shard-size", "2", "--threads", "1", "--quiet",
                                 "--device", "cpu", *extra]]
    assert runner.invoke(app, sample(tmp_path / "one", "--ensemble", tiny_ensemble)).exit_code == 0
    _two_nodes(sample(tmp_path / "fused", "--ensemble", tiny_ensemble))
    _two_nodes(sample(tmp_path / "split"))
    _two_nodes(["label", "--out", str(tmp_path / "split"), "--ensemble", str(tiny_ensemble), "--threads", "1",
                "--quiet", "--device", "cpu"])
    one = _shard_tree(tmp_path / "one")
    assert len([k for k in one if k.endswith(".png")]) == 32
    assert _shard_tree(tmp_path / "fused") == one
    assert _shard_tree(tmp_path / "split") == one
