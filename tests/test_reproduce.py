"""`datasetddpm reproduce PRESET`: the whole experiment of a preset as one resumable command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import one_line_error, run, tree_state
from datasetddpm.presets import PAPER_PRESETS
from datasetddpm.reproduce import PAPER_TABLE2

TINY = ("--n", 10, "--sampler", "ddim", "--sampling-steps", 2, "--batch-size", 5, "--members", 2,
        "--ensemble-steps", 10, "--deeplab-epochs", 1, "--threads", 1)
STAGES = ["direct seed 0: train-ensemble", "direct seed 0: evaluate", "direct seed 1: train-ensemble",
          "direct seed 1: evaluate", "direct seed 2: train-ensemble", "direct seed 2: evaluate",
          "DatasetDDPM: annotate", "DatasetDDPM: labeller", "DatasetDDPM: sample", "DatasetDDPM: label",
          "DatasetDDPM: finalize", "DatasetDDPM: train-deeplab", "compare"]


def test_paper_numbers_are_the_presets_table_2_numbers():
    for p in PAPER_PRESETS:
        ddpm, dataset_ddpm = p.paper_miou
        assert PAPER_TABLE2[p.name]["DDPM"][0] == ddpm
        assert PAPER_TABLE2[p.name].get("DatasetDDPM", (None,))[0] == dataset_ddpm


def test_embedded_runs_end_to_end_to_a_table_and_a_rerun_skips_every_stage(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    r = run("reproduce", "embedded", "--data", tiny_dataset, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    progress = json.loads((out / "progress.json").read_text())
    assert list(progress) == STAGES
    results = json.loads((out / "results.json").read_text())
    direct = [100 * json.loads((out / "direct" / f"seed_{s}" / "evaluate.json").read_text())["miou"] for s in range(3)]
    ddpm = results["table"]["DDPM"]
    assert ddpm["runs"] == [round(m, 2) for m in direct]
    assert ddpm["this run"] == [round(float(np.mean(direct)), 2), round(float(np.std(direct)), 2)]
    compared = json.loads((out / "compare" / "compare.json").read_text())["methods"]
    assert results["table"]["DatasetDDPM"]["this run"][0] == round(100 * compared["DatasetDDPM"]["miou"], 2)
    assert results["table"]["DatasetDDPM"]["paper"] is None and "DatasetGAN" not in results["table"]
    assert {"torch", "cpu", "gpus", "python", "date"} <= set(results["environment"])
    kept = json.loads((out / "datasetddpm" / "generated" / "dataset_card.json").read_text())["counts"]["kept"]
    assert kept == 9 and (out / "datasetddpm" / "deeplab" / "best" / "config.json").is_file()
    assert len(list((out / "datasetddpm" / "annotated").glob("*.npy"))) == 4  # as many as real/train
    md = (out / "results.md").read_text()
    assert f"| DDPM (direct mode) | – | {ddpm['this run'][0]:.1f} ± {ddpm['this run'][1]:.1f} |" in md
    before = tree_state(out / "direct") | tree_state(out / "datasetddpm")
    r = run("reproduce", "embedded", "--data", tiny_dataset, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    assert r.output.count("done, skipped") == len(STAGES)
    assert tree_state(out / "direct") | tree_state(out / "datasetddpm") == before
    assert json.loads((out / "results.json").read_text())["table"] == results["table"]


def test_dry_run_prints_every_stage_and_writes_nothing(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data_before = tree_state(tiny_dataset)
    r = run("reproduce", "embedded", "--data", tiny_dataset, "--out", tmp_path / "out", "--dry-run", *TINY)
    assert r.exit_code == 0, r.output
    for stage in STAGES:
        assert f"  {stage} " in r.output
    assert "total to do:" in r.output and "GiB of disk" in r.output
    assert tree_state(tmp_path) == {} and tree_state(tiny_dataset) == data_before


def test_refusals_are_one_line_and_write_nothing(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(run("reproduce", "bedroom_28"), "--model", "datasetddpm download lsun_bedroom")
    one_line_error(run("reproduce", "bedroom_28", "--model", "embedded", "--data", tiny_dataset),
                   str(Path(tiny_dataset) / "ddpm"), "annotated generated samples")
    one_line_error(run("reproduce", "embedded", "--seeds", "0,0"), "--seeds", "distinct")
    one_line_error(run("reproduce", "embedded", "--sampler", "euler"), "--sampler", "euler")
    one_line_error(run("reproduce", "embedded", "--n", 8), "--n", "keep 7 pairs", "at least 9")  # DeepLab batch 8
    one_line_error(run("reproduce", "lsun_dog"), "--preset", "lsun_dog")
    one_line_error(run("reproduce", "embedded", "--stylegan2", "embedded-stylegan2", "--stylegan2-data", "nowhere"),
                   "nowhere", "--stylegan2-data")
    assert tree_state(tmp_path) == {}


def test_a_run_of_other_options_in_the_same_folder_is_refused(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "reproduce.json").write_text(json.dumps({"config": {"preset": "embedded", "n": 99}}))
    before = tree_state(out)
    one_line_error(run("reproduce", "embedded", "--data", tiny_dataset, "--out", out, *TINY), "--out", "other")
    assert tree_state(out) == before


def _cli(args, env_extra=None, cwd=None):
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_WAIT_POLICY": "PASSIVE", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "datasetddpm", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_a_sigkilled_run_resumes_to_the_same_table(tiny_dataset, tmp_path):
    args = ("reproduce", "embedded", "--data", tiny_dataset, *TINY)
    log = tmp_path / "writes.log"
    done = _cli((*args, "--out", tmp_path / "whole"), {"DATASETDDPM_WRITES_LOG": str(log)})
    assert done.returncode == 0, done.stderr
    writes = len(log.read_text().splitlines())
    for at in (writes // 3, 2 * writes // 3):
        out = tmp_path / f"killed_{at}"
        killed = _cli((*args, "--out", out), {"DATASETDDPM_KILL_AT_WRITE": str(at)})
        assert killed.returncode != 0 and not (out / "results.json").exists()
        resumed = _cli((*args, "--out", out))
        assert resumed.returncode == 0, resumed.stderr
        assert "done, skipped" in resumed.stdout
        table = json.loads((out / "results.json").read_text())["table"]
        assert table == json.loads((tmp_path / "whole" / "results.json").read_text())["table"]
