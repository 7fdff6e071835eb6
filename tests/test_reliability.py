"""Issue 37, reliability second pass: every writer takes the lock before it validates or writes, `verify`
checks every recorded field and `--repair` restores the exact bytes for every kind of damage it detects,
and the mistakes of a user or a failing machine are one line (exit 2) with nothing written or left behind."""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import finished_run, one_line_error, run, tree_state

FOREIGN = {"pid": 1, "host": socket.gethostname()}  # a live process that is not this one: another command


@pytest.fixture(scope="module")
def world(tiny_model_dir, tiny_ensemble, tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    finished_run(root / "run", tiny_model_dir, tiny_ensemble, 8, 4)  # 2 shards of 4, made with --threads 1
    return {"root": root, "run": root / "run", "model": tiny_model_dir, "ensemble": tiny_ensemble,
            "data": tiny_dataset}


def _copy_run(world, tmp_path) -> Path:
    shutil.copytree(world["run"], tmp_path / "run")
    return tmp_path / "run"


def _lock(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".datasetddpm.lock").write_text(json.dumps(FOREIGN))


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "index.jsonl").read_text().splitlines()]


def _write_rows(run: Path, rows: list[dict]) -> None:
    (run / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2) + "\n")


# ---- 1. one order for every writer: lock, validate, write ------------------------------------------------------


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _damaged_locked_run(w, tmp):
    run_dir = _copy_run(w, tmp)
    (run_dir / "shards/00000/images/stray.png").write_bytes(b"x")
    _flip_byte(run_dir / "shards/00001/masks/0000005.png")
    return run_dir, ["verify", run_dir, "--repair", "--quiet"]


def _sample_args(w, out):
    return ["sample", "--out", out, "--n", 8, "--model", w["model"], "--sampling-steps", 2, "--batch-size", 4,
            "--shard-size", 4, "--ensemble", w["ensemble"], "--threads", 1, "--quiet"]


def _trained_ensemble(w, tmp):
    out = tmp / "ens"
    assert run("train-ensemble", "--data", w["data"], "--colour", "--members", 1, "--out", out, "--quiet").exit_code == 0
    return out, ["train-ensemble", "--data", w["data"], "--colour", "--members", 2, "--out", out, "--overwrite",
                 "--quiet"]


def _half_sampled(w, tmp):
    run_dir = _copy_run(w, tmp)
    shutil.rmtree(run_dir / "shards/00001")
    (run_dir / "shards/00001.json").unlink()
    (run_dir / "shards/00001.labels.json").unlink()
    return run_dir, _sample_args(w, run_dir)


def _unlabelled_images(w, tmp):
    out = tmp / "li"
    _lock(out)
    return out, ["label-images", "--images", w["data"] / "real" / "test", "--ensemble", w["ensemble"], "--out", out,
                 "--quiet"]


# Every command that writes or deletes in a run or model folder: (id, setup(world, tmp) -> (folder, argv)).
WRITERS = [
    ("verify-repair", _damaged_locked_run),
    ("finalize", lambda w, t: (lambda r: (r, ["finalize", "--out", r, "--drop-fraction", 0.5]))(_copy_run(w, t))),
    ("export-reads-a-locked-run", lambda w, t: (lambda r: (r, ["export", r, "--format", "hf", "--out", t / "hf"]))(
        _copy_run(w, t))),
    ("label-overwrite", lambda w, t: (lambda r: (r, ["label", "--out", r, "--ensemble", w["ensemble"], "--overwrite",
                                                      "--threads", 1, "--quiet"]))(_copy_run(w, t))),
    ("sample-resume", _half_sampled),
    ("label-images", _unlabelled_images),
    ("train-ensemble-overwrite", _trained_ensemble),
    ("train-deeplab", lambda w, t: (t / "dl", ["train-deeplab", "--run", w["run"], "--val", w["data"], "--out",
                                               t / "dl", "--epochs", 1, "--batch-size", 2, "--quiet"])),
    ("train-ddpm", lambda w, t: (t / "ddpm", ["train-ddpm", "--out", t / "ddpm", "--steps", 1, "--pool-size", 8,
                                              "--batch-size", 2, "--channels", "16,32,32", "--device", "cpu",
                                              "--quiet"])),
]


