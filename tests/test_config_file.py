"""`--config run.yaml`: flags > file > defaults; the resolved arguments saved in the output folder."""

import json

import yaml

from conftest import one_line_error, run, tree_state


def _manifest(run_dir):
    return json.loads((run_dir / "manifest.json").read_text())["config"]


def test_flags_override_the_file_which_overrides_the_defaults(tiny_model_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "sample": {"n": 4, "sampling-steps": 2, "batch_size": 2, "shard-size": 2, "quiet": True, "threads": 1},
        "finalize": {"drop-fraction": 0.5},
    }))
    out = tmp_path / "run"
    r = run("sample", "--config", config, "--out", out, "--model", tiny_model_dir, "--n", 6)
    assert r.exit_code == 0, r.output
    cfg = _manifest(out)
    assert (cfg["n"], cfg["sampling_steps"], cfg["batch_size"], cfg["shard_size"]) == (6, 2, 2, 2)
    assert cfg["sampler"] == "ddim"  # neither flag nor file: the default
    saved = yaml.safe_load((out / "sample.args.yaml").read_text())
    assert saved["command"] == "sample" and saved["args"]["n"] == 6 and saved["args"]["batch_size"] == 2
    assert saved["args"]["config"] == str(config)
    shown = run("show-config", out)
    assert shown.exit_code == 0 and "sample.args.yaml" in shown.output and "sampling_steps: 2" in shown.output


def test_a_saved_args_file_repeats_the_command(tiny_model_dir, tmp_path):
    first = tmp_path / "a"
    assert run("sample", "--out", first, "--model", tiny_model_dir, "--n", 2, "--sampling-steps", 2,
               "--batch-size", 2, "--shard-size", 2, "--quiet", "--seed", 5).exit_code == 0
    second = tmp_path / "b"
    r = run("sample", "--config", first / "sample.args.yaml", "--out", second)
    assert r.exit_code == 0, r.output
    assert _manifest(second) == _manifest(first)
    assert (second / "shards" / "00000.json").read_bytes() == (first / "shards" / "00000.json").read_bytes()


def test_bad_config_files_are_one_line_and_write_nothing(tiny_model_dir, tmp_path):
    cases = {"unknown.yaml": ("bogus: 3\n", "'bogus' is not an option of `datasetddpm sample`"),
             "broken.yaml": ("n: [1, 2\n", "broken.yaml: not valid YAML"),
             "list.yaml": ("- 1\n- 2\n", "must map option names to values, got a list"),
             "python.yaml": ("n: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
             "other.yaml": (yaml.safe_dump({"command": "finalize", "args": {"out": "x"}}),
                            "holds the arguments of `datasetddpm finalize`")}
    for name, (text, needle) in cases.items():
        (tmp_path / name).write_text(text)
    before = tree_state(tmp_path)
    for name, (_, needle) in cases.items():
        one_line_error(run("sample", "--config", tmp_path / name, "--out", tmp_path / "run", "--model", tiny_model_dir),
                       needle)
    one_line_error(run("sample", "--config", tmp_path / "none.yaml", "--out", tmp_path / "run"), "config file not found")
    assert tree_state(tmp_path) == before


def test_deeplab_preset_settings_under_flags():
    from datasetddpm.workflows import deeplab_config
    cfg = deeplab_config("embedded", epochs=3)
    assert (cfg.encoder, cfg.input_scale, cfg.epochs, cfg.batch_size) == ("resnet18", 2, 3, 8)
    paper = deeplab_config("bedroom_28")
    assert (paper.encoder, paper.epochs, paper.batch_size, paper.lr) == ("resnet101", 20, 8, 1e-3)
    plain = deeplab_config(None, encoder="resnet34")
    assert (plain.encoder, plain.input_scale, plain.epochs) == ("resnet34", 1, 20)
