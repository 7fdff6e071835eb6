"""The bad-input matrix: each mistake a user makes is one line naming the file or option and the problem,
exit 2, and the disk exactly as it was (every byte under the inputs' and outputs' common root)."""

import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import finished_run, one_line_error, run, tree_state


@dataclass
class World:
    root: Path  # everything a case reads or could write lies under here
    model: Path
    ensemble: Path
    data: Path  # dataset root (real/train, real/test)
    run: Path  # a finished (sampled, labelled, finalized) run
    case: Path = None  # this case's own folder (inputs it made; outputs it must not create)

    @property
    def train(self) -> Path:
        return self.data / "real" / "train"

    def out(self, name: str = "out") -> Path:
        return self.case / name

    def folder(self, mutate=None) -> Path:
        """A copy of the 4 labelled training images, changed by `mutate(folder, first_stem)`."""
        f = self.case / "labelled"
        shutil.copytree(self.train, f)
        if mutate:
            mutate(f, sorted(f.glob("*.png"))[0].stem)
        return f

    def copy(self, src: Path, name: str) -> Path:
        shutil.copytree(src, self.case / name)
        return self.case / name


@pytest.fixture(scope="module")
def world(tiny_model_dir, tiny_ensemble, tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    w = World(root, root / "model", root / "ens", root / "data", root / "run")
    shutil.copytree(tiny_model_dir, w.model)
    shutil.copytree(tiny_dataset, w.data)
    shutil.copytree(tiny_ensemble, w.ensemble)
    meta = json.loads((w.ensemble / "ensemble.json").read_text())
    meta["ensemble"]["model"] = str(w.model)
    (w.ensemble / "ensemble.json").write_text(json.dumps(meta))
    finished_run(w.run, w.model, w.ensemble, 4, 2)
    return w


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _as_jpeg(f: Path, stem: str) -> Path:
    Image.open(f / f"{stem}.png").convert("RGB").save(f / f"{stem}.jpg", quality=95)
    (f / f"{stem}.png").unlink()
    return f / f"{stem}.jpg"


def _damage_jpeg_header(f, stem):
    jpg = _as_jpeg(f, stem)
    data = bytearray(jpg.read_bytes())
    data[2:60] = bytes(58)
    jpg.write_bytes(bytes(data))


class Evil:
    """Unpickling this runs a shell command: the marker file proves whether any code ran."""

    marker = None

    def __reduce__(self):
        return (os.system, (f"touch {Evil.marker}",))


def _pickled_mask(f, stem):
    np.save(f / f"{stem}.npy", np.array([Evil()], dtype=object), allow_pickle=True)


def _mask_png(mode: str, channels: int):
    def mutate(f, stem):
        (f / f"{stem}.npy").unlink()
        Image.fromarray(np.zeros((32, 32, channels), np.uint8), mode).save(f / f"{stem}_mask.png")
    return mutate


def _npy(stem_array):
    def mutate(f, stem):
        np.save(f / f"{stem}.npy", stem_array)
    return mutate


def _all_ignore(f, stem):
    for p in f.glob("*.npy"):
        np.save(p, np.full((32, 32), 255, np.uint8))


def _resize_all(size):
    def mutate(f, stem):
        for p in f.glob("*.png"):
            Image.open(p).convert("RGB").resize((size, size)).save(p)
        for p in f.glob("*.npy"):
            np.save(p, np.zeros((size, size), np.uint8))
    return mutate


def _one_larger(f, stem):
    Image.open(f / f"{stem}.png").convert("RGB").resize((64, 64)).save(f / f"{stem}.png")
    np.save(f / f"{stem}.npy", np.zeros((64, 64), np.uint8))


def _ens(w, *extra):
    return ["train-ensemble", "--data", w.folder(), "--out", w.out(), "--quiet", *extra]


def _colour_on(mutate):
    return lambda w: ["train-ensemble", "--data", w.folder(mutate), "--out", w.out(), "--colour", "--quiet"]


def _sample(w, *extra):
    return ["sample", "--out", w.out(), "--n", 4, "--model", w.model, "--sampling-steps", 2, "--batch-size", 2,
            "--shard-size", 2, "--threads", 1, "--quiet", *extra]


def _deeplab(w, *extra, val=None):
    return ["train-deeplab", "--run", w.run, "--val", val or w.data, "--out", w.out(), "--epochs", 1, "--quiet",
            *extra]


def _damaged_index(w):
    run = w.copy(w.run, "run")
    lines = (run / "index.jsonl").read_text().splitlines()
    lines[1] = lines[1][:20]
    (run / "index.jsonl").write_text("\n".join(lines) + "\n")
    return run


def _broken_ensemble(change):
    def build(w):
        e = w.copy(w.ensemble, "ens")
        change(e)
        return ["segment", "--images", w.train, "--out", w.out(), "--ensemble", e, "--quiet"]
    return build


def _broken_model(change):
    def build(w):
        m = w.copy(w.model, "model")
        change(m)
        return _sample(w, "--model", m)
    return build


def _segmenter_with(num_classes):
    def build(w):
        from datasetddpm.segmenters.model import SegmenterConfig, create_segmenter, save_segmenter
        save_segmenter(w.case / "seg", create_segmenter(SegmenterConfig(num_classes=num_classes)))
        return ["compare", "--ensemble", w.ensemble, "--segmenter", w.case / "seg", "--data", w.data,
                "--out", w.out(), "--quiet"]
    return build


def _torch_pickle(w):
    evil = w.case / "evil.pt"
    torch.save({"weight": torch.zeros(2), "hook": Evil()}, evil)
    return _sample(w, "--model", f"adm:lsun_256:{evil}")


def _read_only(w, monkeypatch):
    import datasetddpm.io as dio
    real_access = os.access
    monkeypatch.setattr(dio.os, "access", lambda p, mode: False if Path(p) == w.case else real_access(p, mode))
    return _sample(w)


def _disk_full(w, monkeypatch):
    from collections import namedtuple
    import datasetddpm.io as dio
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(dio.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))
    return _ens(w, "--colour")  # the trainers check free space too