@pytest.mark.parametrize("case", [c[1] for c in WRITERS], ids=[c[0] for c in WRITERS])
def test_no_writer_changes_a_folder_another_command_holds(world, tmp_path, case):
    folder, argv = case(world, tmp_path)
    _lock(folder)
    before = tree_state(tmp_path)
    one_line_error(run(*argv), "in use by another command (pid 1")
    assert tree_state(tmp_path) == before, "a refused writer changed the locked folder (or made another)"


def test_the_lock_is_reentrant_only_in_its_holder(tmp_path):
    from datasetddpm.errors import DatasetDDPMError
    from datasetddpm.io import LOCK_NAME, check_unlocked, run_lock
    with run_lock(tmp_path):
        with run_lock(tmp_path):  # repair -> sample -> finalize: one holder, one lock
            check_unlocked(tmp_path)
        assert (tmp_path / LOCK_NAME).is_file()
    assert not (tmp_path / LOCK_NAME).exists()
    _lock(tmp_path)
    with pytest.raises(DatasetDDPMError, match="in use by another command"):
        check_unlocked(tmp_path)


def test_finalize_on_a_read_only_run_is_one_line(world, tmp_path, monkeypatch):
    import datasetddpm.io as dio
    run_dir = _copy_run(world, tmp_path)
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(".datasetddpm.lock") and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)
    monkeypatch.setattr(dio.os, "open", read_only)
    before = tree_state(run_dir)
    one_line_error(run("finalize", "--out", run_dir), "cannot take the run lock (read-only file system)")
    assert tree_state(run_dir) == before


# ---- 3. verify covers every recorded field; repair is byte-exact for every damage it detects -------------------


def _swap_kept(run_dir):
    rows = _rows(run_dir)
    kept = next(r for r in rows if r["kept"])
    dropped = next(r for r in rows if not r["kept"])
    kept["kept"], dropped["kept"] = False, True
    _write_rows(run_dir, rows)


def _edit_index_uncertainty(run_dir):
    rows = _rows(run_dir)
    rows[2]["uncertainty"] += 0.125
    _write_rows(run_dir, rows)


def _edit_sidecar_uncertainty(run_dir):
    _edit_json(run_dir / "shards/00001.labels.json", lambda d: d["samples"][1].update(uncertainty=0.0))


def _truncate(path: Path, keep: int):
    path.write_bytes(path.read_bytes()[:keep])


def _out_of_range_mask(run_dir, sample="0000001", shard="00000", row=1):
    """A mask holding class id 9 (7 classes) whose sha256 the sidecar and the index both record."""
    path = run_dir / f"shards/{shard}/masks/{sample}.png"
    with Image.open(path) as im:
        mask, palette = np.asarray(im).copy(), im.getpalette()
    mask[:4, :4] = 9
    out = Image.fromarray(mask, mode="P")
    out.putpalette(palette)
    out.save(path)
    import hashlib
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _edit_json(run_dir / f"shards/{shard}.labels.json",
               lambda d: next(s for s in d["samples"] if s["id"] == int(sample)).update(mask_sha256=digest))
    rows = _rows(run_dir)
    rows[row]["mask_sha256"] = digest
    _write_rows(run_dir, rows)


