"""Installable where users live: pyproject.toml declares ranges (every imported package, torch not pinned),
constraints.txt pins the tested versions inside them, the wheel carries the shipped assets and its
installed `datasetddpm` runs on the embedded default from a fresh virtual environment, and pip keeps a
user's own torch in the declared range instead of replacing it. Everything offline."""

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# import name -> distribution, where they differ
DISTRIBUTIONS = {"PIL": "pillow", "yaml": "pyyaml", "segmentation_models_pytorch": "segmentation-models-pytorch",
                 "huggingface_hub": "huggingface-hub"}


def _declared() -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


def _pinned() -> dict[str, Version]:
    lines = [line.split("#")[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    return {canonicalize_name(name): Version(v) for name, v in (line.split("==") for line in lines if line)}


def _third_party_imports() -> dict[str, str]:
    """Top-level modules the package imports (at any depth of a file) that are neither stdlib nor its own."""
    found = {}
    for path in sorted((ROOT / "datasetddpm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in (n.split(".")[0] for n in names):
                if top not in sys.stdlib_module_names and top != "datasetddpm":
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    declared = _declared()
    imports = _third_party_imports()
    assert {"torch", "click", "typer", "diffusers"} <= set(imports)
    missing = {m: f for m, f in imports.items() if canonicalize_name(DISTRIBUTIONS.get(m, m)) not in declared}
    assert not missing, f"imported but not in pyproject.toml [project] dependencies: {missing}"


def test_ranges_admit_the_tested_versions_and_an_older_torch():
    declared, pinned = _declared(), _pinned()
    for name, req in declared.items():
        assert name in pinned, f"constraints.txt has no exact version of {name}"
        assert req.specifier.contains(pinned[name], prereleases=True), \
            f"constraints.txt pins {name}=={pinned[name]}, outside the declared {req}"
    torch = declared["torch"].specifier
    assert not any(s.operator in ("==", "===") for s in torch), "torch must be a range, not a pin"
    assert torch.contains("2.13.0") and torch.contains("2.14.1") and not torch.contains("2.12.0")
    for extra in PYPROJECT["project"]["optional-dependencies"]["test"]:
        req = Requirement(extra)
        assert canonicalize_name(req.name) in pinned and req.specifier.contains(pinned[canonicalize_name(req.name)])


def test_make_install_uses_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q -c constraints.txt -e '.[test]'" in makefile
    assert "$(VENV)/.installed: pyproject.toml constraints.txt" in makefile


def _build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the source (a build in the tree would leave build/ behind, shared by every run)."""
    src = tmp / "src"
    shutil.copytree(ROOT / "datasetddpm", src / "datasetddpm", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                        "-w", str(tmp / "wheel"), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = (tmp / "wheel").glob("datasetddpm-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return _build_wheel(tmp_path_factory.mktemp("wheel"))


def _venv_with_this_environments_packages(where: Path, hidden: tuple[str, ...] = ()) -> Path:
    """A fresh virtual environment that sees this environment's packages (the constraints' versions) without
    installing them: a .pth file names a folder of links to site-packages (less the `hidden` entries and the
    editable install of the source tree). Its own site-packages comes first on sys.path."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    ours = Path(sysconfig.get_paths()["purelib"])
    view = where / "outside-packages"
    view.mkdir()
    for entry in ours.iterdir():
        name = entry.name.lower()
        if name.startswith(("datasetddpm", "__editable__", "_datasetddpm", *hidden)) or name.endswith(".pth"):
            continue
        (view / entry.name).symlink_to(entry)
    (site / "outside_packages.pth").write_text(f"{view}\n")
    return python


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(python), *args], capture_output=True, text=True)


def test_the_wheel_installs_into_a_fresh_venv_and_runs_on_the_embedded_default(tmp_path, wheel):
    with zipfile.ZipFile(wheel) as z:
        inside = set(z.namelist())
    assets = [p.relative_to(ROOT).as_posix() for p in (ROOT / "datasetddpm" / "assets").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts]
    assert assets and not [a for a in assets if a not in inside], "shipped assets missing from the wheel"
    python = _venv_with_this_environments_packages(tmp_path / "venv")
    r = _pip(python, "install", "-q", "--no-deps", "--no-index", str(wheel))
    assert r.returncode == 0, r.stderr[-3000:]
    cwd = tmp_path / "elsewhere"  # not the source tree, and no PYTHONPATH: only the installed package
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(NO_ALBUMENTATIONS_UPDATE="1", OMP_WAIT_POLICY="PASSIVE")
    where = subprocess.run([str(python), "-c", "import datasetddpm; print(datasetddpm.__file__)"], cwd=cwd, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "venv"), where
    r = subprocess.run([str(tmp_path / "venv" / "bin" / "datasetddpm"), "sample", "--out", "run", "--n", "2",
                        "--sampling-steps", "2", "--batch-size", "2", "--shard-size", "2", "--device", "cpu",
                        "--threads", "1", "--quiet"], cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((cwd / "run" / "manifest.json").read_text())["config"]["model"] == "embedded"
    samples = json.loads((cwd / "run" / "shards" / "00000.json").read_text())["samples"]
    images = sorted((cwd / "run" / "shards" / "00000" / "images").glob("*.png"))
    assert [s["image_sha256"] for s in samples] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in images]
    with Image.open(images[0]) as im:
        assert im.size == (32, 32)  # the embedded DDPM's samples


def test_the_wheels_assets_are_the_source_trees_bytes(wheel):
    """What the installed toolkit loads as `embedded` is what the repository ships, byte for byte."""
    with zipfile.ZipFile(wheel) as z:
        for path in (ROOT / "datasetddpm" / "assets").rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                assert z.read(path.relative_to(ROOT).as_posix()) == path.read_bytes(), path


TORCH_2_13 = Path("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")


@pytest.mark.slow
@pytest.mark.skipif(not TORCH_2_13.is_file() or sys.version_info[:2] != (3, 11),
                    reason="needs the local torch 2.13.0 CPU wheel (Python 3.11) to stay offline")
def test_pip_keeps_a_users_torch_in_the_declared_range(tmp_path, wheel):
    """An environment with torch 2.13.0 (and the torchvision release that pairs with it, which requires
    torch==2.13.0): resolving `pip install datasetddpm` with every dependency offline plans to install the
    toolkit alone, keeping that torch. A pin outside 2.13 would need another torch, which pip cannot find
    offline, and the resolution fails."""
    python = _venv_with_this_environments_packages(tmp_path / "venv", hidden=("torch", "functorch", "torchgen",
                                                                                "nvidia", "triton", "cuda"))
    r = _pip(python, "install", "-q", "--no-deps", "--no-index", str(TORCH_2_13))
    assert r.returncode == 0, r.stderr[-3000:]
    site = next((tmp_path / "venv" / "lib").glob("python*/site-packages"))
    stub = site / "torchvision-0.28.0.dist-info"  # metadata only: this test resolves, it imports nothing
    stub.mkdir()
    (stub / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.28.0\n"
                                   "Requires-Dist: numpy\nRequires-Dist: torch==2.13.0\nRequires-Dist: pillow\n")
    (stub / "INSTALLER").write_text("pip\n")
    (stub / "RECORD").write_text("")
    report = tmp_path / "report.json"
    r = _pip(python, "install", "--dry-run", "--no-index", "--find-links", str(wheel.parent), "--report", str(report),
             "datasetddpm")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    planned = {item["metadata"]["name"]: item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    assert planned == {"datasetddpm": "0.1.0"}, planned
    torch = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('torch'))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert torch == "2.13.0+cpu"
