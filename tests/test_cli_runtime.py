"""One runtime block for every command (cli/runtime.py), and the studies' segmenter defaults are the
recipe their committed results were measured with."""

import ast
import json
import shlex
from pathlib import Path

import pytest
import torch
import typer

from datasetddpm.cli.main import get_app
from datasetddpm.cli.runtime import runtime
from datasetddpm.errors import OptionError

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "datasetddpm" / "cli"
# Only these modules may touch the process settings: the runtime block and the helpers it calls.
RUNTIME_MODULES = {"runtime.py", "options.py"}
RUNTIME_CALLS = {"resolve_device", "set_threads", "check_threads", "set_precision"}


def hand_made_runtime(source: str) -> list[str]:
    """Where `source` resolves the device, pins threads, sets the precision or reads --quiet itself."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in RUNTIME_CALLS:
                found.append(f"line {node.lineno}: calls {name}")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not) and \
                isinstance(node.operand, ast.Name) and node.operand.id == "quiet":
            found.append(f"line {node.lineno}: computes `not quiet`")
        elif isinstance(node, ast.ImportFrom) and any(a.name in RUNTIME_CALLS for a in node.names):
            found.append(f"line {node.lineno}: imports {', '.join(a.name for a in node.names)}")
    return found


def test_the_checker_finds_a_hand_made_runtime_block():
    body = ("def cmd(device, threads, quiet):\n"
            "    from ..devices import resolve_device\n"
            "    opt.set_threads(threads)\n"
            "    run(device=resolve_device(device), progress=not quiet)\n")
    assert hand_made_runtime(body) == ["line 2: imports resolve_device", "line 3: calls set_threads",
                                       "line 4: calls resolve_device", "line 4: computes `not quiet`"]
    assert hand_made_runtime("def cmd(rt):\n    run(device=rt.device, progress=rt.progress)\n") == []


def test_no_command_repeats_the_runtime_block():
    offenders = {path.name: found for path in sorted(CLI.glob("*.py")) if path.name not in RUNTIME_MODULES
                 for found in [hand_made_runtime(path.read_text())] if found}
    assert offenders == {}, f"use cli.runtime.runtime(...) instead: {offenders}"


def test_runtime_applies_the_process_settings_once():
    before = torch.get_num_threads()
    try:
        rt = runtime(device="cpu", threads=1, quiet=True)
        assert torch.get_num_threads() == 1 and rt.threads == 1
        assert rt.device == torch.device("cpu") and rt.progress is False and runtime().progress is True
        torch.set_num_threads(before)
        workers = runtime(threads=1, pin_threads=False)  # checked, and left to the workers to pin
        assert workers.threads == 1 and torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
    with pytest.raises(OptionError, match="--threads"):
        runtime(threads=0)


def test_runtime_resolves_the_device_when_used_and_sets_the_precision():
    from datasetddpm.generators import loading
    lazy = runtime(device="tpu")  # a command that never computes here is not refused for it
    with pytest.raises(OptionError, match="--device"):
        lazy.device
    try:
        runtime(device="cpu", precision="bf16")
        assert loading._process_precision[0] == "bf16"
        runtime(device="cpu", precision="auto")
        assert loading._process_precision[0] == "fp32"  # auto on a CPU
        with pytest.raises(OptionError, match="--precision"):
            runtime(device="cpu", precision="fp64")
    finally:
        loading.set_process_precision("fp32")


def _study_commands() -> dict:
    group = typer.main.get_command(get_app())
    return dict(group.commands["study"].commands)


def _parsed(command_line: str):
    """The `datasetddpm study NAME ...` line parsed by today's CLI (nothing runs): its options' values and
    the names given on the line."""
    words = shlex.split(command_line)
    assert words[:2] == ["datasetddpm", "study"], command_line
    command = _study_commands()[words[2]]
    ctx = command.make_context(words[2], words[3:])
    # By name: typer >= 0.24 carries its own copy of click and of its ParameterSource.
    given = {name for name in ctx.params if ctx.get_parameter_source(name).name == "COMMANDLINE"}
    return command, ctx.params, given


# The segmenter options of the studies and the recipe field each one is.
RECIPE_OPTIONS = {"arch": "arch", "real_fraction": "real_fraction", "deeplab_epochs": "epochs", "epochs": "epochs",
                  "input_scale": "input_scale"}


def test_study_defaults_are_the_recipe_of_the_committed_studies():
    """Every documented study's headline result (docs/studies/<study>/study.json; subfolders hold variants
    such as the main study's 24-epoch run, and older results) was run with segmenter flags that are now
    the defaults: dropping them would change nothing."""
    from datasetddpm.cli.study import RECIPE
    passed: dict[str, set] = {}
    for path in sorted(ROOT.glob("docs/studies/*/study.json")):
        command, params, given = _parsed(json.loads(path.read_text())["command"])
        for name in given & set(RECIPE_OPTIONS):
            passed.setdefault(RECIPE_OPTIONS[name], set()).add(params[name])
            default = next(p.default for p in command.params if p.name == name)
            assert params[name] == default, f"{path}: --{name.replace('_', '-')} {params[name]}, default {default}"
    assert passed == {"arch": {RECIPE.arch}, "real_fraction": {RECIPE.real_fraction}, "epochs": {RECIPE.epochs}}
    # One recipe: every study with a segmenter option defaults to the same value of it.
    defaults = {}
    for name, command in _study_commands().items():
        for p in command.params:
            if p.name in RECIPE_OPTIONS:
                defaults.setdefault(RECIPE_OPTIONS[p.name], set()).add(p.default)
    assert defaults == {"arch": {"unet"}, "real_fraction": {0.1}, "epochs": {12}, "input_scale": {2}}
    assert (RECIPE.arch, RECIPE.real_fraction, RECIPE.epochs, RECIPE.input_scale) == ("unet", 0.1, 12, 2)


def test_the_committed_study_commands_still_give_the_settings_they_recorded():
    """A rerun of a committed study's command resumes its folder: today's CLI parses it to the segmenter
    settings the result recorded (the folder's study_config.json holds the same values)."""
    checked = 0
    for path in sorted(ROOT.glob("docs/studies/**/study.json")):
        report = json.loads(path.read_text())
        command, params, _ = _parsed(report["command"])
        recorded = dict(report.get("segmenter") or {})
        if "real_fraction" in report:  # the main study records it beside the segmenter
            recorded.setdefault("real_fraction", report["real_fraction"])
        for field, value in recorded.items():
            option = "deeplab_epochs" if field == "epochs" else field
            if option in params:
                assert params[option] == value, f"{path}: {option} parses to {params[option]}, recorded {value}"
                checked += 1
        if command.name == "segmenter":  # each setting's row: the baseline's epochs (twice for -long)
            for name, row in report["rows"].items():
                assert row["epochs"] == params["epochs"] * (2 if name.endswith("-long") else 1), (path, name)
                if "real_fraction" in row:
                    assert row["real_fraction"] == params["real_fraction"], (path, name)
                checked += 1
    assert checked >= 80  # 17 results with a segmenter record (65 settings), 6 segmenter studies (15 rows)


def test_a_study_takes_its_runtime_from_a_config_file_and_records_it(tmp_path, monkeypatch):
    """The options the study decorator adds are options like any other: `--config` gives them, the study
    runs with them, and `<out>/<command>.args.yaml` records them in their place."""
    import yaml
    from conftest import run
    from datasetddpm.studies import labelled_count
    seen = {}

    def study(out, data, cfg, *, device, progress):  # stands in for the measurement
        seen.update(device=device, progress=progress, threads=torch.get_num_threads())
        Path(out).mkdir(parents=True)
        (Path(out) / "study.md").write_text("| the table |\n")
    monkeypatch.setattr(labelled_count, "run_labelled_count_study", study)
    config = tmp_path / "run.yaml"
    config.write_text("labelled-count: {threads: 1, quiet: true, counts: [5, 10]}\n")
    before = torch.get_num_threads()
    try:
        r = run("study", "labelled-count", "--data", tmp_path, "--out", tmp_path / "out", "--config", config)
    finally:
        torch.set_num_threads(before)
    assert r.exit_code == 0, r.output
    assert "| the table |" in r.output and seen == {"device": torch.device("cpu"), "progress": False, "threads": 1}
    saved = yaml.safe_load((tmp_path / "out" / "labelled-count.args.yaml").read_text())
    assert list(saved["args"])[-4:] == ["threads", "device", "quiet", "config"]
    assert (saved["args"]["threads"], saved["args"]["device"], saved["args"]["quiet"]) == (1, "cpu", True)
    assert saved["args"]["counts"] == "5,10"