DAMAGE = {  # every kind of damage verify detects: (damage, text of the problem listed)
    "image byte flipped": (lambda r: _flip_byte(r / "shards/00001/images/0000005.png"), "0000005.png: sha256 differs"),
    "mask truncated": (lambda r: _truncate(r / "shards/00000/masks/0000002.png", 50), "0000002.png: sha256 differs"),
    "image missing": (lambda r: (r / "shards/00001/images/0000006.png").unlink(), "0000006.png: missing"),
    "labels sidecar truncated": (lambda r: _truncate(r / "shards/00000.labels.json", 60),
                                 "00000.labels.json: not valid JSON"),
    "images sidecar truncated": (lambda r: _truncate(r / "shards/00001.json", 30), "00001.json: not valid JSON"),
    "images sidecar missing": (lambda r: (r / "shards/00001.json").unlink(), "shard not sampled"),
    "labels sidecar without records": (lambda r: _edit_json(r / "shards/00001.labels.json", lambda d: d.pop("samples")),
                                       "does not hold the shard's records"),
    "sidecar of another config": (lambda r: _edit_json(r / "shards/00000.json", lambda d: d.update(config_hash="0" * 16)),
                                  "made with config 0000000000000000"),
    "class pixel counts edited": (lambda r: _edit_json(r / "shards/00001.labels.json",
                                                       lambda d: d["samples"][0].update(class_pixels=[0] * 7)),
                                  "class pixel counts of sample 4 differ"),
    "uncertainty edited in the labels sidecar": (_edit_sidecar_uncertainty, "uncertainty is"),
    "uncertainty edited in the index": (_edit_index_uncertainty, "uncertainty is"),
    "kept flags swapped": (_swap_kept, "kept is"),
    "index line removed": (lambda r: (r / "index.jsonl").write_text(
        "".join((r / "index.jsonl").read_text().splitlines(True)[1:])), "index.jsonl: lists 7 samples"),
    "index line damaged": (lambda r: (r / "index.jsonl").write_text("{oops\n" + "".join(
        (r / "index.jsonl").read_text().splitlines(True)[1:])), "index.jsonl: line 1 is not valid JSON"),
    "index missing": (lambda r: (r / "index.jsonl").unlink(), "index.jsonl: missing"),
    "card counts edited": (lambda r: _edit_json(r / "dataset_card.json", lambda d: d["counts"].update(kept=1)),
                           "dataset_card.json: counts differ"),
    "card class names edited": (lambda r: _edit_json(r / "dataset_card.json", lambda d: d.update(classes=list("zyxwvut"))),
                                "dataset_card.json: classes differ"),
    "card field removed": (lambda r: _edit_json(r / "dataset_card.json", lambda d: d.pop("counts")),
                           "dataset_card.json: counts differ"),
    "class id out of range": (_out_of_range_mask, "holds class ids [9] outside 0..6"),
    "stray file": (lambda r: (r / "shards/00000/masks/extra.png").write_bytes(b"x"), "extra.png: stray file"),
    "atomic-write temporary": (lambda r: (r / ".index.jsonl.abc123.tmp").write_bytes(b"x"),
                               ".index.jsonl.abc123.tmp: temporary file"),
    "library temporary": (lambda r: (r / ".tmpAb3dE9").write_bytes(b"x" * 1000), ".tmpAb3dE9: temporary file"),
    "partial shard folder": (lambda r: (r / "shards/.00001.partial").mkdir(), ".00001.partial: left by an interrupted"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_verify_lists_each_damage_and_repair_restores_the_exact_bytes(world, tmp_path, kind):
    run_dir = _copy_run(world, tmp_path)
    original = tree_state(run_dir)
    damage, message = DAMAGE[kind]
    damage(run_dir)
    found = run("verify", run_dir)
    assert found.exit_code == 1 and message in found.output, found.output
    fixed = run("verify", run_dir, "--repair", "--quiet")
    assert fixed.exit_code == 0, fixed.output
    assert tree_state(run_dir) == original


def test_a_card_written_before_a_field_existed_is_not_damage(world, tmp_path):
    run_dir = _copy_run(world, tmp_path)
    _edit_json(run_dir / "dataset_card.json", lambda d: [d.pop(k) for k in ("class_balance", "warnings") if k in d])
    assert run("verify", run_dir).exit_code == 0


def test_train_deeplab_and_export_skip_no_check_verify_makes(world, tmp_path):
    """The kept flags, the mask bytes and their class ids: one check, in export and train-deeplab alike."""
    for name, damage, needle in (("swap", _swap_kept, "kept is"),
                                 ("bytes", lambda r: _reencode_kept_mask(r), "differs from the sha256 in the run's index"),
                                 ("ids", lambda r: _out_of_range_kept_mask(r), "holds class id 9, outside 0..6")):
        run_dir = tmp_path / name
        shutil.copytree(world["run"], run_dir)
        damage(run_dir)
        before = tree_state(tmp_path)
        one_line_error(run("train-deeplab", "--run", run_dir, "--val", world["data"], "--out", tmp_path / "dl",
                           "--epochs", 1, "--batch-size", 2, "--quiet"), needle)
        one_line_error(run("export", run_dir, "--format", "hf", "--out", tmp_path / "hf"), needle)
        assert tree_state(tmp_path) == before


def _kept_row(run_dir) -> tuple[int, dict]:
    return next((i, r) for i, r in enumerate(_rows(run_dir)) if r["kept"])


def _reencode_kept_mask(run_dir):
    _, row = _kept_row(run_dir)
    path = run_dir / row["mask"]
    with Image.open(path) as im:
        im.save(path, optimize=True, compress_level=1)  # the same ids, other bytes


def _out_of_range_kept_mask(run_dir):
    i, row = _kept_row(run_dir)
    _out_of_range_mask(run_dir, f"{row['id']:07d}", f"{row['shard']:05d}", i)


def test_verify_of_a_manifest_with_an_unknown_key_is_one_line(world, tmp_path):
    run_dir = _copy_run(world, tmp_path)
    _edit_json(run_dir / "manifest.json", lambda d: d["config"].update(temperature=0.7))
    before = tree_state(run_dir)
    for argv in (["verify", run_dir], ["verify", run_dir, "--repair"], ["finalize", "--out", run_dir]):
        one_line_error(run(*argv), "manifest.json: config has unknown key(s) 'temperature'")
    assert tree_state(run_dir) == before


# ---- 4. one error path for OS and library write errors ---------------------------------------------------------


def test_a_safetensors_write_that_fails_is_one_line_and_leaves_no_temporary(tmp_path):
    """A real write error (the process's file size limit: EFBIG) in train-ddpm's safetensors state."""
    out = tmp_path / "ddpm"
    limit = 64 * 1024  # the JSON files fit, the weights do not
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
            "from datasetddpm.cli.main import main; sys.argv[0] = 'datasetddpm'; main()")
    done = subprocess.run([sys.executable, "-c", code, "train-ddpm", "--out", str(out), "--steps", "1", "--pool-size",
                           "8", "--batch-size", "2", "--channels", "16,32,32", "--threads", "1", "--device", "cpu",
                           "--quiet"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert "cannot write: file too large" in lines[0] and ".safetensors" in lines[0], lines[0]
    assert not [p.name for p in out.rglob(".*") if p.is_file()], "a temporary file was left"


def test_save_tensors_writes_the_bytes_safetensors_writes(tmp_path):
    from safetensors.torch import save_file
    from datasetddpm.io import save_tensors
    tensors = {"w": torch.randn(7, 5), "n": torch.arange(3)}
    save_tensors(tmp_path / "ours.safetensors", tensors)
    save_file(tensors, str(tmp_path / "theirs.safetensors"))
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "theirs.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.safetensors", "theirs.safetensors"]


@pytest.mark.parametrize("argv_of", [
    lambda w, out: _sample_args(w, out) + ["--seed", -1],
    lambda w, out: ["train-ensemble", "--data", w["data"], "--colour", "--out", out, "--seed", -1],
    lambda w, out: ["train-deeplab", "--run", w["run"], "--val", w["data"], "--out", out, "--seed", -1],
    lambda w, out: ["train-ddpm", "--out", out, "--steps", 1, "--seed", -1],
], ids=["sample", "train-ensemble", "train-deeplab", "train-ddpm"])
def test_a_negative_seed_is_refused_before_anything_is_written(world, tmp_path, argv_of):
    before = tree_state(tmp_path)
    one_line_error(run(*argv_of(world, tmp_path / "out")), "--seed")
    assert tree_state(tmp_path) == before and not (tmp_path / "out").exists()


def _non_utf8_folder(world, tmp_path) -> Path:
    folder = tmp_path / "images"
    shutil.copytree(world["data"] / "real" / "test", folder)
    for p in folder.glob("*.npy"):
        p.unlink()
    first = sorted(folder.glob("*.png"))[0]
    os.rename(first, os.path.join(os.fsencode(folder), b"caf\xe9.png"))  # Latin-1, not UTF-8
    return folder


def test_file_names_have_one_encoding_safe_path():
    from datasetddpm.errors import InputError, name_bytes, printable
    latin1 = os.fsdecode(b"caf\xe9.png")
    assert name_bytes(latin1) == b"caf\xe9.png" and name_bytes("café.png") == "café.png".encode()
    assert printable(latin1) == "caf\\xe9.png" and printable("café.png") == "café.png"
    assert str(InputError(latin1, "unreadable")).encode() == b"caf\\xe9.png: unreadable"


def test_label_images_takes_a_file_name_that_is_not_utf8(world, tmp_path):
    folder = _non_utf8_folder(world, tmp_path)
    out = tmp_path / "run"
    done = run("label-images", "--images", folder, "--ensemble", world["ensemble"], "--out", out, "--batch-size", 2,
               "--shard-size", 2, "--quiet")
    assert done.exit_code == 0, done.output
    sources = [s.get("source") for k in range(2) for s in json.loads((out / f"shards/{k:05d}.json").read_text())["samples"]]
    assert os.fsencode(sources[0]) == b"caf\xe9.png"  # the name's own bytes, recorded losslessly
    (folder / os.fsdecode(b"caf\xe9.png")).write_bytes(b"not a png")
    before = tree_state(tmp_path)
    one_line_error(run("label-images", "--images", folder, "--ensemble", world["ensemble"], "--out", tmp_path / "o2",
                       "--quiet"), "caf\\xe9.png: unreadable image")
    assert tree_state(tmp_path) == before


# ---- 5. leftovers and overwrite discipline ----------------------------------------------------------------------


def test_rerun_sweeps_library_temporaries(tmp_path):
    from datasetddpm.io import remove_stale_temporaries
    for name in (".tmpAb3dE9", ".model.safetensors.x1y2z3.tmp", ".tmp_xyz123"):
        (tmp_path / name).write_bytes(b"x")
    for name in ("keep.tmp", ".tmp", ".tmpshort", "tmpAb3dE9"):  # not a temporary's name: kept
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".tmpsub0001").mkdir()
    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp", ".tmpshort", ".tmpsub0001", "keep.tmp", "tmpAb3dE9"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: --device cuda is valid here")
