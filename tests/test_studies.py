import json

import numpy as np
from typer.testing import CliRunner

from datasetddpm.cli.main import get_app
from datasetddpm.studies.samplers import SamplerSetting, SamplerStudyConfig, run_sampler_study
from datasetddpm.studies.stats import miou_of, paired_bootstrap

runner = CliRunner()
app = get_app()


def _confusions(rng, n, k=3, noise=0.0):
    cms = np.zeros((n, k, k), dtype=np.int64)
    for i in range(n):
        cms[i] = np.diag(rng.integers(50, 100, k))
        cms[i, 0, 1] = int(noise * 100)
    return cms


def test_paired_bootstrap_identical_sets_give_zero_and_a_real_shift_is_significant():
    rng = np.random.default_rng(0)
    a = _confusions(rng, 40, noise=0.5)
    same = paired_bootstrap(a, a.copy(), resamples=200)
    assert same["difference"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0 and not same["significant"]
    better = a.copy()
    better[:, 0, 1] = 0  # remove every error of class 0 -> higher IoU of classes 0 and 1
    r = paired_bootstrap(a, better, resamples=200)
    assert r["difference"] == miou_of(better) - miou_of(a) > 0
    assert r["significant"] and r["ci_low"] <= r["difference"] <= r["ci_high"]


def test_sampler_study_end_to_end_and_resume(tiny_model_dir, tiny_ensemble, tiny_dataset, tmp_path):
    cfg = SamplerStudyConfig(settings=(SamplerSetting("ddpm", 6), SamplerSetting("ddim", 3)), model=str(tiny_model_dir),
                             n=12, batch_size=4, shard_size=4, deeplab_epochs=1, input_scale=1, timing_samples=2,
                             bootstrap=100)
    report = run_sampler_study(tmp_path / "study", tiny_ensemble, tiny_dataset, cfg, progress=False)
    rows = report["rows"]
    assert [rows[n]["unet_evaluations"] for n in ("ddpm-6", "ddim-3")] == [6, 3]
    assert rows["ddim-3"]["unet_evaluation_ratio"] == 2.0
    assert rows["ddpm-6"]["pairs"] == 11  # 12 samples, the most uncertain 10 % (1) dropped
    assert report["test_images"] == 4
    diff = rows["ddim-3"]["deeplab_miou_vs_baseline"]
    assert abs(diff["difference"] - (rows["ddim-3"]["deeplab_miou"] - rows["ddpm-6"]["deeplab_miou"])) < 1e-12
    assert "label_miou_vs_baseline" not in rows["ddpm-6"]
    # Rerun: every stage is skipped and the report is the same.
    again = run_sampler_study(tmp_path / "study", tiny_ensemble, tiny_dataset, cfg, progress=False)
    assert json.dumps(again, sort_keys=True) == json.dumps(report, sort_keys=True)


def test_study_rejects_a_malformed_setting(tiny_dataset, tmp_path):
    r = runner.invoke(app, ["study", "samplers", "--ensemble", str(tmp_path), "--data", str(tiny_dataset),
                            "--settings", "ddim50"])
    assert r.exit_code == 2 and "expected sampler:steps" in r.output
