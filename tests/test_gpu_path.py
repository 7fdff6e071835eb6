"""The GPU path users run, on the CPU: generation without collectives (one process, spawned workers,
torchrun ranks on "two nodes", independent batch tasks: the same bytes), uneven work under a short
process-group timeout, device first under torchrun, the run's recorded precision and thread count, the
write-behind shard writer, and the parent that validates a model without reading its weights."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run
from typer.testing import CliRunner

from datasetddpm.cli.main import get_app

runner = CliRunner()
app = get_app()
MAIN = [sys.executable, "-c", "from datasetddpm.cli.main import main; main()"]


def _args(out, model, ens=None, *extra, n=12):
    args = ["sample", "--out", out, "--num-samples", n, "--model", model, "--sampling-steps", 3, "--batch-size", 2,
            "--shard-size", 4, "--threads", 1, "--quiet", *extra]
    return [str(a) for a in args] + (["--ensemble", str(ens)] if ens else [])


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "shards").rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tiny_ensemble, tmp_path_factory):
    """12 samples labelled in one process: what every other way of running must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "run"
    result = runner.invoke(app, _args(out, tiny_model_dir, tiny_ensemble))
    assert result.exit_code == 0, result.output
    return _tree(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], nodes: int, per_node: int, extra_env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """What torchrun does for `nodes` x `per_node` ranks, on loopback: every rank runs the command."""
    port, world, procs = _free_port(), nodes * per_node, []
    for rank in range(world):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank % per_node), "LOCAL_WORLD_SIZE": str(per_node),
               "GROUP_RANK": str(rank // per_node), **(extra_env or {})}
        procs.append(subprocess.Popen(MAIN + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for p in procs]


def test_torchrun_two_nodes_of_two_gives_the_bytes_of_one_process(tiny_model_dir, tiny_ensemble, reference, tmp_path):
    out = tmp_path / "tr"
    done = _torchrun(_args(out, tiny_model_dir, tiny_ensemble), nodes=2, per_node=2)
    assert all(p.returncode == 0 for p in done), [p.stderr[-2000:] for p in done]
    assert _tree(out) == reference
    assert not list(out.glob(".datasetddpm.lock*"))  # every rank's part lock is gone


def test_uneven_work_outlives_a_short_process_group_timeout(tiny_model_dir, tiny_ensemble, reference, tmp_path):
    """Rank 0 owns shards 0 and 2, rank 1 shard 1; rank 0 waits 3.5 s before each: it finishes more than
    3 x the 2 s timeout after rank 1, which waits at no barrier and ends on its own."""
    out = tmp_path / "uneven"
    done = _torchrun(_args(out, tiny_model_dir, tiny_ensemble, "--dist-timeout", "2"), nodes=1, per_node=2,
                     extra_env={"DATASETDDPM_TEST_SHARD_DELAY": "0:3.5"})
    assert all(p.returncode == 0 for p in done), [p.stderr[-2000:] for p in done]
    assert _tree(out) == reference


def test_tasks_run_one_after_another_give_the_bytes_of_one_process(tiny_model_dir, tiny_ensemble, reference, tmp_path):
    out = tmp_path / "tasks"
    for index in range(3):
        result = runner.invoke(app, _args(out, tiny_model_dir, tiny_ensemble, "--task-index", index, "--task-count", 3))
        assert result.exit_code == 0, result.output
        if index < 2:  # shards of later tasks are not there yet: said, no preview
            assert "not committed yet" in result.output and not (out / "samples_preview.png").exists()
            refused = run("finalize", "--out", out)
            assert refused.exit_code == 2 and "not sampled and labelled yet" in refused.output
    assert "preview" in result.output
    assert _tree(out) == reference


def test_slurm_array_variables_pick_the_task(tiny_model_dir, tmp_path, monkeypatch):
    from datasetddpm.distributed import resolve_tasks
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "3")  # --array=3-6
    tasks = resolve_tasks(None, None)
    assert (tasks.index, tasks.count) == (2, 4)
    assert (resolve_tasks(0, 2).index, resolve_tasks(0, 2).count) == (0, 2)  # options win
    refused = run(*_args(tmp_path / "bad", tiny_model_dir), "--task-index", 4, "--task-count", 4)
    assert refused.exit_code == 2 and "--task-index: must be in [0, 3]" in refused.output
    assert not (tmp_path / "bad").exists()
    refused = run(*_args(tmp_path / "ow", tiny_model_dir), "--task-index", 0, "--task-count", 2, "--overwrite")
    assert refused.exit_code == 2 and "--overwrite" in refused.output and not (tmp_path / "ow").exists()


def test_a_killed_task_rerun_finishes_its_shards(tiny_model_dir, tiny_ensemble, reference, tmp_path):
    out = tmp_path / "killed"
    args = _args(out, tiny_model_dir, tiny_ensemble, "--task-index", 0, "--task-count", 2)
    killed = subprocess.run(MAIN + args, env={**os.environ, "DATASETDDPM_FAULT_AFTER_BATCHES": "3"}, capture_output=True)
    assert killed.returncode == -9  # task 0 owns shards 0 and 2: killed inside shard 2
    assert (out / "shards" / "00000.json").is_file() and not (out / "shards" / "00002.json").exists()
    for index in (1, 0):  # the other task, then the killed one again
        done = subprocess.run(MAIN + _args(out, tiny_model_dir, tiny_ensemble, "--task-index", index, "--task-count", 2),
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert _tree(out) == reference


def test_device_is_set_before_any_process_group_call(monkeypatch):
    """Under torchrun on a GPU node, cuda:LOCAL_RANK is made current before init_process_group (NCCL would
    otherwise put every local rank's communicator on cuda:0), and the group is created on that device."""
    import torch.distributed as dist
    from datasetddpm import distributed
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", torch.device(d))))

    class Stop(Exception):
        pass

    def init(backend, **kwargs):
        calls.append(("init_process_group", backend, kwargs.get("device_id"), kwargs.get("timeout")))
        raise Stop

    monkeypatch.setattr(dist, "init_process_group", init)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    for name, value in {"RANK": "6", "WORLD_SIZE": "8", "LOCAL_RANK": "2"}.items():
        monkeypatch.setenv(name, value)
    for collective, backend in ((True, "nccl"), (False, "gloo")):
        calls.clear()
        with pytest.raises(Stop):
            distributed.launch(lambda r, w: None, (), world=8, backend="nccl", collective=collective, timeout_s=7)
        assert calls[0] == ("set_device", torch.device("cuda", 2)), calls
        assert calls[1][:2] == ("init_process_group", backend)
        assert calls[1][2] == (torch.device("cuda", 2) if backend == "nccl" else None)
        assert calls[1][3].total_seconds() == 7


def test_run_records_precision_and_threads_and_resumes_with_them(tiny_model_dir, tmp_path):
    out = tmp_path / "bf16"
    args = _args(out, tiny_model_dir, n=4)
    assert run(*args, "--precision", "bf16").exit_code == 0
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["precision"] == "bf16" and config["threads"] == 1
    fp32 = tmp_path / "fp32"
    assert run(*_args(fp32, tiny_model_dir, n=4), "--precision", "fp32").exit_code == 0
    assert _tree(out) != _tree(fp32)  # bf16 changes the bits: a part of the run's key
    assert run(*[a for a in args if a not in ("--threads", "1")]).exit_code == 0  # left out: the run's own
    refused = run(*args, "--precision", "fp32")
    assert refused.exit_code == 2 and "precision 'bf16' != 'fp32'" in refused.output
    refused = run(*[a if a != "1" or i != args.index("--threads") + 1 else "2" for i, a in enumerate(args)])
    assert refused.exit_code == 2 and "threads 1 != 2" in refused.output


def test_a_run_made_with_one_thread_resumes_with_two_to_the_same_bytes(tiny_model_dir, tiny_ensemble, reference,
                                                                      tmp_path):
    """Killed after 3 batches with --threads 1, resumed without --threads in a process whose torch uses 2
    threads: the run's own thread count is used, and the bytes are those of an uninterrupted run."""
    out = tmp_path / "threads"
    args = _args(out, tiny_model_dir, tiny_ensemble)
    killed = subprocess.run(MAIN + args, env={**os.environ, "DATASETDDPM_FAULT_AFTER_BATCHES": "3"}, capture_output=True)
    assert killed.returncode == -9
    resume = [a for a in args if a not in ("--threads", "1")]
    code = ("import torch; torch.set_num_threads(2); from datasetddpm.pipeline import generate as g; seen = [];"
            "orig = g.ShardStore.write_samples\n"
            "def spy(*a, **k):\n    seen.append(torch.get_num_threads()); return orig(*a, **k)\n"
            "g.ShardStore.write_samples = spy\n"
            "from datasetddpm.cli.main import get_app\nimport sys\n"
            f"try:\n    get_app()({resume!r})\nexcept SystemExit:\n    pass\nprint('threads', set(seen))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "threads {1}" in done.stdout, done.stdout + done.stderr
    assert _tree(out) == reference


def test_runs_made_before_settings_were_recorded_keep_resuming(tiny_model_dir, tiny_ensemble, reference, tmp_path):
    """A manifest without precision/threads (the old code's) and shards keyed by its hash: a rerun with the
    same options (--threads 1 included) resumes it, finishing the missing shards, and keeps its key."""
    from datasetddpm.pipeline.config import SampleConfig
    out = tmp_path / "legacy"
    assert runner.invoke(app, _args(out, tiny_model_dir, tiny_ensemble)).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    config = {k: v for k, v in manifest["config"].items() if k not in ("precision", "compile", "threads")}
    legacy_hash = SampleConfig(**config).hash()
    assert legacy_hash != manifest["hash"]
    (out / "manifest.json").write_text(json.dumps({**manifest, "config": config, "hash": legacy_hash}))
    for side in (out / "shards").glob("0000[01].json"):
        side.write_text(json.dumps({**json.loads(side.read_text()), "config_hash": legacy_hash}))
    for k in (2,):  # the old run stopped after two shards
        (out / "shards" / f"0000{k}.json").unlink()
        (out / "shards" / f"0000{k}.labels.json").unlink()
    result = runner.invoke(app, _args(out, tiny_model_dir, tiny_ensemble))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["hash"] == legacy_hash
    resumed = _tree(out)
    assert {k: v for k, v in resumed.items() if k.endswith(".png")} == {k: v for k, v in reference.items()
                                                                         if k.endswith(".png")}


def test_write_behind_gives_the_bytes_of_the_serial_loop(tiny_model_dir, tiny_ensemble, reference, tmp_path, monkeypatch):
    from datasetddpm.pipeline import generate
    monkeypatch.setattr(generate, "WRITE_BEHIND", False)
    out = tmp_path / "serial"
    assert runner.invoke(app, _args(out, tiny_model_dir, tiny_ensemble)).exit_code == 0
    assert _tree(out) == reference  # the reference was written behind


def test_a_write_error_in_the_writer_thread_is_one_line(tiny_model_dir, tmp_path, monkeypatch):
    from datasetddpm.errors import InputError
    from datasetddpm.data import shards

    def full(self, k, *args, **kwargs):
        raise InputError(self.images_dir(k), "cannot write (No space left on device)")
    monkeypatch.setattr(shards.ShardStore, "write_samples", full)
    result = run(*_args(tmp_path / "full", tiny_model_dir, n=4))
    assert result.exit_code == 2 and "No space left on device" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_parent_validates_without_reading_weights(tiny_model_dir, tiny_ensemble, tmp_path, monkeypatch):
    """Building a generator on the meta device reads the safetensors header only: with the weight reader
    broken, a run's validation still passes (its workers load the weights)."""
    from datasetddpm import io
    from datasetddpm.generators.loading import load_generator
    from datasetddpm.pipeline.config import SampleConfig
    from datasetddpm.pipeline.generate import resolve_sample_config
    full = load_generator(tiny_model_dir)

    read = io.load_file

    def no_reading(path, *a, **k):  # the ensemble's own (small) weights may be read, the model's not
        assert Path(path).name != "model.safetensors", "the model's weights were read"
        return read(path, *a, **k)
    monkeypatch.setattr(io, "load_file", no_reading)
    meta = load_generator(tiny_model_dir, "meta")
    assert all(p.device.type == "meta" for p in meta.unet.parameters())
    assert {k: v.shape for k, v in meta.unet.state_dict().items()} == {k: v.shape for k, v in full.unet.state_dict().items()}
    cfg, side = resolve_sample_config(SampleConfig(model=str(tiny_model_dir), n=4), tiny_ensemble)
    assert side == 32 and cfg.model == str(Path(tiny_model_dir).resolve())


def test_adm_checkpoint_validates_on_meta_from_a_memory_map(tmp_path):
    """An ADM .pt is memory-mapped and its tensors become shapes: the conversion checks every key and shape
    (a wrong one is still one line) without reading the weights."""
    from datasetddpm.errors import InputError
    from datasetddpm.generators.adm import load_adm
    from test_adm import TINY, build_adm  # a tiny guided-diffusion model
    pt, flags = tmp_path / "model.pt", TINY
    torch.save(build_adm(TINY, seed=5).state_dict(), pt)
    full, meta = load_adm(pt, flags), load_adm(pt, flags, device="meta")
    assert all(p.device.type == "meta" for p in meta.unet.parameters())
    assert {k: v.shape for k, v in meta.unet.state_dict().items()} == {k: v.shape for k, v in full.unet.state_dict().items()}
    state = torch.load(pt, weights_only=True)
    name = next(k for k in state if k.endswith("qkv.weight"))
    state[name] = state[name][:-3]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="shape mismatch"):
        load_adm(tmp_path / "bad.pt", flags, device="meta")


def test_repair_in_a_process_with_other_threads_restores_the_exact_bytes(tiny_model_dir, tiny_ensemble, reference,
                                                                        tmp_path):
    """A run made with --threads 1, damaged, and repaired by `verify --repair` (which has no --threads) in a
    process whose torch uses 2 threads: the run's recorded thread count regenerates the same bytes."""
    out = tmp_path / "repair"
    assert runner.invoke(app, _args(out, tiny_model_dir, tiny_ensemble)).exit_code == 0
    image = next((out / "shards" / "00001" / "images").glob("*.png"))
    image.write_bytes(image.read_bytes()[:-7])  # truncated
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = runner.invoke(app, ["verify", str(out), "--repair", "--quiet"])
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0 and "clean" in result.output, result.output
    assert _tree(out) == reference


def test_a_worker_killed_under_workers_2_is_one_line_and_the_run_resumes(tiny_model_dir, tiny_ensemble, reference,
                                                                        tmp_path):
    out = tmp_path / "dead"
    args = _args(out, tiny_model_dir, tiny_ensemble, "--workers", 2)
    killed = subprocess.run(MAIN + args, env={**os.environ, "DATASETDDPM_FAULT_AFTER_BATCHES": "1"},
                            capture_output=True, text=True)
    lines = [ln for ln in killed.stderr.strip().splitlines() if ln.strip()]
    assert killed.returncode == 2 and len(lines) == 1, killed.stderr
    assert "of 2 died (killed by SIGKILL)" in lines[0] and "rerun the same command" in lines[0]
    done = subprocess.run(MAIN + args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _tree(out) == reference


def test_a_single_writer_is_refused_while_a_task_holds_its_part(tiny_model_dir, tmp_path):
    """`finalize` (or a plain `sample`) must not touch a run whose tasks are still writing it."""
    import json as _json
    out = tmp_path / "parts"
    assert run(*_args(out, tiny_model_dir, n=4), "--task-index", 0, "--task-count", 2).exit_code == 0
    lock = out / ".datasetddpm.lock.task-1"
    lock.write_text(_json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))  # task 1, alive
    before = {p.name: p.read_bytes() for p in (out / "shards").iterdir() if p.is_file()}
    for args in (["finalize", "--out", out], _args(out, tiny_model_dir, n=4)):
        refused = run(*args)
        assert refused.exit_code == 2 and "task-1" in refused.output, refused.output
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir() if p.is_file()} == before
    lock.unlink()


def test_label_as_two_tasks_gives_the_labels_of_one_process(tiny_model_dir, tiny_ensemble, reference, tmp_path):
    out = tmp_path / "label-tasks"
    assert runner.invoke(app, _args(out, tiny_model_dir)).exit_code == 0
    for index in (0, 1):
        result = run("label", "--out", out, "--ensemble", tiny_ensemble, "--threads", 1, "--quiet",
                     "--task-index", index, "--task-count", 2)
        assert result.exit_code == 0, result.output
    assert _tree(out) == reference


def test_rank_zeros_refusal_reaches_every_torchrun_rank_at_once(tiny_model_dir, tmp_path):
    """Rank 0 prepares the run; when it refuses (another config in the folder), the other ranks hear it at the
    start barrier and exit with the same line instead of waiting out their timeout."""
    out = tmp_path / "refused"
    assert run(*_args(out, tiny_model_dir, n=4)).exit_code == 0
    changed = _args(out, tiny_model_dir, n=4)
    changed[changed.index("--sampling-steps") + 1] = "4"
    done = _torchrun(changed + ["--dist-timeout", "600"], nodes=1, per_node=2)
    assert [p.returncode for p in done] == [2, 2], [p.stderr[-1500:] for p in done]
    assert all("different config" in p.stderr for p in done)