def _enospc_on_write(w, monkeypatch):
    import datasetddpm.io as dio

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(dio.tempfile, "NamedTemporaryFile", full)  # the probe write before any output
    return ["make-dataset", "--out", w.out(), "--train", 1, "--test", 1]


def _cuda(w):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: --device cuda is valid here")
    return _ens(w, "--colour", "--device", "cuda")


# (id, build(world) -> argv, text the one line must contain)
CASES = [
    # labelled folders: images
    ("png-garbage", _colour_on(lambda f, s: (f / f"{s}.png").write_bytes(b"not a png")), "unreadable image"),
    ("png-truncated", _colour_on(lambda f, s: _truncate(f / f"{s}.png", 100)), "image file is truncated"),
    ("jpeg-truncated", _colour_on(lambda f, s: _truncate(_as_jpeg(f, s), 300)), ".jpg: unreadable image"),
    ("jpeg-bad-header", _colour_on(_damage_jpeg_header), ".jpg: unreadable image (UnidentifiedImageError"),
    ("image-without-mask", _colour_on(lambda f, s: (f / f"{s}.npy").unlink()), "no mask found"),
    ("mask-without-image", _colour_on(lambda f, s: shutil.copy(f / f"{s}.npy", f / "lost.npy")), "lost.npy: mask with no image"),
    ("sizes-differ", _colour_on(_one_larger), "all images of a set must have one size"),
    ("size-the-unet-cannot-take", lambda w: ["train-ensemble", "--data", w.folder(_resize_all(30)), "--out", w.out(),
                                             "--model", w.model, "--blocks", "1", "--steps", "50", "--quiet"],
     "image is 30x30 but the model was trained at 32x32"),
    ("empty-folder", lambda w: ["train-ensemble", "--data", w.case, "--out", w.out(), "--colour"], "no .png/.jpg images found"),
    ("data-missing", lambda w: ["train-ensemble", "--data", w.case / "nope", "--out", w.out(), "--colour"], "nope: directory not found"),
    ("data-is-a-file", lambda w: ["train-ensemble", "--data", w.model / "config.json", "--out", w.out(), "--colour"],
     "config.json: not a directory"),
    # labelled folders: masks
    ("npy-truncated", _colour_on(lambda f, s: _truncate(f / f"{s}.npy", 90)), ".npy: unreadable mask"),
    ("npy-not-an-array", _colour_on(lambda f, s: (f / f"{s}.npy").write_bytes(b"hello")), "not a .npy array file"),
    ("npy-pickle-with-code", _colour_on(_pickled_mask), "refused for safety"),
    ("npy-float", _colour_on(_npy(np.zeros((32, 32), np.float32))), "must be a 2-D integer array"),
    ("npy-3d", _colour_on(_npy(np.zeros((32, 32, 2), np.uint8))), "must be a 2-D integer array"),
    ("mask-size", _colour_on(_npy(np.zeros((16, 16), np.uint8))), "mask is 16x16 but its image is 32x32"),
    ("class-id-too-large", _colour_on(_npy(np.full((32, 32), 40, np.int64))), "class id 40 is out of range"),
    ("class-id-negative", _colour_on(_npy(np.full((32, 32), -1, np.int64))), "class id -1 is out of range"),
    ("mask-png-rgb", _colour_on(_mask_png("RGB", 3)), "mask PNG is an RGB colour image"),
    ("mask-png-la", _colour_on(_mask_png("LA", 2)), "got mode LA"),
    ("all-ignore", _colour_on(_all_ignore), "every mask pixel is the ignore label 255"),
    # options
    ("members-0", lambda w: _ens(w, "--colour", "--members", 0), "--members: must be >= 1"),
    ("blocks-not-ints", lambda w: _ens(w, "--model", w.model, "--blocks", "1,x"), "--blocks: expected comma-separated integers"),
    ("block-unknown", lambda w: _ens(w, "--model", w.model, "--blocks", "99", "--steps", "50"), "unknown decoder block 99"),
    ("step-outside", lambda w: _ens(w, "--model", w.model, "--blocks", "1", "--steps", "5000"), "step 5000 is outside [0, 1000)"),
    ("preset-unknown", lambda w: _ens(w, "--colour", "--preset", "nope"), "--preset: unknown preset 'nope'"),
    ("device-unknown", lambda w: _ens(w, "--colour", "--device", "tpu"), "--device: must be auto, cpu, cuda or cuda:N"),
    ("device-cuda-without-gpu", _cuda, "--device: cuda asked for but no usable GPU"),
    ("option-unknown", lambda w: _sample(w, "--eta", 3), "No such option: --eta"),
    ("option-not-a-number", lambda w: _sample(w, "--batch-size", "two"), "Invalid value for '--batch-size'"),
    ("command-unknown", lambda w: ["smaple", "--out", w.out()], "No such command 'smaple'"),
    ("sampler-unknown", lambda w: _sample(w, "--sampler", "foo"), "--sampler: unknown sampler 'foo'"),
    ("sampling-steps-0", lambda w: _sample(w, "--sampling-steps", 0), "--sampling-steps: 0 is outside [1, 1000]"),
    ("for-annotation-0", lambda w: _sample(w, "--for-annotation", 0), "--for-annotation: must be >= 1"),
    ("for-annotation-with-run-options", lambda w: _sample(w, "--for-annotation", 2, "--workers", 2),
     "--for-annotation: exports samples for annotators and takes no --n, --workers"),
    ("annotate-k-0", lambda w: ["annotate", "--out", w.out(), "--k", 0, "--model", w.model], "--k: must be >= 1"),
    ("workers-0", lambda w: _sample(w, "--workers", 0), "--workers: must be >= 1"),
    ("threads-0", lambda w: _sample(w, "--threads", 0), "--threads: must be >= 1"),
    ("shard-not-a-multiple", lambda w: _sample(w, "--shard-size", 3), "--shard-size: must be a positive multiple"),
    ("gpus-without-gpus", lambda w: _sample(w, "--gpus", 2) if not torch.cuda.is_available() else pytest.skip("GPUs"),
     "--gpus: asked for 2 GPU worker(s)"),
    ("train-ddpm-steps-0", lambda w: ["train-ddpm", "--out", w.out(), "--steps", 0], "--steps: must be >= 1"),
    ("train-ddpm-ema-1.5", lambda w: ["train-ddpm", "--out", w.out(), "--steps", 1, "--ema-decay", 1.5], "--ema-decay: must be in [0, 1)"),
    ("make-dataset-negative", lambda w: ["make-dataset", "--out", w.out(), "--train", -1], "--train: must be >= 0"),
    ("finalize-drop-1.5", lambda w: ["finalize", "--out", w.run, "--drop-fraction", 1.5], "--drop-fraction: must be in [0, 1)"),
    ("deeplab-epochs-0", lambda w: _deeplab(w, "--epochs", 0), "--epochs: must be >= 1"),
    ("deeplab-arch", lambda w: _deeplab(w, "--arch", "foo"), "--arch: unknown architecture 'foo'"),
    ("deeplab-encoder", lambda w: _deeplab(w, "--encoder", "resnet9000"), "--encoder: unknown encoder 'resnet9000'"),
    ("deeplab-batch-1", lambda w: _deeplab(w, "--batch-size", 1), "BatchNorm cannot train on a batch of 1"),
    # models and ensembles
    ("model-missing", lambda w: _sample(w, "--model", w.case / "nomodel"), "nomodel: model directory not found"),
    ("model-config-not-json", _broken_model(lambda m: (m / "config.json").write_text("{oops")), "config.json: not valid JSON"),
    ("model-weights-truncated", _broken_model(lambda m: _truncate(m / "model.safetensors", 1000)),
     "model.safetensors: not a readable safetensors file"),
    ("model-weights-missing", _broken_model(lambda m: (m / "model.safetensors").unlink()), "model.safetensors: file not found"),
    ("checkpoint-pickle-with-code", _torch_pickle, "refusing to run code from a checkpoint"),
    ("ensemble-json-not-json", _broken_ensemble(lambda e: (e / "ensemble.json").write_text("[1,")), "ensemble.json: not valid JSON"),
    ("ensemble-json-foreign", _broken_ensemble(lambda e: (e / "ensemble.json").write_text('{"format": "x"}')),
     "not a DatasetDDPM ensemble"),
    ("ensemble-weights-missing", _broken_ensemble(lambda e: (e / "ensemble.safetensors").unlink()),
     "ensemble.safetensors: file not found"),
    ("ensemble-weights-truncated", _broken_ensemble(lambda e: _truncate(e / "ensemble.safetensors", 500)),
     "ensemble.safetensors: not a readable safetensors file"),
    ("ensemble-missing", lambda w: ["label", "--out", w.run, "--ensemble", w.case / "none", "--quiet"], "none/ensemble.json: file not found"),
    # runs, class counts
    ("label-not-a-run", lambda w: ["label", "--out", w.case, "--ensemble", w.ensemble, "--quiet"], "manifest.json: file not found"),
    ("finalize-not-a-run", lambda w: ["finalize", "--out", w.case], "manifest.json: file not found"),
    ("verify-not-a-run", lambda w: ["verify", w.case], "not a generation run (no manifest.json)"),
    ("deeplab-unfinalized", lambda w: ["train-deeplab", "--run", w.case, "--val", w.data, "--out", w.out()],
     "no index; run `datasetddpm finalize`"),
    ("index-line-damaged", lambda w: _deeplab(w, "--run", _damaged_index(w)), "index.jsonl: line 2 is not valid JSON"),
    ("deeplab-val-classes", lambda w: _deeplab(w, val=w.folder(_npy(np.full((32, 32), 9, np.uint8)))), "class id 9 is out of range"),
    ("evaluate-classes", lambda w: ["evaluate", "--data", w.folder(_npy(np.full((32, 32), 9, np.uint8))), "--ensemble", w.ensemble,
                                    "--quiet"], "class id 9 is out of range: ids must be in [0, 7)"),
    ("compare-class-count", _segmenter_with(3), "the segmenter predicts 3 classes but the ensemble 7"),
    ("segment-neither", lambda w: ["segment", "--images", w.train, "--out", w.out()], "--ensemble/--segmenter: give exactly one"),
    # output locations
    ("out-is-a-file", lambda w: ["segment", "--images", w.train, "--out", w.model / "config.json", "--ensemble", w.ensemble,
                                 "--quiet"], "--out must be a directory"),
    ("out-under-a-file", lambda w: _sample(w, "--out", w.model / "config.json" / "run"), "is not a directory"),
]
# Every other command with a writable output: one mistake each, refused before anything is written.
WRITABLE_OUTPUTS = [
    ("check-samples-n-0", lambda w: ["check-samples", "--out", w.out(), "--model", w.model, "--n", 0], "'--n'"),
    ("demo-threads-0", lambda w: ["demo", "--out", w.out(), "--threads", 0], "--threads: must be >= 1"),
    ("import-annotations-missing", lambda w: ["import-annotations", w.case / "export.json", "--out", w.out()],
     "export.json"),
    ("probe-steps", lambda w: ["probe", "--data", w.data, "--out", w.out(), "--model", w.model, "--steps", "x"],
     "--steps: expected comma-separated integers"),
    ("reproduce-preset", lambda w: ["reproduce", "nope", "--out", w.out()], "unknown preset 'nope'"),
    ("train-oracle-steps-0", lambda w: ["train-oracle", "--out", w.out(), "--steps", 0], "'--steps'"),
    ("train-stylegan2-steps-0", lambda w: ["train-stylegan2", "--out", w.out(), "--steps", 0], "--steps: must be >= 1"),
    ("convert-adm-missing", lambda w: ["convert-adm", "--checkpoint", w.case / "nope.pt", "--flags", "lsun_256",
                                       "--out", w.out()], "nope.pt: file not found"),
    ("convert-stylegan2-missing", lambda w: ["convert-stylegan2", "--checkpoint", w.case / "nope.pkl", "--out", w.out()],
     "nope.pkl: file not found"),
    ("export-format", lambda w: ["export", w.run, "--format", "coco", "--out", w.out()], "--format"),
    ("label-images-no-images", lambda w: ["label-images", "--images", w.case, "--ensemble", w.ensemble, "--out",
                                          w.out(), "--quiet"], "no .png/.jpg images found"),
    ("label-images-limit-like-batch-0", lambda w: ["label-images", "--images", w.train, "--ensemble", w.ensemble,
                                                   "--out", w.out(), "--batch-size", 0, "--quiet"], "--"),
    ("suggest-k-0", lambda w: ["suggest", "--images", w.train, "--ensemble", w.ensemble, "--out", w.out(), "--k", 0,
                               "--quiet"], "--k: must be in [1, 4]"),
    ("verify-repair-workers-0", lambda w: ["verify", w.copy(w.run, "run"), "--repair", "--workers", 0], "--workers"),
    ("seed-negative", lambda w: _sample(w, "--seed", -1), "'--seed'"),
    ("evaluate-limit-0", lambda w: ["evaluate", "--ensemble", w.ensemble, "--data", w.data, "--out", w.out("e.json"),
                                    "--limit", 0, "--quiet"], "'--limit'"),
    ("study-samplers", lambda w: ["study", "samplers", "--ensemble", w.ensemble, "--data", w.data, "--out", w.out(),
                                  "--settings", "foo"], "--settings: expected sampler:steps"),
    ("study-filter", lambda w: ["study", "filter", "--ensemble", w.ensemble, "--data", w.data, "--out", w.out(),
                                "--drops", "1.5"], "--drops: need fractions in [0, 1)"),
    ("study-labelled-count", lambda w: ["study", "labelled-count", "--data", w.data, "--out", w.out(), "--counts", "0"],
     "--counts: need counts in [1, 4]"),
    ("study-suggest", lambda w: ["study", "suggest", "--data", w.data, "--out", w.out(), "--start", 0],
     "--start/--add"),
    ("study-mining", lambda w: ["study", "mining", "--ensemble", w.ensemble, "--data", w.data, "--out", w.out(),
                                "--prefer-classes", "nope"], "--prefer-classes: unknown class 'nope'"),
    ("study-segmenter", lambda w: ["study", "segmenter", "--run", w.case, "--data", w.data, "--out", w.out()],
     "is not a finalized run"),
    ("study-trajectory", lambda w: ["study", "trajectory", "--data", w.data, "--out", w.out(), "--sampler", "foo"],
     "--sampler: unknown sampler 'foo'"),
    ("study-real-images", lambda w: ["study", "real-images", "--ensemble", w.ensemble, "--data", w.data, "--images",
                                     w.case / "none", "--out", w.out()], "none: directory not found"),
    ("study-features", lambda w: ["study", "features", "--data", w.data, "--out", w.out(), "--blocks", "x"],
     "--blocks: expected comma-separated integers"),
    ("study-synthetic-size", lambda w: ["study", "synthetic-size", "--ensemble", w.ensemble, "--data", w.data, "--out",
                                        w.out(), "--sizes", "0"], "--sizes: need increasing pair counts"),
    ("study-main", lambda w: ["study", "main", "--data", w.data, "--out", w.out(), "--rows", "nope"], "--rows"),
]
CASES += WRITABLE_OUTPUTS
NEEDS_MONKEYPATCH = [
    ("out-read-only", _read_only, "not writable (permissions or a read-only file system)"),
    ("disk-full-before", _disk_full, "MiB free"),
    ("enospc-on-write", _enospc_on_write, "cannot write here (No space left on device)"),
]