def test_sample_on_cuda_without_a_gpu_writes_nothing(world, tmp_path):
    one_line_error(run(*_sample_args(world, tmp_path / "run"), "--device", "cuda"), "--device: cuda asked for")
    assert not (tmp_path / "run").exists()


def test_train_ensemble_replaces_an_ensemble_of_other_options_only_with_overwrite(world, tmp_path):
    out = tmp_path / "ens"
    args = ["train-ensemble", "--data", world["data"], "--colour", "--out", out, "--quiet"]
    assert run(*args, "--members", 1).exit_code == 0
    before = tree_state(out)
    one_line_error(run(*args, "--members", 2), "holds an ensemble trained with other options (members 1 != 2)",
                   "--overwrite")
    assert tree_state(out) == before
    again = run(*args, "--members", 1)  # an identical rerun leaves the files as they are
    assert again.exit_code == 0 and "left as it was" in again.output and tree_state(out) == before
    assert run(*args, "--members", 2, "--overwrite").exit_code == 0
    assert json.loads((out / "ensemble.json").read_text())["ensemble"]["members"] == 2


# ---- 6. one check per kind, in every command -------------------------------------------------------------------


def test_segment_refuses_images_at_another_size_than_the_ensembles(world, tmp_path):
    ens = tmp_path / "ens"
    shutil.copytree(world["ensemble"], ens)
    _edit_json(ens / "ensemble.json", lambda d: d["ensemble"].update(resolution=32))
    images = tmp_path / "big"
    images.mkdir()
    for p in sorted((world["data"] / "real" / "test").glob("*.png")):
        Image.open(p).convert("RGB").resize((64, 64)).save(images / p.name)
    before = tree_state(tmp_path)
    one_line_error(run("segment", "--images", images, "--ensemble", ens, "--out", tmp_path / "out", "--quiet"),
                   "image is 64x64 but this run expects 32x32")
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("limit", [0, -1])
def test_limit_below_one_is_one_line(world, tmp_path, limit):
    for argv in (["evaluate", "--ensemble", world["ensemble"], "--data", world["data"], "--limit", limit, "--quiet"],
                 ["train-ensemble", "--data", world["data"], "--colour", "--out", tmp_path / "e", "--limit", limit]):
        one_line_error(run(*argv), "--limit")
    assert not (tmp_path / "e").exists()
    from datasetddpm.data.folders import read_images
    from datasetddpm.errors import OptionError
    with pytest.raises(OptionError, match="--limit: must be >= 1"):
        read_images(world["data"] / "real" / "test", limit)


def test_stylegan2_reader_does_not_pass_on_torchs_advice(tmp_path):
    import io
    import pickle
    from datasetddpm.errors import InputError
    from datasetddpm.generators.stylegan2_pickle import load_snapshot

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    class NestedRecord:  # what a snapshot's tensors are: torch.storage._load_from_bytes(<a torch.save>)
        def __reduce__(self):
            buf = io.BytesIO()
            torch.save({"x": Payload()}, buf, _use_new_zipfile_serialization=False)
            return torch.storage._load_from_bytes, (buf.getvalue(),)

    (tmp_path / "snap.pkl").write_bytes(pickle.dumps({"G_ema": NestedRecord()}))
    with pytest.raises(InputError) as refused:
        load_snapshot(tmp_path / "snap.pkl")
    text = str(refused.value)
    assert "system" in text and "no code from the file is run" in text and "\n" not in text
    assert "weights_only" not in text and "arbitrary code" not in text
    assert not (tmp_path / "pwned").exists()
