"""Users' existing runs keep resuming: a run made by the code of commit cb6ed85, before the issue-39 refactors
(tests/fixtures/old_run_v1; its make.sh says how), is finished by today's commands, and the result must be
byte-identical to the run the old code finished (the sha256s in expected.json) and to a fresh run of today's code
with the same arguments.

The fixture holds, on the embedded default model with a 2-image, 2-member ensemble:
- run/: `sample` SIGKILLed in the middle of its second shard (shard 0 committed and labelled), and its lock
  (stale_lock.json: the lock is git-ignored, so the test puts it back as the lock of a process that is gone);
- labelled/: the same run uninterrupted, sampled and labelled, `finalize` still to do.

Stated exceptions to "byte-identical":
- the folder the fixture was made in ("made_in", recorded in the labels manifest, the dataset card and the args
  files) reads as this test's folder, where the fixture is copied (each run under the name the old finished run
  had, which the pictures' titles show);
- against the old code's sha256s, the run's pictures (preview.png, uncertainty.png, samples_preview.png: drawn
  anew from the data by every `sample` / `finalize`, so a changed title is no broken run) and the
  `<command>.args.yaml` records (a command's options, which grow when an option is added) are left out; both
  are compared with a fresh run of today's code;
- against a fresh run of today's code, manifest.json may record config fields added since the old run was made:
  its kind, its hash (the resume key) and every field the old manifest has must be equal.

The old sha256s were made on the development machine (x86_64 CPU, --threads 1, the versions in constraints.txt).
A CPU whose float kernels round otherwise may sample other bytes: then the comparisons with expected.json fail
while the fresh-run comparison passes, which points at the machine, not at the code.
"""

import hashlib
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run

FIXTURE = Path(__file__).parent / "fixtures" / "old_run_v1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
MADE_IN = EXPECTED["made_in"]
TEXT_SUFFIXES = {".json", ".jsonl", ".yaml"}
RUN_NAME = "finished"  # the old finished run's folder name, which the pictures' titles show: every copy has it


def _sample_args(out: Path, ensemble: Path) -> list:
    """make.sh's `sample` arguments, exactly."""
    return ["sample", "--out", out, "--n", 8, "--sampling-steps", 2, "--batch-size", 2, "--shard-size", 4,
            "--ensemble", ensemble, "--threads", 1, "--quiet"]


def _relocate(root: Path, old: str, new: str) -> None:
    """The fixture's folders as if moved from `old` to `new` together: the paths recorded in its text files."""
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in TEXT_SUFFIXES:
            path.write_text(path.read_text().replace(old, new))


def _dead_pid() -> int:
    """The pid of a process that has exited (a killed command's lock names one)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _sha256s(root: Path, work: Path) -> dict:
    """Every file's sha256, with this test's folder read back as the fixture's `made_in` (the stated exception)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix in TEXT_SUFFIXES:
                data = data.replace(str(work).encode(), MADE_IN.encode())
            out[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def _data_files(hashes: dict) -> dict:
    """Leaves out the command records and the pictures drawn at the run's top level (the stated exception)."""
    return {name: digest for name, digest in hashes.items()
            if not name.endswith(".args.yaml") and not ("/" not in name and name.endswith(".png"))}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The fixture copied to a fresh folder; the killed run resumed and both old runs finalized by today's code,
    and a fresh run of today's code with the same arguments."""
    work = tmp_path_factory.mktemp("old_run")
    shutil.copytree(FIXTURE / "ensemble", work / "ensemble")
    runs = {case: work / case / RUN_NAME for case in ("killed", "labelled", "fresh")}
    shutil.copytree(FIXTURE / "run", runs["killed"])
    shutil.copytree(FIXTURE / "labelled", runs["labelled"])
    for case in ("killed", "labelled"):
        _relocate(runs[case], MADE_IN, str(work))
    lock = json.loads((FIXTURE / "stale_lock.json").read_text())
    (runs["killed"] / ".datasetddpm.lock").write_text(json.dumps({**lock, "pid": _dead_pid(),
                                                                   "host": socket.gethostname()}))
    results = {"resume": run(*_sample_args(runs["killed"], work / "ensemble"))}
    results["finalize-killed"] = run("finalize", "--out", runs["killed"])
    results["finalize-labelled"] = run("finalize", "--out", runs["labelled"])
    results["fresh"] = run(*_sample_args(runs["fresh"], work / "ensemble"))
    results["finalize-fresh"] = run("finalize", "--out", runs["fresh"])
    for name, result in results.items():
        assert result.exit_code == 0, f"{name}: {result.output}"
    return {"work": work, **runs}


def test_the_fixture_holds_a_killed_and_a_labelled_run():
    """The killed run stopped inside shard 1: shard 0 committed and labelled, nothing of shard 1, no index."""
    shards = FIXTURE / "run" / "shards"
    assert (shards / "00000.json").is_file() and (shards / "00000.labels.json").is_file()
    assert not (shards / "00001.json").exists() and not (FIXTURE / "run" / "index.jsonl").exists()
    assert not (FIXTURE / "labelled" / "index.jsonl").exists()
    assert sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()) < 400_000  # small enough to commit
    assert len([k for k in EXPECTED["sha256"] if k.endswith(".png") and "/masks/" in k]) == 8


def test_a_killed_old_run_resumes_to_the_old_codes_bytes(world):
    resumed = _data_files(_sha256s(world["killed"], world["work"]))
    expected = _data_files(EXPECTED["sha256"])
    assert sorted(resumed) == sorted(expected)
    assert [name for name in expected if resumed[name] != expected[name]] == []


def test_an_old_labelled_run_finalizes_to_the_old_codes_bytes(world):
    finalized = _data_files(_sha256s(world["labelled"], world["work"]))
    expected = _data_files(EXPECTED["sha256"])
    assert sorted(finalized) == sorted(expected)
    assert [name for name in expected if finalized[name] != expected[name]] == []


def test_the_resumed_old_run_equals_a_fresh_run_of_todays_code(world):
    """Every file, the pictures and args records included (both runs were finished by today's commands with the
    same options); manifest.json as the module's docstring says."""
    resumed, fresh = _sha256s(world["killed"], world["work"]), _sha256s(world["fresh"], world["work"])
    assert sorted(resumed) == sorted(fresh)
    assert [name for name in fresh if resumed[name] != fresh[name] and name != "manifest.json"] == []
    old, new = (json.loads((world[case] / "manifest.json").read_text()) for case in ("killed", "fresh"))
    assert (old["kind"], old["hash"]) == (new["kind"], new["hash"])
    assert old["config"] == {key: new["config"][key] for key in old["config"]}


def test_finalize_reads_the_classes_from_the_ensembles_json_alone(tmp_path):
    """`finalize` needs the labeller's classes, not its weights: with ensemble.safetensors gone it writes the
    same bytes."""
    shutil.copytree(FIXTURE / "ensemble", tmp_path / "ensemble", ignore=shutil.ignore_patterns("*.safetensors"))
    labelled = tmp_path / "labelled" / RUN_NAME
    shutil.copytree(FIXTURE / "labelled", labelled)
    _relocate(labelled, MADE_IN, str(tmp_path))
    result = run("finalize", "--out", labelled)
    assert result.exit_code == 0, result.output
    finalized = _data_files(_sha256s(labelled, tmp_path))
    assert finalized == _data_files(EXPECTED["sha256"])