def _check(world, case_id, build, needle, *build_args):
    world.case = world.root / "cases" / case_id
    world.case.mkdir(parents=True)
    Evil.marker = world.case / "code-ran"
    argv = build(world, *build_args)
    before = tree_state(world.root)
    result = run(*argv)
    one_line_error(result, needle)
    assert tree_state(world.root) == before, "a refused command changed the disk"
    assert not Evil.marker.exists(), "unpickling ran code"


@pytest.mark.parametrize("case_id,build,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(world, case_id, build, needle):
    _check(world, case_id, build, needle)


@pytest.mark.parametrize("case_id,build,needle", NEEDS_MONKEYPATCH, ids=[c[0] for c in NEEDS_MONKEYPATCH])
def test_unwritable_output_is_one_line_and_changes_nothing(world, case_id, build, needle, monkeypatch):
    _check(world, case_id, build, needle, monkeypatch)


def test_the_matrix_is_large():
    assert len(CASES) + len(NEEDS_MONKEYPATCH) >= 40


@pytest.mark.parametrize("mode", ["L", "P", "LA", "RGBA", "1", "I;16", "CMYK-jpeg"])
def test_odd_image_modes_read_as_rgb(tmp_path, mode):
    from datasetddpm.data.images import read_image
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    if mode == "I;16":
        grey = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
        Image.fromarray(grey).save(tmp_path / "x.png")
        out = read_image(tmp_path / "x.png")
        expect = np.rint(grey / 257.0).astype(np.uint8)  # scaled to 8 bits, not clipped
        assert (out == expect[..., None]).all()
        return
    if mode == "CMYK-jpeg":
        im.convert("CMYK").save(tmp_path / "x.jpg")
        path = tmp_path / "x.jpg"
    else:
        im.convert(mode).save(tmp_path / "x.png")
        path = tmp_path / "x.png"
    out = read_image(path)
    with Image.open(path) as again:
        expect = np.asarray(again.convert("RGB"))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8 and (out == expect).all()
    assert len(np.unique(out)) > 1
