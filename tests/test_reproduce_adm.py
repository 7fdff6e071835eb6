"""From a bare machine to the bedroom_28 table: `download` a (tiny, random-weight) ADM checkpoint and a
dataset archive in the reference layout from a local server, then `reproduce bedroom_28` runs its whole
plan with the paper preset's blocks {5,6,7,8,12} and steps {50,150,250} at 256 px. Slow (minutes)."""

import io
import json
import tarfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run
from datasetddpm.downloads import registry
from datasetddpm.generators.adm import ADMFlags
from test_download import serving

pytestmark = pytest.mark.slow

# The paper's 256-px ADM layout (six levels, 18 decoder blocks) at a width a CPU test can afford.
TINY_256 = ADMFlags(image_size=256, num_channels=32, num_res_blocks=2, channel_mult="1,1,2,2,4,4",
                    attention_resolutions="16", num_head_channels=32, learn_sigma=True, resblock_updown=True,
                    use_scale_shift_norm=True)


def _archive(tmp_path) -> bytes:
    """bedroom_28 in the reference layout: real/train, real/test and ddpm/ (29 ids, 0 = unlabelled)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "src" / "bedroom_28"
    for sub, count in (("real/train", 2), ("real/test", 2), ("ddpm", 2)):
        folder = root / sub
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(folder / f"{i}.png")
            mask = np.repeat(np.repeat(rng.integers(0, 29, (8, 8)), 32, 0), 32, 1).astype(np.uint8)
            np.save(folder / f"{i}.npy", mask)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root, arcname="bedroom_28")
    return buf.getvalue()


def test_download_then_reproduce_bedroom_28_runs_its_whole_plan(tmp_path, monkeypatch):
    from test_adm import build_adm
    monkeypatch.chdir(tmp_path)
    flags = tmp_path / "tiny_256.json"
    flags.write_text(json.dumps(TINY_256.to_dict()))
    monkeypatch.setitem(registry.REGISTRY, "lsun_bedroom", replace(registry.REGISTRY["lsun_bedroom"], adm_flags=str(flags)))
    checkpoint = io.BytesIO()
    torch.save(build_adm(TINY_256).state_dict(), checkpoint)
    with serving({"/lsun_bedroom.pt": checkpoint.getvalue(), "/datasets.tar.gz": _archive(tmp_path)}) as s:
        for name, path in (("lsun_bedroom", "/lsun_bedroom.pt"), ("datasets", "/datasets.tar.gz")):
            r = run("download", name, "--url", s.url(path), "--quiet")
            assert r.exit_code == 0, r.output
    assert (tmp_path / "checkpoints" / "lsun_bedroom" / "config.json").is_file()
    r = run("reproduce", "bedroom_28", "--seeds", "0,1,2", "--n", 9, "--sampler", "ddim", "--sampling-steps", 2,
            "--batch-size", 3, "--members", 2, "--ensemble-steps", 5, "--deeplab-epochs", 1, "--threads", 2)
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "runs" / "bedroom_28" / "results.json").read_text())
    table = results["table"]
    assert table["DDPM"]["paper"] == [49.4, 1.9] and len(table["DDPM"]["runs"]) == 3
    assert table["DatasetDDPM"]["paper"] == [47.9, 2.9] and table["DatasetDDPM"]["this run"] is not None
    assert table["DatasetGAN"] == {"paper": [31.3, 2.3], "this run": None, "runs": []}
    ensemble = json.loads((tmp_path / "runs" / "bedroom_28" / "direct" / "seed_0" / "ensemble" / "ensemble.json").read_text())
    assert ensemble["ensemble"]["features"]["blocks"] == [5, 6, 7, 8, 12]
    assert ensemble["ensemble"]["features"]["steps"] == [50, 150, 250]
    md = (tmp_path / "runs" / "bedroom_28" / "results.md").read_text()
    assert "| DatasetDDPM | 47.9 ± 2.9 |" in md and "| DatasetGAN | 31.3 ± 2.3 | – |" in md
