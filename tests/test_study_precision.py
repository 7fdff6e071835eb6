"""`datasetddpm study precision`: reduced-precision autocast against fp32, and the rule that recommends one."""

import json

import numpy as np
import pytest

from conftest import assert_study_outputs, one_line_error, run, tree_state
from datasetddpm.studies.precision import AcceptanceRule, recommend


def test_precision_study_tiny(tiny_ensemble, tiny_dataset, tmp_path):
    out = tmp_path / "study"
    r = run("study", "precision", "--ensemble", tiny_ensemble, "--data", tiny_dataset, "--out", out,
            "--precisions", "bf16", "--quick", "--threads", 1)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "study.json").read_text())
    assert list(report["precisions"]) == ["fp32", "bf16"] and list(report["versus_fp32"]) == ["bf16"]
    row = report["versus_fp32"]["bf16"]
    # The numbers are the arrays' own: agreement and pixel difference recomputed from the kept arrays.
    with np.load(out / "fp32" / "arrays.npz") as a, np.load(out / "bf16" / "arrays.npz") as b:
        assert a["samples"].shape == (2, 32, 32, 3) and a["test_labels"].shape == (4, 32, 32)
        assert row["test"]["pixel_agreement"] == pytest.approx(np.mean(a["test_labels"] == b["test_labels"]))
        diff = np.abs(a["samples"].astype(int) - b["samples"].astype(int)).mean()
        assert row["samples"]["mean_abs_pixel_difference"] == pytest.approx(diff)
        assert 0 < diff < 20  # bf16 changes the samples a little, not wholesale
    d = row["test"]["miou_difference"]
    assert d["ci_low"] <= d["difference"] <= d["ci_high"] and d["items"] == 4
    assert d["difference"] == pytest.approx(report["precisions"]["bf16"]["test_miou"]
                                            - report["precisions"]["fp32"]["test_miou"])
    assert report["recommended"] == recommend(report["versus_fp32"], AcceptanceRule(), ("bf16",))
    assert row["verdict"] == AcceptanceRule().judge(row)
    assert report["command"] == "" and report["machine"] and report["date"]  # provenance (in-process: no argv)
    assert_study_outputs(out, "precision")
    # A rerun reuses every kept array (same bytes) and writes the same table.
    before = tree_state(out / "bf16")
    assert run("study", "precision", "--ensemble", tiny_ensemble, "--data", tiny_dataset, "--out", out,
               "--precisions", "bf16", "--quick", "--threads", 1).exit_code == 0
    assert tree_state(out / "bf16") == before


def _row(agreement: float, test: tuple[float, float], samples: tuple[float, float]) -> dict:
    def interval(lo, hi):
        return {"difference": (lo + hi) / 2, "ci_low": lo, "ci_high": hi}
    return {"test": {"pixel_agreement": agreement, "miou_difference": interval(*test)},
            "samples": {"label_miou_difference": interval(*samples)}}


def test_acceptance_rule_known_answers():
    rule = AcceptanceRule(min_agreement=0.99, max_loss=0.005)
    fine = _row(0.995, (-0.004, 0.002), (-0.003, 0.004))
    assert rule.judge(fine) == {"acceptable": True, "checks": {"test label agreement": True,
                                                               "test mIoU difference": True,
                                                               "sample label mIoU difference": True}}
    low_agreement = _row(0.985, (-0.001, 0.001), (-0.001, 0.001))
    assert rule.judge(low_agreement)["checks"]["test label agreement"] is False
    wide = _row(0.999, (-0.02, 0.01), (-0.001, 0.001))  # holds 0 but a 2-point loss is not ruled out
    assert rule.judge(wide)["checks"] == {"test label agreement": True, "test mIoU difference": False,
                                          "sample label mIoU difference": True}
    samples_worse = _row(0.999, (-0.001, 0.001), (-0.009, -0.006))
    assert not rule.judge(samples_worse)["acceptable"]
    assert rule.judge(_row(0.99, (-0.005, 0.0), (0.001, 0.01)))["acceptable"]  # the thresholds themselves pass
    rows = {"bf16": low_agreement, "fp16": fine}
    assert recommend(rows, rule, ("bf16", "fp16")) == "fp16"
    assert recommend({"bf16": fine, "fp16": fine}, rule, ("bf16", "fp16")) == "bf16"  # the order given decides
    assert recommend({"bf16": wide}, rule, ("bf16",)) == "fp32"
    assert "99 %" in rule.text() and "0.5 points" in rule.text()


def test_precision_study_bad_inputs_write_nothing(tiny_ensemble, tiny_dataset, tmp_path):
    out = tmp_path / "study"
    one_line_error(run("study", "precision", "--ensemble", tiny_ensemble, "--data", tiny_dataset, "--out", out,
                       "--precisions", "fp64", "--quick"), "--precisions", "fp64", "bf16, fp16")
    one_line_error(run("study", "precision", "--ensemble", tiny_ensemble, "--data", tiny_dataset, "--out", out,
                       "--precisions", "tf32", "--quick"), "--precisions", "tf32 is fp32 on a CPU")
    one_line_error(run("study", "precision", "--ensemble", tiny_ensemble, "--data", tmp_path / "nowhere",
                       "--out", out, "--quick"), "nowhere")
    assert not out.exists()


def test_an_ensemble_precision_cannot_change_or_the_oracle_cannot_check_is_refused(tiny_model_dir, tiny_dataset,
                                                                                    tmp_path):
    from datasetddpm.ensemble.model import EnsembleConfig, PixelEnsemble, save_ensemble
    colour, five = tmp_path / "colour", tmp_path / "five"
    save_ensemble(colour, PixelEnsemble(EnsembleConfig(in_dim=27, num_classes=7, members=2,
                                                       features={"kind": "colour"})))
    save_ensemble(five, PixelEnsemble(EnsembleConfig(in_dim=24, num_classes=5, members=2, model=str(tiny_model_dir),
                                                     features={"blocks": [1, 4], "steps": [50], "noise_seed": 0})))
    out = tmp_path / "study"
    one_line_error(run("study", "precision", "--ensemble", colour, "--data", tiny_dataset, "--out", out, "--quick"),
                   "--ensemble", "colour ensemble")
    one_line_error(run("study", "precision", "--ensemble", five, "--data", tiny_dataset, "--out", out, "--quick"),
                   "--ensemble", "5 classes", "7 classes, 32 px")
    assert not out.exists()
